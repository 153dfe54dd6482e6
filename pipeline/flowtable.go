package pipeline

import (
	"time"
	"unsafe"
)

// FlowTimeouts are the idle timeouts of flow table entries. DSR sees only
// the client half of a TCP connection, so "established" means the client
// has sent a segment without SYN.
type FlowTimeouts struct {
	TCPSyn         time.Duration // only SYNs seen
	TCPEstablished time.Duration
	TCPClosing     time.Duration // after FIN or RST from the client
	UDP            time.Duration
}

// DefaultFlowTimeouts are the timeouts used when config leaves them out.
var DefaultFlowTimeouts = FlowTimeouts{
	TCPSyn:         5 * time.Second,
	TCPEstablished: 300 * time.Second,
	TCPClosing:     10 * time.Second,
	UDP:            30 * time.Second,
}

// DefaultFlowCapacity is the flow table size per worker.
const DefaultFlowCapacity = 1 << 20

const flowWays = 4

const (
	flowStateSyn uint8 = iota + 1
	flowStateEstablished
	flowStateClosing
	flowStateUDP
)

// flowEntry is one 32-byte slot; a bucket of four is two cache lines. The
// flow is two words so that a lookup compares two words per way: addrs is
// src << 32 | dst and tag is flowTag(ports, proto), which has bit 0 set,
// so that tag == 0 marks a free slot and a free slot never matches.
type flowEntry struct {
	addrs   uint64
	tag     uint64
	service uint32 // Service.ID
	backend uint32 // backend IP, host order
	expires uint32 // milliseconds on the table clock
	state   uint8
	// bhint is a hint: the index in Service.Backends of backend, valid
	// only if that slot still holds backend's IP (backendIndex checks), so
	// that a hit needs no search whatever snapshot is current.
	bhint uint8
	// b6: the backend is an IPv6 one and backend holds its Backend.ID
	// (stable while the backend exists, never reused), not an address.
	b6 bool
	// synRetx counts the SYNs the client sent again while the entry was
	// in the SYN state (no ACK yet), saturating at 255: a backend that
	// does not answer shows here first (passive failure detection).
	synRetx uint8
}

// flowAddrs and flowTag are the two words of a flow (addresses and ports in
// host order, ports = src port << 16 | dst port).
func flowAddrs(src, dst uint32) uint64         { return uint64(src)<<32 | uint64(dst) }
func flowTag(ports uint32, proto uint8) uint64 { return uint64(ports)<<32 | uint64(proto)<<8 | 1 }

func (k *FlowKey) words() (addrs, tag uint64) {
	return flowAddrs(k.Src, k.Dst), flowTag(uint32(k.SrcPort)<<16|uint32(k.DstPort), k.Proto)
}

func (e *flowEntry) used() bool   { return e.tag != 0 }
func (e *flowEntry) proto() uint8 { return uint8(e.tag >> 8) }

// lastUsed is when e was last refreshed: every refresh sets expires to
// that time plus the timeout of the state it leaves e in (NewFlowTable
// makes tmo[0], the state of a new entry, the SYN timeout).
func (ft *FlowTable) lastUsed(e *flowEntry) uint32 { return e.expires - ft.tmo[e.state] }

// backendIndex returns the index in svc.Backends of e's backend, or -1,
// trying the hint before searching (and refreshing the hint).
func (e *flowEntry) backendIndex(svc *Service) int {
	if i := int(e.bhint); i < len(svc.Backends) {
		if b := &svc.Backends[i]; !e.b6 && b.IP == e.backend || e.b6 && b.ID == e.backend {
			return i
		}
	}
	var i int
	if e.b6 {
		i = svc.backendIndexByID(e.backend)
	} else {
		i = svc.BackendIndex(e.backend)
	}
	if i >= 0 {
		e.setBackendHint(i)
	}
	return i
}

// setBackend makes backend bi of svc e's backend.
func (e *flowEntry) setBackend(svc *Service, bi int) {
	b := &svc.Backends[bi]
	e.service, e.backend, e.b6 = svc.ID, b.IP, b.Addr.Is6()
	if e.b6 {
		e.backend = b.ID
	}
	e.setBackendHint(bi)
}

// setBackendHint records i as the index of e's backend (indexes that do
// not fit are searched for every time).
func (e *flowEntry) setBackendHint(i int) {
	if i < 256 {
		e.bhint = uint8(i)
	}
}

