package pipeline

import "encoding/binary"

// FlowKey is the 5-tuple of a client-to-VIP flow, addresses in host order.
type FlowKey struct {
	Src, Dst         uint32
	SrcPort, DstPort uint16
	Proto            uint8
}

// Bytes returns the 16 bytes Hash hashes: src, dst (big-endian), src port,
// dst port, protocol and three zero bytes.
func (k *FlowKey) Bytes() (b [16]byte) {
	binary.BigEndian.PutUint32(b[0:], k.Src)
	binary.BigEndian.PutUint32(b[4:], k.Dst)
	binary.BigEndian.PutUint16(b[8:], k.SrcPort)
	binary.BigEndian.PutUint16(b[10:], k.DstPort)
	b[12] = k.Proto
	return b
}

// Hash returns MurmurHash3 x86_32 (the same value as
// murmur3.Sum32WithSeed(k.Bytes(), seed), pinned by a test) computed on the
// four 32-bit blocks directly, without a byte slice. It MUST NOT change:
// appliances behind the same ECMP group must pick the same backend for a
// flow. (The murmur3 package itself trips the race detector's pointer
// checks, spaolacci/murmur3#34, and reads blocks in host byte order.)
func (k *FlowKey) Hash(seed uint32) uint32 { return keyHash(k, seed) }

// FlowKey6 is the 5-tuple of a client-to-VIP IPv6 flow, addresses as
// they are on the wire.
type FlowKey6 struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
}

// Bytes returns the 40 bytes Hash hashes: src, dst, src port, dst port
// (big-endian), protocol and three zero bytes: an IPv4 key's layout with
// 128-bit addresses.
func (k *FlowKey6) Bytes() (b [40]byte) {
	copy(b[0:], k.Src[:])
	copy(b[16:], k.Dst[:])
	binary.BigEndian.PutUint16(b[32:], k.SrcPort)
	binary.BigEndian.PutUint16(b[34:], k.DstPort)
	b[36] = k.Proto
	return b
}

// Hash returns MurmurHash3 x86_32 of k.Bytes() with seed (pinned by a test
// to murmur3.Sum32WithSeed), the IPv6 counterpart of FlowKey.Hash: Maglev
// places IPv6 flows by it. It MUST NOT change, for the same reason.
func (k *FlowKey6) Hash(seed uint32) uint32 { return keyHash6(k, seed) }

// keyHash6 is FlowKey6.Hash: the ten 32-bit blocks of FlowKey6.Bytes read
// little-endian, as MurmurHash3 reads them, without the byte array.
func keyHash6(k *FlowKey6, seed uint32) uint32 {
	le := binary.LittleEndian
	h := seed
	for i := 0; i < 16; i += 4 {
		h = murmurStep(h, le.Uint32(k.Src[i:]))
	}
	for i := 0; i < 16; i += 4 {
		h = murmurStep(h, le.Uint32(k.Dst[i:]))
	}
	h = murmurStep(h, uint32(k.SrcPort>>8)|uint32(k.SrcPort&0xff)<<8|uint32(k.DstPort>>8)<<16|uint32(k.DstPort&0xff)<<24)
	h = murmurStep(h, uint32(k.Proto))
	return murmurFinal(h, 40)
}
