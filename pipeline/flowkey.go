package pipeline

import (
	"encoding/binary"

	"github.com/spaolacci/murmur3"
)

// FlowKey is the 5-tuple of a client-to-VIP flow, addresses in host order.
type FlowKey struct {
	Src, Dst         uint32
	SrcPort, DstPort uint16
	Proto            uint8
}

// Hash returns the murmur3 (x86, 32-bit) hash of k under seed. The byte
// layout hashed is src, dst (big-endian), src port, dst port, protocol and
// three zero bytes. It MUST NOT change: appliances behind the same ECMP group
// must pick the same backend for a flow.
func (k *FlowKey) Hash(seed uint32) uint32 {
	var b [16]byte
	binary.BigEndian.PutUint32(b[0:], k.Src)
	binary.BigEndian.PutUint32(b[4:], k.Dst)
	binary.BigEndian.PutUint16(b[8:], k.SrcPort)
	binary.BigEndian.PutUint16(b[10:], k.DstPort)
	b[12] = k.Proto
	return murmur3.Sum32WithSeed(b[:], seed)
}