// FlowTable maps flows to the backend they were given. It belongs to one
// worker: no locks, no allocation after NewFlowTable. It is set-associative
// (4 ways per bucket, the bucket chosen by the flow hash); when a bucket is
// full the least recently used of its evictable entries (SYN-only or
// closing TCP flows) is evicted, and when none is, nothing: established
// flows keep their entries under a flood.
type FlowTable struct {
	buckets [][flowWays]flowEntry
	// buckets6 holds the IPv6 flows (flowtable6.go), nil until enable6.
	buckets6 [][flowWays]flowEntry6
	mask     uint32
	tmo      [5]uint32 // milliseconds, indexed by state
	step     [5]uint32 // touchStep of tmo, indexed by state

	// Entries is the number of live (possibly expired, not yet reused)
	// entries; Hits, Misses, Evictions and Expired count lookups and
	// replacements; Full counts the inserts that found no way to take
	// (victim).
	Entries, Hits, Misses, Evictions, Expired, Full uint64
}

// NewFlowTable returns a table holding at least capacity flows (rounded up
// to a power of two multiple of the bucket size).
func NewFlowTable(capacity int, t FlowTimeouts) *FlowTable {
	if capacity < flowWays {
		capacity = flowWays
	}
	nb := 1
	for nb*flowWays < capacity {
		nb <<= 1
	}
	ft := isolated[FlowTable]() // its counters are written per burst
	ft.mask = uint32(nb - 1)
	ft.buckets = allocBuckets[[flowWays]flowEntry](nb, ft)
	ms := func(d time.Duration) uint32 { return uint32(d / time.Millisecond) }
	ft.tmo[0] = ms(t.TCPSyn) // a new entry, until Touch
	ft.tmo[flowStateSyn] = ms(t.TCPSyn)
	ft.tmo[flowStateEstablished] = ms(t.TCPEstablished)
	ft.tmo[flowStateClosing] = ms(t.TCPClosing)
	ft.tmo[flowStateUDP] = ms(t.UDP)
	for i, t := range ft.tmo {
		ft.step[i] = touchStep(t)
	}
	return ft
}

// slotHash returns the hash that places a flow, given as its two words
// (flowAddrs, flowTag), in a flow table: the hash argument of Lookup and
// Insert. It is local to one worker's table, unlike the flow hash
// (FlowKey.Hash) that Maglev uses and that every appliance must agree on,
// so it is free to be cheap: the two words combined by one multiply, then
// MurmurHash3's fmix64 (about a dozen cycles where the 32-bit murmur3 of
// the flow takes some thirty on its dependency chain). A hit, the common
// case, needs no other hash.
//
// It is not free of outside users, though: its low 20 bits are also the
// flow label of an IPv6 envelope (rewrite, fillOuter6), which the replay
// golden files pin (TestReplayGolden6). A cheaper slot hash MUST leave the
// label as it is (compute it apart, for IPv6 envelopes only), and must
// spread correlated flows (client address and port counting together,
// TestSynRetransmitsCounted) as well as this one: a single 64x64->128-bit
// multiply of the two words (wyhash's mum) did not.
func slotHash(addrs, tag uint64, seed uint32) uint32 {
	return slotHashKeyed(addrs, tag, slotKey(seed))
}

// slotKey is the seed as slotHash mixes it into the tag: per table, so
// that the per-packet loops compute it once (slotHashKeyed).
func slotKey(seed uint32) uint64 { return uint64(seed) << 40 }

// slotHashKeyed is slotHash given slotKey(seed).
func slotHashKeyed(addrs, tag, key uint64) uint32 {
	x := addrs ^ (tag^key)*0x9e3779b97f4a7c15
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return uint32(x)
}

// slotHashKey is slotHash of k.
func slotHashKey(k *FlowKey, seed uint32) uint32 {
	a, t := k.words()
	return slotHash(a, t, seed)
}

// bucket returns the bucket of hash.
func (ft *FlowTable) bucket(hash uint32) *[flowWays]flowEntry {
	return &ft.buckets[hash&ft.mask]
}

// bucketFast is bucket without the bounds check, for the per-packet loops
// (classify, fastPath): len(ft.buckets) is mask+1 (NewFlowTable), so
// hash&mask is always an index of the table.
func (ft *FlowTable) bucketFast(hash uint32) *[flowWays]flowEntry {
	return (*[flowWays]flowEntry)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(ft.buckets)),
		uintptr(hash&ft.mask)*unsafe.Sizeof([flowWays]flowEntry{})))
}

// load reads the bucket of hash, both of its cache lines, and returns a
// value derived from them; see Forwarder.classify.
func (ft *FlowTable) load(hash uint32) uint32 {
	b := &ft.buckets[hash&ft.mask]
	return b[0].expires + b[flowWays-1].expires
}

