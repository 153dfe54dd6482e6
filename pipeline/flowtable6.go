package pipeline

import "encoding/binary"

// The IPv6 flows of a FlowTable.
//
// IPv6 flows live in buckets of their own, allocated when the first
// snapshot with an IPv6 service is used (FlowTable.enable6), as many as
// the IPv4 buckets: a table of capacity C holds C IPv4 flows in 32 bytes
// each and C IPv6 flows in 64 bytes each (one cache line; a bucket of four
// ways is four lines). IPv4 entries keep their compact layout. Both share
// the timeouts, the state machine (Touch) and the counters.

// flowEntry6 is one 64-byte slot of the IPv6 buckets: a flowEntry, whose
// tag, service, backend, expiry, state and hints mean what they do for
// IPv4 (addrs is unused), and the two addresses.
type flowEntry6 struct {
	flowEntry
	src, dst [16]byte
}

// flowTag6 is the tag word of k (flowTag).
func (k *FlowKey6) tag() uint64 {
	return flowTag(uint32(k.SrcPort)<<16|uint32(k.DstPort), k.Proto)
}

// slotHash6 places IPv6 flow k in its worker's table: the addresses folded
// into one word by multiplies, then slotHash. Local to the worker, like
// slotHash.
func slotHash6(k *FlowKey6, seed uint32) uint32 {
	return slotHash(addrWord6(&k.Src, &k.Dst), k.tag(), seed)
}

// addrWord6 is the word slotHash6 folds an IPv6 flow's addresses into,
// from the key or straight from a packet's header (classify).
func addrWord6(src, dst *[16]byte) uint64 {
	le := binary.LittleEndian
	a := le.Uint64(src[0:]) ^ le.Uint64(src[8:])*0x9e3779b97f4a7c15
	return a ^ (le.Uint64(dst[0:])^le.Uint64(dst[8:])*0xc2b2ae3d27d4eb4f)*0x165667b19e3779f9
}

// enable6 allocates the IPv6 buckets, as many as the IPv4 ones, once.
func (ft *FlowTable) enable6() {
	if ft.buckets6 == nil {
		ft.buckets6 = allocBuckets[[flowWays]flowEntry6](len(ft.buckets), ft)
	}
}

// Lookup6 returns the live entry for IPv6 flow k, or nil (also when the
// table has no IPv6 buckets). It counts a hit or a miss.
func (ft *FlowTable) Lookup6(k *FlowKey6, hash uint32, now uint32) *flowEntry {
	if ft.buckets6 != nil {
		tag := k.tag()
		b := &ft.buckets6[hash&ft.mask]
		for i := range b {
			e := &b[i]
			if e.tag != tag || e.src != k.Src || e.dst != k.Dst {
				continue
			}
			if int32(e.expires-now) > 0 {
				ft.Hits++
				return &e.flowEntry
			}
			ft.Expired++
			ft.Entries--
			e.tag = 0
			break
		}
	}
	ft.Misses++
	return nil
}

// Insert6 records IPv6 flow k as going to service (its backend set by the
// caller) and returns the entry, replacing as Insert does, or nil as
// Insert does. The table must have IPv6 buckets.
func (ft *FlowTable) Insert6(k *FlowKey6, hash uint32, now uint32, service uint32) *flowEntry {
	b := &ft.buckets6[hash&ft.mask]
	v := ft.victim(&[flowWays]*flowEntry{&b[0].flowEntry, &b[1].flowEntry, &b[2].flowEntry, &b[3].flowEntry}, now)
	if v < 0 {
		return nil
	}
	e := &b[v]
	*e = flowEntry6{flowEntry: flowEntry{tag: k.tag(), service: service, expires: now + ft.tmo[0]}, src: k.Src, dst: k.Dst}
	ft.Entries++
	return &e.flowEntry
}
