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