// Capacity returns how many flows the table can hold.
func (ft *FlowTable) Capacity() int { return len(ft.buckets) * flowWays }

// find returns the first entry of hash's bucket that holds the flow
// (addrs, tag), live or expired, or nil; it changes nothing. Lookup does
// the same walk.
func (ft *FlowTable) find(addrs, tag uint64, hash uint32) *flowEntry {
	b := &ft.buckets[hash&ft.mask]
	for i := range b {
		if e := &b[i]; e.addrs == addrs && e.tag == tag {
			return e
		}
	}
	return nil
}

// Lookup returns the live entry for k, or nil. It counts a hit or a miss.
func (ft *FlowTable) Lookup(k *FlowKey, hash uint32, now uint32) *flowEntry {
	addrs, tag := k.words()
	if e := ft.find(addrs, tag, hash); e != nil {
		if int32(e.expires-now) > 0 {
			ft.Hits++
			return e
		}
		ft.Expired++
		ft.Entries--
		e.tag = 0
	}
	ft.Misses++
	return nil
}

// Insert records k as going to backend of service and returns the entry,
// or nil when the bucket has no way a new flow may take (victim): the
// caller then forwards the flow without an entry.
func (ft *FlowTable) Insert(k *FlowKey, hash uint32, now uint32, service, backend uint32) *flowEntry {
	b := &ft.buckets[hash&ft.mask]
	v := ft.victim(&[flowWays]*flowEntry{&b[0], &b[1], &b[2], &b[3]}, now)
	if v < 0 {
		return nil
	}
	e := &b[v]
	addrs, tag := k.words()
	*e = flowEntry{addrs: addrs, tag: tag, service: service, backend: backend, expires: now + ft.tmo[0]}
	ft.Entries++
	return e
}

// victim returns the way of a bucket (its entries, of either family) a
// new entry takes: a free or expired one, else the least recently used
// of the evictable ones (evictable), which it evicts; -1 when every way
// holds a live flow that MUST NOT be evicted (counted as Full). It counts
// what it replaces.
func (ft *FlowTable) victim(ways *[flowWays]*flowEntry, now uint32) int {
	for i, e := range ways {
		if !e.used() {
			return i
		}
		if int32(e.expires-now) <= 0 {
			ft.Expired++
			ft.Entries--
			e.tag = 0
			return i
		}
	}
	v := -1
	for i, e := range ways {
		if evictable(e) && (v < 0 || int32(ft.lastUsed(e)-ft.lastUsed(ways[v])) < 0) {
			v = i
		}
	}
	if v < 0 {
		ft.Full++
		return -1
	}
	ft.Evictions++
	ft.Entries--
	return v
}

// evictable reports whether a live entry may make room for a new flow:
// only one whose client has not shown it is a flow, a TCP flow that saw
// nothing but SYNs (a SYN flood's entries are all of this kind) or one
// the client is closing. An established TCP flow or a UDP flow MUST NOT
// be evicted for a new one: it would lose its backend if the backend set
// changed meanwhile. A new flow that finds only such ways goes without
// an entry (Forwarder: flows_stateless, flow_table_full).
func evictable(e *flowEntry) bool {
	return e.state != flowStateEstablished && e.state != flowStateUDP
}

// Touch refreshes e for a packet with the given TCP flags (ignored for UDP).
//
// It writes e only when the state changes or the expiry moves by at least
// the state's touch step (touchStep): a flow's packets within a step of
// each other leave its cache line clean, so that at large flow counts a
// hit costs no write-back of the line to memory. An idle entry therefore
// expires between its timeout minus one step and its timeout after the
// flow's last packet.
func (ft *FlowTable) Touch(e *flowEntry, tcpFlags uint8, now uint32) {
	s := e.state
	switch {
	case uint8(e.tag>>8) != ProtoTCP: // e.proto(), spelt out for the inliner's budget
		s = flowStateUDP
	case tcpFlags&(TCPFlagFIN|TCPFlagRST) != 0:
		s = flowStateClosing
	case tcpFlags&TCPFlagSYN == 0:
		if s != flowStateClosing {
			s = flowStateEstablished
		}
	case s == 0:
		s = flowStateSyn
	}
	if exp := now + ft.tmo[s]; s != e.state || exp-e.expires >= ft.step[s] {
		e.state, e.expires = s, exp
	}
}

// touchStep is the step of Touch for a timeout of tmo milliseconds: a
// sixteenth of it, at most a second (0, writing every time, below 16 ms).
func touchStep(tmo uint32) uint32 { return min(tmo>>4, 1000) }
