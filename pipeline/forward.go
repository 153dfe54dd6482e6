package pipeline

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Forwarder is the per-packet function with the state it needs: one
// worker's flow table and counters. It is not safe for concurrent use; each
// worker owns one.
type Forwarder struct {
	Flows *FlowTable
	C     Counters
	// Seed seeds the flow hash; every appliance of an ECMP group MUST use
	// the same one.
	Seed uint32
	// Now is the table clock in milliseconds, set by the worker once per
	// burst.
	Now uint32

	ipID uint16
	snap *Snapshot // the snapshot the counters were sized for
	// newFlows meters the flows given entries against
	// Snapshot.NewFlowsPerSecond; svcFlows, indexed by Service.ID, meter
	// each service's new flows against its limit.
	newFlows tokenBucket
	svcFlows []tokenBucket
	// icmpErrs meters the ICMP errors fragNeeded and packetTooBig write
	// against Snapshot.ICMPErrorsPerSecond (icmplimit.go).
	icmpErrs errorLimit
	// sink keeps the loads of classify (without asmPrefetch) alive.
	sink uint32

	// alloc, when set (Worker.SetAllocator), supplies the buffers TCP
	// super-frames are cut into; without it they are dropped. seg
	// describes the super-frame process last left to the worker.
	alloc packet.Allocator
	seg   superframe
}

// NewForwarder returns a forwarder with a flow table of the given capacity.
func NewForwarder(flowCapacity int, t FlowTimeouts, seed uint32) *Forwarder {
	return &Forwarder{Flows: NewFlowTable(flowCapacity, t), Seed: seed}
}

// Use prepares the forwarder for snapshot s (sizing counters). Call it
// whenever a new snapshot is loaded, before Process.
func (f *Forwarder) Use(s *Snapshot) {
	if s != f.snap {
		f.C.grow(s.MaxServiceID, s.MaxBackendID)
		if int(s.MaxServiceID) >= len(f.svcFlows) {
			b := isolatedSlice[tokenBucket](int(s.MaxServiceID) + 1 + 16)
			copy(b, f.svcFlows)
			f.svcFlows = b
		}
		if s.has6 {
			f.Flows.enable6()
		}
		f.snap = s
	}
}

// Process decides what to do with p, received on NIC port rxPort, and
// rewrites it in place for VerdictTx. It returns the verdict and, for
// VerdictTx, the index of the egress port. It counts everything except the
// final transmission (the worker counts TxPackets and DropTxFull).
//
// p.Off and p.Len may change (headers prepended, padding trimmed). A TCP
// super-frame, which only a Worker's loop cuts into segments, is dropped
// here as gso_superframe.
func (f *Forwarder) Process(s *Snapshot, p *packet.Packet, rxPort int) (Verdict, int) {
	v, out := f.processHinted(s, p, rxPort, 0, false)
	if v == verdictSegment {
		v, out, _ = f.dropSuperframe(rxPort)
		f.C.Drops[DropSuperframe]++
	}
	return v, out
}

// processHinted is Process given, when hinted, the slot hash classify
// computed for p (see classify for when it is valid).
func (f *Forwarder) processHinted(s *Snapshot, p *packet.Packet, rxPort int, hash uint32, hinted bool) (Verdict, int) {
	f.C.RxPackets++
	f.C.RxBytes += uint64(p.Len)
	v, out, r := f.process(s, p, rxPort, hash, hinted)
	if v == VerdictDrop {
		f.C.Drops[r]++
	} else if v == VerdictKernel {
		f.C.ToKernel++
	}
	return v, out
}

// fastPkt is what classify learns about one packet of a burst: its flow
// and slot hash, valid when the packet's bit is set in classify's mask.
type fastPkt struct {
	addrs, tag uint64 // the flow (flowAddrs, flowTag)
	hash       uint32 // slot hash (slotHash)
}

// fastFrame is the shortest frame classify hashes and fastPath forwards:
// Ethernet, IPv4 and a TCP header (every Ethernet frame is at least 60
// bytes).
const fastFrame = EthernetMinSize + IPv4MinSize + TCPMinSize

// maxFastHeader is the most fastPath writes in front of a received frame:
// the IPv4 and GRE headers of a GRE envelope (an L2 rewrite writes over
// the Ethernet header, IPIP 20 bytes in front of it).
const maxFastHeader = IPv4MinSize + greSize

// classify is the first pass over a burst, one poll before the burst is
// processed. For every untagged IPv4 frame without options carrying TCP or
// UDP, of at least fastFrame bytes behind at least maxFastHeader bytes of
// headroom (what fastPath may take; Process hashes any other packet
// itself), it records the flow and the flow table slot hash (slotHash) that
// process would compute (same bytes, same function), sets bit i of the
// returned mask and issues a prefetch of the packet's flow table bucket:
// the buckets of a burst are spread over a large table, so each is a cache
// miss, and asking for all of them a poll before the lookups lets the
// misses overlap instead of queueing one per packet. It reads only the
// packets and changes nothing; nothing it records depends on the snapshot.
func (f *Forwarder) classify(pkts []packet.Packet, fp *[packet.BurstSize]fastPkt) uint32 {
	pkts = pkts[:min(len(pkts), packet.BurstSize)]
	found := hashFlows(pkts, fp, slotKey(f.Seed))
	mask := uint32(found)
	// A bucket is two cache lines, ways 0-1 and 2-3. While the table
	// holds fewer flows than half its buckets, entries sit almost always
	// in the first line (a bucket with three or more: 1.4 % at half a
	// flow per bucket, 8 % at one): only it is prefetched, which halves
	// the misses in flight. From half on, both (1M flows in the 4M-entry
	// table is just under one per bucket: a tenth of its lookups missed
	// in the second line).
	ft := f.Flows
	both := ft.Entries >= uint64(len(ft.buckets))/2
	if mask != 0 {
		if asmPrefetch {
			prefetchBuckets(fp, mask, unsafe.Pointer(unsafe.SliceData(ft.buckets)), ft.mask, both)
		} else {
			var acc uint32
			for m := mask; m != 0; m &= m - 1 {
				acc += ft.load(fp[bits.TrailingZeros32(m)].hash)
			}
			f.sink += acc
		}
	}
	if v6 := uint32(found >> 32); v6 != 0 && ft.buckets6 != nil {
		var addrs [packet.BurstSize]uintptr
		na := 0
		for ; v6 != 0; v6 &= v6 - 1 {
			p := &pkts[bits.TrailingZeros32(v6)]
			// In bounds: hashFlows set the packet's bit only for
			// maxFastHeader <= Off and Off+Len <= len(Buf).
			frame := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(p.Buf)), p.Off)), p.Len)
			if a, ok := f.bucket6Addr(frame); ok {
				addrs[na&(packet.BurstSize-1)] = a
				na++
			}
		}
		if na > 0 {
			prefetchLines(&addrs[0], na)
		}
	}
	return mask
}

// hashFlows is classify's loop over the packets (the first 32): it records
// the flow and slot hash of each untagged IPv4 frame without options
// carrying TCP or UDP, of at least fastFrame bytes behind at least
// maxFastHeader of headroom, in fp and sets bit i of the result for it,
// and bit 32+i for such an untagged IPv6 frame long enough for its ports.
// A function of its own, with one word of results, so that the loop holds
// few values: each one the registers cannot hold costs a store and a load
// per packet.
func hashFlows(pkts []packet.Packet, fp *[packet.BurstSize]fastPkt, key uint64) uint64 {
	var found uint64
	pkts = pkts[:min(len(pkts), packet.BurstSize)]
	// From the last packet down: the loop then compares i with 0, not
	// with len(pkts), which frees a register.
	for i := len(pkts) - 1; i >= 0; i-- {
		p := &pkts[i]
		off, n := p.Off, p.Len
		// Only what fastPath may take is hashed: at least fastFrame
		// bytes, and the headroom of the largest envelope (maxFastHeader)
		// in front, so that fastPath needs no test of its own. Process
		// hashes the rest itself (a frame from a kernel may be shorter
		// than Ethernet's 60 bytes); they only miss the prefetch.
		if off < maxFastHeader || n < fastFrame || off+n > len(p.Buf) {
			continue
		}
		// In bounds by the check above: Buf[off : off+fastFrame].
		// Constant offsets into h need no further check.
		h := (*[fastFrame]byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(p.Buf)), off))
		const ip = EthernetMinSize
		proto := h[ip+ipv4Protocol]
		if binary.LittleEndian.Uint32(h[12:])&0xffffff != 0x450008 || (proto != ProtoTCP && proto != ProtoUDP) {
			// Not IPv4 (or tagged), IPv4 options, not TCP or UDP. An
			// IPv6 flow's bucket is prefetched too (Process takes it),
			// after the loop: a call in the loop would make the compiler
			// keep the loop's values on the stack.
			if h[12] == 0x86 && h[13] == 0xdd && n >= EthernetMinSize+IPv6HeaderSize+4 {
				found |= 1 << (32 + uint(i))
			}
			continue
		}
		q := &fp[i]
		// flowAddrs(src, dst) in one load: the destination follows the
		// source in the header.
		addrs := binary.BigEndian.Uint64(h[ip+ipv4Src:])
		tag := uint64(binary.BigEndian.Uint32(h[ip+IPv4MinSize:]))<<32 | uint64(proto)<<8 | 1 // flowTag
		q.addrs, q.tag = addrs, tag
		q.hash = slotHashKeyed(addrs, tag, key)
		found |= 1 << uint(i)
	}
	return found
}

// bucket6Addr returns the address of the first line of the flow table
// bucket of frame, an untagged IPv6 frame of at least 58 bytes, if its
// upper layer, right after the fixed header, is TCP or UDP: the flow
// Process will look up (slotHash6 of the same key). For classify, once
// the IPv6 buckets exist (buckets6 not nil).
func (f *Forwarder) bucket6Addr(frame []byte) (uintptr, bool) {
	// The hash from the header's bytes, without building a FlowKey6.
	const ip, l4 = EthernetMinSize, EthernetMinSize + IPv6HeaderSize
	h := (*[l4 + 4]byte)(frame)
	nh := h[ip+ipv6NextHeader]
	if nh != ProtoTCP && nh != ProtoUDP {
		return 0, false
	}
	hash := slotHash(addrWord6((*[16]byte)(h[ip+ipv6Src:]), (*[16]byte)(h[ip+ipv6Dst:])),
		flowTag(binary.BigEndian.Uint32(h[l4:]), nh), f.Seed)
	ft := f.Flows
	// In bounds: buckets6 has as many buckets as buckets (enable6),
	// mask+1 (NewFlowTable), and the caller checked it is not nil.
	b := (*[flowWays]flowEntry6)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(ft.buckets6)),
		uintptr(hash&ft.mask)*unsafe.Sizeof([flowWays]flowEntry6{})))
	if !asmPrefetch {
		f.sink += b[0].expires
		return 0, false
	}
	return uintptr(unsafe.Pointer(&b[0])), true
}

// flowHash is FlowKey.Hash(seed) computed from the four little-endian
// 32-bit blocks of FlowKey.Bytes: the source and destination addresses and
// the two ports as they appear in the packet, then the protocol. A test
// pins it to FlowKey.Hash.
func flowHash(b0, b1, b2, b3, seed uint32) uint32 {
	return murmurFinal(murmurStep(murmurStep(murmurStep(murmurStep(seed, b0), b1), b2), b3), 16)
}

// keyHash is FlowKey.Hash(seed) without the byte array.
func keyHash(k *FlowKey, seed uint32) uint32 {
	return flowHash(bits.ReverseBytes32(k.Src), bits.ReverseBytes32(k.Dst),
		bits.ReverseBytes32(uint32(k.SrcPort)<<16|uint32(k.DstPort)), uint32(k.Proto), seed)
}

// headerSumOK reports whether the IPv4 header ip (IHL 5, len(ip) >= 20) has
// a valid checksum: Checksum(ip[:20], 0) == 0, that is, the one's
// complement sum of its 16-bit words folds to 0xffff. It adds two 64-bit
// words and a 32-bit one read little-endian instead, with end-around
// carry (a sum modulo 2^64-1, of which 0xffff is a divisor): since
// 2^16 = 1 (mod 0xffff), the folded sum is 0xffff exactly when the plain
// sum is a non-zero multiple of 0xffff, whatever the word size, and a byte
// swap multiplies the sum by 256, which is prime to 0xffff (RFC 1071,
// section 2). The end-around sum is 0 only for an all-zero header, and
// its last carry is always 0: after a carry out of the first add the sum
// is at most 2^64-2, and the second add then leaves at most 2^32-2.
// Small enough to inline.
func headerSumOK(ip []byte) bool {
	h := (*[IPv4MinSize]byte)(ip)
	le := binary.LittleEndian
	s, c := bits.Add64(le.Uint64(h[0:]), le.Uint64(h[8:]), 0)
	s, c = bits.Add64(s, uint64(le.Uint32(h[16:])), c)
	s, _ = bits.Add64(s, 0, c)
	return s != 0 && s%0xffff == 0
}

func (f *Forwarder) process(s *Snapshot, p *packet.Packet, rxPort int, hash uint32, hinted bool) (Verdict, int, DropReason) {
	if p.Off < 0 || p.Len < 0 || p.Off+p.Len > len(p.Buf) {
		return VerdictDrop, 0, DropTruncated
	}
	frame := p.Buf[p.Off : p.Off+p.Len]
	if len(frame) < EthernetMinSize {
		return VerdictDrop, 0, DropTruncated
	}
	l3 := EthernetMinSize
	et := binary.BigEndian.Uint16(frame[12:])
	if et == EtherTypeVLAN {
		if len(frame) < EthernetMinSize+VLANTagSize {
			return VerdictDrop, 0, DropTruncated
		}
		et = binary.BigEndian.Uint16(frame[16:])
		l3 += VLANTagSize
	}
	switch et {
	case EtherTypeIPv4:
	case EtherTypeIPv6:
		return f.process6(s, p, frame, l3, rxPort)
	case EtherTypeARP:
		return VerdictKernel, 0, DropNone
	default:
		return VerdictDrop, 0, DropNotIP
	}
	if len(frame)-l3 < IPv4MinSize {
		return VerdictDrop, 0, DropTruncated
	}
	ip := IPv4(frame[l3:])
	if ip.Version() != 4 {
		return VerdictDrop, 0, DropBadVersion
	}
	ihl := ip.HeaderLen()
	if ihl < IPv4MinSize || ihl > len(ip) {
		return VerdictDrop, 0, DropBadIHL
	}
	mtu, partial := 1<<16, false // of the receiving port
	if rxPort < len(s.Ports) {
		mtu, partial = s.Ports[rxPort].MTU, s.Ports[rxPort].PartialChecksums
	}
	tot := int(ip.TotalLen())
	if tot < ihl || tot > len(ip) {
		if tot > len(ip) && len(ip) > mtu {
			return f.dropSuperframe(rxPort) // cut by the driver's ring frame
		}
		return VerdictDrop, 0, DropBadTotalLen
	}
	ip = ip[:tot] // drop Ethernet padding
	if ihl == IPv4MinSize {
		if !headerSumOK(ip) {
			return VerdictDrop, 0, DropBadChecksum
		}
	} else if Checksum(ip[:ihl], 0) != 0 {
		return VerdictDrop, 0, DropBadChecksum
	}
	dst := ip.DstU32()
	for i := range s.Ports {
		if s.Ports[i].IP == dst {
			if tot > mtu {
				if v, r, ok := f.superframe(ip, ihl, l3, mtu, mtu, rxPort); ok {
					return v, 0, r
				}
			}
			if partial {
				f.completeL4(ip, ihl) // the kernel checks it
			}
			if len(s.probes) != 0 && s.probeReply(ip, ihl) {
				f.C.ProbeReplies++
				return VerdictProbe, 0, DropNone
			}
			return VerdictKernel, 0, DropNone
		}
	}
	proto := ip.Protocol()
	l4 := ip[ihl:]
	var key FlowKey
	var tcpFlags uint8
	switch proto {
	case ProtoTCP, ProtoUDP:
		if ip.FlagsFrag()&(IPv4FlagMF|IPv4FragOffMask) != 0 {
			if s.IsVIP(dst) {
				return VerdictDrop, 0, DropFragment
			}
			return f.notForUs(dst)
		}
		min := UDPSize
		if proto == ProtoTCP {
			min = TCPMinSize
		}
		if len(l4) < min {
			return VerdictDrop, 0, DropTruncatedL4
		}
		if proto == ProtoTCP {
			if TCP(l4).DataOffset() < TCPMinSize || TCP(l4).DataOffset() > len(l4) {
				return VerdictDrop, 0, DropTruncatedL4
			}
			tcpFlags = TCP(l4).Flags()
		}
		// Field by field: a composite literal is built in a temporary
		// and copied with one wide load that cannot be forwarded from
		// the narrow stores (a store-forwarding stall per packet).
		key.Src, key.Dst, key.SrcPort, key.DstPort, key.Proto = ip.SrcU32(), dst, Ports(l4).Src(), Ports(l4).Dst(), proto
		si := s.LookupService(dst, proto, key.DstPort)
		if si < 0 {
			if s.IsVIP(dst) {
				return VerdictDrop, 0, DropNoService
			}
			v, out, r := f.notForUs(dst)
			if v == VerdictKernel && partial {
				f.completeL4(ip, ihl)
			}
			return v, out, r
		}
		svc := &s.Services[si]
		if tot > mtu {
			if v, r, ok := f.superframe(ip, ihl, l3, mtu, svc.segMax, rxPort); ok {
				return v, 0, r
			}
		}
		if partial {
			f.completeL4(ip, ihl)
		}
		// classify hashed the same bytes iff the frame is untagged and
		// the header has no options.
		hinted = hinted && l3 == EthernetMinSize && ihl == IPv4MinSize
		return f.toService(s, svc, p, l3, ip, &key, tcpFlags, false, rxPort, hash, hinted)
	case ProtoICMP:
		if !s.IsVIP(dst) {
			return f.notForUs(dst)
		}
		if len(l4) < ICMPSize {
			return VerdictDrop, 0, DropTruncatedL4
		}
		t := ICMP(l4).Type()
		if t != ICMPDestUnreachable && t != ICMPTimeExceeded {
			return VerdictKernel, 0, DropNone // echo to a VIP: the kernel answers
		}
		// An ICMP error about a packet the backend sent from the VIP: the
		// quoted header runs VIP -> client; reversed it is the client's flow.
		q := l4[ICMPSize:]
		if len(q) < IPv4MinSize || IPv4(q).Version() != 4 || IPv4(q).HeaderLen() < IPv4MinSize ||
			len(q) < IPv4(q).HeaderLen()+4 {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		qip := IPv4(q)
		qp := Ports(q[qip.HeaderLen():])
		key.Src, key.Dst, key.SrcPort, key.DstPort, key.Proto = qip.DstU32(), qip.SrcU32(), qp.Dst(), qp.Src(), qip.Protocol()
		if key.Proto != ProtoTCP && key.Proto != ProtoUDP {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		si := s.LookupService(key.Dst, key.Proto, key.DstPort)
		if si < 0 {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		return f.toService(s, &s.Services[si], p, l3, ip, &key, 0, true, rxPort, 0, false)
	default:
		if s.IsVIP(dst) {
			return VerdictDrop, 0, DropNoService
		}
		return f.notForUs(dst)
	}
}

// notForUs sends multicast and broadcast to the kernel and drops the rest.
func (f *Forwarder) notForUs(dst uint32) (Verdict, int, DropReason) {
	if dst>>28 == 0xe || dst == 0xffffffff {
		return VerdictKernel, 0, DropNone
	}
	return VerdictDrop, 0, DropNoService
}

// toService picks the backend for key and rewrites p for it. h is key's
// flow table slot hash (slotHash) when hinted.
func (f *Forwarder) toService(s *Snapshot, svc *Service, p *packet.Packet, l3 int, ip IPv4,
	key *FlowKey, tcpFlags uint8, icmpErr bool, rxPort int, h uint32, hinted bool) (Verdict, int, DropReason) {
	if svc.Mode != ModeL2 && ip.TTL() <= 1 {
		return VerdictDrop, 0, DropTTL
	}
	if !hinted {
		h = slotHashKey(key, f.Seed)
	}
	e := f.Flows.Lookup(key, h, f.Now)
	bi, reused := f.established(svc, e, tcpFlags)
	if bi < 0 {
		if len(s.probes) != 0 && s.fromPort(key.Src) {
			return VerdictDrop, 0, DropProbeLooped
		}
		// Maglev places new flows by the flow hash, the same on every
		// appliance (h only places the flow in this worker's table).
		if bi = f.maglevPick(svc, keyHash(key, f.Seed)); bi < 0 {
			return VerdictDrop, 0, DropNoBackend
		}
		if !icmpErr {
			if f.overLimit(svc, key.Proto, tcpFlags) {
				return VerdictDrop, 0, DropNewFlowLimit
			}
			if e == nil && f.stateful(s) {
				e = f.Flows.Insert(key, h, f.Now, svc.ID, 0)
			}
			f.assign(svc, e, bi, reused)
		}
	}
	if e != nil && !icmpErr {
		f.Flows.Touch(e, tcpFlags, f.Now)
	}
	b := &svc.Backends[bi]
	port := &s.Ports[b.Port]
	tot := len(ip)
	over := b.Overhead()
	if tot+over > port.MTU {
		if ip.FlagsFrag()&IPv4FlagDF != 0 && !icmpErr {
			return f.fragNeeded(s, p, l3, ip, port, over, rxPort)
		}
		return VerdictDrop, 0, DropTooBig
	}
	start := b.frameStart(p.Off, l3)
	if start < 0 {
		return VerdictDrop, 0, DropTruncated
	}
	if ip.HeaderLen() > IPv4MinSize {
		f.C.IPOptions++
	}
	if icmpErr {
		f.C.ICMPErrorsForwarded++
	}
	f.rewrite(svc, b, p, start, l3, tot, ip[ipv4TOS], ip.FlagsFrag()&IPv4FlagDF, h)
	return VerdictTx, b.Port, DropNone
}

// frameStart returns the buffer offset at which the frame of a packet at
// off (its IP header at l3 in the frame) starts once b's headers are in
// front. L3 modes: the envelope replaces the Ethernet header and any
// 802.1Q tag (it goes to the next hop untagged). L2: the frame keeps its
// header, tag included, and only the MACs change.
func (b *Backend) frameStart(off, l3 int) int {
	if b.hdrLen == EthernetMinSize {
		return off
	}
	return off + l3 - b.hdrLen
}

// established returns the index in svc.Backends of the backend that e's
// flow keeps, or -1 when the packet starts a new flow: no entry, an entry
// of another service, a backend no longer usable (counted as remapped), or
// a SYN on the 4-tuple of a connection the client ended (FIN or RST seen;
// its port is free again as soon as the server closed first): then reused
// is true, and a draining backend MUST NOT get the new flow. A SYN sent
// again on a flow that saw no ACK is counted (synAgain) and, when its
// backend is held down by passive detection, starts the flow over on
// another backend (remapped, reused).
func (f *Forwarder) established(svc *Service, e *flowEntry, tcpFlags uint8) (bi int, reused bool) {
	if e == nil || e.service != svc.ID {
		return -1, false
	}
	if e.state == flowStateClosing && tcpFlags&(TCPFlagSYN|TCPFlagACK) == TCPFlagSYN {
		return -1, true
	}
	if i := e.backendIndex(svc); i >= 0 && svc.Backends[i].Usable() {
		if e.state == flowStateSyn && tcpFlags&(TCPFlagSYN|TCPFlagACK) == TCPFlagSYN && f.synAgain(svc, e, &svc.Backends[i]) {
			// Its backend is held down by passive detection: the client
			// would keep waiting for it; the flow starts over elsewhere.
			f.C.FlowRemapped++
			return -1, true
		}
		return i, false
	}
	f.C.FlowRemapped++
	return -1, false
}

// maglevPick returns the backend svc's Maglev table gives the flow hash
// fh, or -1 when no backend takes new flows (counted for the service).
func (f *Forwarder) maglevPick(svc *Service, fh uint32) int {
	if len(svc.Table) > 0 {
		if t := svc.Table[fh%uint32(len(svc.Table))]; t != MaglevNone {
			return int(t)
		}
	}
	f.C.Services[svc.ID].NoBackend++
	return -1
}

// assign gives flow entry e (new, or the entry of a flow that moves)
// backend bi of svc and counts the new flow; reused (established) starts
// the entry's TCP state over. A nil e is a flow forwarded without an entry
// (stateful said no, or the table had no way for it): counted as
// stateless, its next packet is a new flow again.
func (f *Forwarder) assign(svc *Service, e *flowEntry, bi int, reused bool) {
	if e == nil {
		f.C.FlowStateless++
		return
	}
	if reused {
		e.state = 0 // Touch starts it over
	}
	e.synRetx = 0 // a new backend: its own evidence
	e.setBackend(svc, bi)
	f.C.Backends[svc.Backends[bi].ID].NewFlows++
}

// overLimit reports whether a packet without a live flow of svc, about
// to be given backend, is a new flow over svc's limit of new flows per
// second, and counts it for svc. Only a flow's first packet counts (a TCP
// SYN without ACK, any UDP packet): a TCP segment of a flow that lost its
// entry, or never had one, is not held to the limit, which MUST NOT break
// connections it let in.
func (f *Forwarder) overLimit(svc *Service, proto, tcpFlags uint8) bool {
	if svc.newFlowLimit == 0 || proto == ProtoTCP && tcpFlags&(TCPFlagSYN|TCPFlagACK) != TCPFlagSYN {
		return false
	}
	if f.svcFlows[svc.ID].take(svc.newFlowLimit, f.Now) {
		return false
	}
	f.C.Services[svc.ID].NewFlowLimited++
	return true
}

// stateful reports whether a new flow may have a flow table entry: at
// most s.NewFlowsPerSecond of them get one; the rest are forwarded by
// Maglev alone (assign counts them), which keeps a flood of new flows
// from churning the table and costs the flows it lets through only their
// stickiness should the backend set change.
func (f *Forwarder) stateful(s *Snapshot) bool {
	return s.NewFlowsPerSecond == 0 || f.newFlows.take(s.NewFlowsPerSecond, f.Now)
}

// tokenBucket meters events against a rate on the worker's clock
// (milliseconds): it holds up to one second of the rate, in thousandths
// of an event, refilled as the clock advances, and starts full, so a
// worker's first second (its clock starts at 0) gets the whole rate. No
// lock: one worker owns it.
type tokenBucket struct {
	milli   uint64 // thousandths of an event
	last    uint32 // the clock at the last take
	started bool
}

// take reports whether one more event fits rate events per second and, if
// so, counts it. A change of rate takes effect at once (the bucket is cut
// down to one second of the new rate).
func (b *tokenBucket) take(rate, now uint32) bool {
	full := uint64(rate) * 1000
	if !b.started {
		b.started, b.milli, b.last = true, full, now
	}
	if dt := now - b.last; dt >= 1000 {
		b.milli = full
	} else {
		b.milli += uint64(dt) * uint64(rate)
	}
	b.last = now
	if b.milli > full {
		b.milli = full
	}
	if b.milli < 1000 {
		return false
	}
	b.milli -= 1000
	return true
}

// synAgain counts the SYN the client of flow e sent again, e still in the
// SYN state (no ACK: nothing answered), against e's backend b, and reports
// whether the flow is to get a new backend: b is held down by passive
// detection, so the client would keep waiting for an answer from it. The
// flow counts as unanswered once, at the service's SynRetries.
func (f *Forwarder) synAgain(svc *Service, e *flowEntry, b *Backend) bool {
	if e.synRetx < 255 {
		e.synRetx++
	}
	c := &f.C.Backends[b.ID]
	c.SynRetransmits++
	if e.synRetx == svc.synRetries {
		c.UnansweredFlows++
	}
	return b.State == BackendHeld
}

// rewrite puts b's headers in front of the IP packet of p (at l3 in the
// frame, tot bytes long; the new frame starts at buffer offset start and
// ends with it) and counts the packet for its service and backend. tos is
// the inner packet's TOS or traffic class, df the DF flag an IPv4 envelope
// gets, hash the flow's slot hash, whose low 20 bits are the flow label of
// an IPv6 envelope (RFC 6438). In L2 mode start is p.Off and only the two
// MACs are written: the EtherType and an 802.1Q tag (TPID, PCP, DEI, VID)
// stay as received, so the packet stays on its VLAN.
func (f *Forwarder) rewrite(svc *Service, b *Backend, p *packet.Packet, start, l3, tot int, tos uint8, df uint16, hash uint32) {
	f.writeHeaders(b, p, start, l3, tot, tos, df, hash)
	sc := &f.C.Services[svc.ID]
	sc.Packets++
	sc.Bytes += uint64(tot)
	bc := &f.C.Backends[b.ID]
	bc.Packets++
	bc.Bytes += uint64(tot)
}

// writeHeaders is rewrite without the counting: the headers of b in front
// of the packet, for client packets (rewrite) and health probes (toProbed)
// alike.
func (f *Forwarder) writeHeaders(b *Backend, p *packet.Packet, start, l3, tot int, tos uint8, df uint16, hash uint32) {
	end := p.Off + l3 + tot // Ethernet padding dropped
	// The headers are written through array pointers: constant offsets,
	// no bounds check per field, fixed-size copies inlined as moves.
	switch b.hdrLen {
	case EthernetMinSize:
		*(*[12]byte)(p.Buf[start:]) = *(*[12]byte)(b.hdr[:]) // destination and source MAC
	case EthernetMinSize + IPv4MinSize:
		h := (*[EthernetMinSize + IPv4MinSize]byte)(p.Buf[start:])
		// 34 bytes as two overlapping 32-byte moves (a 34-byte copy
		// calls memmove).
		*(*[32]byte)(h[:]) = *(*[32]byte)(b.hdr[:])
		*(*[32]byte)(h[2:]) = *(*[32]byte)(b.hdr[2:])
		f.ipID++
		fillOuter((*[IPv4MinSize]byte)(h[EthernetMinSize:]), b.outerSum, tos, df, tot+IPv4MinSize, f.ipID)
	case EthernetMinSize + IPv4MinSize + greSize:
		h := (*[len(b.hdr)]byte)(p.Buf[start:])
		*h = b.hdr
		f.ipID++
		fillOuter((*[IPv4MinSize]byte)(h[EthernetMinSize:]), b.outerSum, tos, df, tot+IPv4MinSize+greSize, f.ipID)
	default: // an IPv6 envelope
		h := p.Buf[start : start+b.hdrLen]
		copy(h, b.hdr6[:])
		fillOuter6((*[IPv6HeaderSize]byte)(h[EthernetMinSize:]), tos, hash, b.hdrLen-EthernetMinSize-IPv6HeaderSize+tot)
	}
	p.Off = start
	p.Len = end - start
}

// fillOuter writes the per-packet fields of an outer IPv4 header whose
// template has the partial checksum sum: TOS, total length n, ID, the DF
// flag df and the checksum. Small enough to inline into the fast path.
func fillOuter(o *[IPv4MinSize]byte, sum uint32, tos uint8, df uint16, n int, id uint16) {
	o[ipv4TOS] = tos
	binary.BigEndian.PutUint16(o[ipv4TotalLen:], uint16(n))
	binary.BigEndian.PutUint32(o[ipv4ID:], uint32(id)<<16|uint32(df)) // ID, then flags and offset
	binary.BigEndian.PutUint16(o[ipv4Checksum:], ^fold(sum+uint32(tos)+uint32(n)+uint32(id)+uint32(df)))
}

// fastPath is the common case of Process for the packets of a burst
// classify hashed (their bits in hinted): a packet that passes every check
// process makes, to a VIP service, of a flow the table holds (live, same
// service, not a SYN on a flow that is not established) on a backend that
// is still usable, fitting the egress MTU. For such a packet it does
// exactly what process would do: count the packet and the hit, refresh the
// entry, rewrite, count for service and backend; it sets the packet's bit
// in the returned mask and its egress port in b.egress.
//
// The burst is b.pkts[:npkts]. fastPath starts at packet from and stops
// at the first packet it cannot take, which it leaves untouched and
// returns as next (npkts when it took them all): the caller runs Process on that one and calls again from
// the one after, so that packets are handled in order (IP IDs, flow
// table) exactly as by Process alone. FuzzFastPath, TestFastPathFlows and
// TestWorkerMatchesProcess hold the two to the same result.
//
// hinted MUST be (a subset of) the mask classify returned for
// b.pkts[:npkts] and b.fp, with no packet changed since: fastPath relies
// on classify's checks of each hashed packet (Off and Len within Buf,
// Len >= fastFrame, Off >= maxFastHeader) and makes none of its own.
//
// Everything is in one loop, without calls: this is the per-packet cost
// of the appliance.
func (f *Forwarder) fastPath(s *Snapshot, b *rxBurst, npkts int, hinted uint32, from int) (taken uint32, next int) {
	npkts = min(npkts, packet.BurstSize)
	if from >= npkts || from < 0 {
		return 0, npkts
	}
	// s is the snapshot of Use, so the counters hold its every ID (Use
	// grew them): the loop indexes them without bounds checks. Not so,
	// every packet is left to process. The loop reads s through f.snap:
	// one register less across it.
	if s != f.snap {
		return 0, from
	}
	// The run of hashed packets from packet from: the loop needs no test
	// of its own per packet, and what it took is the run it went through.
	end := min(npkts, from+bits.TrailingZeros32(^(hinted>>uint(from))))
	i := from
	// Few values live across the loop: the table, the clock and the
	// counters are read and written through f, so that the compiler keeps
	// the values of one packet in registers instead of spilling them.
loop:
	for ; i < end; i++ {
		q := &b.fp[i]
		p := &b.pkts[i]
		ft := f.Flows
		off, n := p.Off, p.Len
		// In bounds: classify (hashFlows) hashed the packet, so
		// maxFastHeader <= off, fastFrame <= n and off+n <= len(Buf):
		// Buf[off : off+fastFrame]; and start >= 0 below needs no test
		// whatever the backend's envelope.
		h := (*[fastFrame]byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(p.Buf)), off))
		const ip = EthernetMinSize
		// The checks of process, in its order of precedence.
		tot := int(binary.BigEndian.Uint16(h[ip+ipv4TotalLen:]))
		// tot < IPv4MinSize+UDPSize || tot > n-EthernetMinSize as one
		// unsigned compare (n >= fastFrame).
		if uint(tot-(IPv4MinSize+UDPSize)) > uint(n-(EthernetMinSize+IPv4MinSize+UDPSize)) ||
			!headerSumOK(h[ip:ip+IPv4MinSize]) ||
			binary.BigEndian.Uint16(h[ip+ipv4FlagsFrag:])&(IPv4FlagMF|IPv4FragOffMask) != 0 {
			break
		}
		addrs, tag := q.addrs, q.tag
		proto := uint8(tag >> 8)
		if proto == ProtoTCP {
			// The data offset in bytes. tot < IPv4MinSize+TCPMinSize,
			// which process also drops, needs no test of its own: it
			// makes do > tot-IPv4MinSize whenever do >= TCPMinSize.
			if do := int(h[ip+IPv4MinSize+12]>>2) &^ 3; do < TCPMinSize || do > tot-IPv4MinSize {
				break
			}
		}
		// The flow table: a live entry. The ways unrolled, the second
		// word compared only when the first matches.
		bk := ft.bucketFast(q.hash)
		var e *flowEntry
		switch {
		case bk[0].addrs == addrs && bk[0].tag == tag:
			e = &bk[0]
		case bk[1].addrs == addrs && bk[1].tag == tag:
			e = &bk[1]
		case bk[2].addrs == addrs && bk[2].tag == tag:
			e = &bk[2]
		case bk[3].addrs == addrs && bk[3].tag == tag:
			e = &bk[3]
		default:
			break loop
		}
		// Its service, if it is still the one LookupService gives the
		// packet: the service with the entry's ID, if it owns the
		// packet's VIP, protocol and port (Service.owns) and its VIP is
		// no port's own address (process sends those to the kernel
		// first): Snapshot.fastByID; otherwise Process decides.
		s := f.snap
		if uint(e.service) >= uint(len(s.fastByID)) {
			break
		}
		svc := s.fastByID[e.service] // noFastService matches no tag
		// svc.VIP != uint32(addrs) || tag&svc.fastMask != svc.fastTag ||
		// TTL < svc.fastTTL with one branch: the differences and the
		// sign of TTL-fastTTL ORed (each branch of a chain costs the
		// assembler's jump padding too). The address is compared on its
		// own: XORed into the tag's low half, where the protocol is, an
		// address and a protocol that both differ could cancel out.
		if uint64(svc.VIP^uint32(addrs))|(tag&svc.fastMask^svc.fastTag)|
			uint64(int(h[ip+ipv4TTL])-svc.fastTTL)>>63 != 0 {
			break
		}
		bi := int(e.bhint)
		if bi >= len(svc.Backends) {
			break
		}
		be := &svc.Backends[bi]
		start := off + EthernetMinSize - be.hdrLen
		// An entry of an IPv6 backend (b6) holds its ID, not its address.
		// Past this start >= 0: be writes an IPv4 envelope (maxTot < 0
		// for the others), hdrLen <= EthernetMinSize+maxFastHeader.
		if be.IP != e.backend || e.b6 || tot > be.maxTot { // maxTot < 0: down
			break
		}

		// The entry's last checks, then ft.Touch(e, flags, f.Now), which
		// writes nothing on the common hit: an established entry and a
		// TCP packet without SYN, FIN or RST, or a UDP entry and packet,
		// each within the state's touch step of its last write. That
		// case is tested first, with constant indexes (no bounds
		// checks), and it needs no other: an entry within the step of
		// its timeout expires in more than timeout - step >= 0 ms, so it
		// is live (timeouts under 2^31 ms, as the table's clock needs:
		// control allows 24 h). Otherwise the entry must be live, and a
		// SYN on an entry not established is left to process (on a
		// closing one maybe a new connection on an ended one's 4-tuple,
		// on a SYN-state one the client sending it again: synAgain);
		// then Touch, the packet taken.
		if proto == ProtoTCP {
			// The TCP flags, read here rather than kept from the checks.
			flags := h[ip+IPv4MinSize+13]
			if flags&(TCPFlagSYN|TCPFlagFIN|TCPFlagRST) != 0 || e.state != flowStateEstablished ||
				f.Now+ft.tmo[flowStateEstablished]-e.expires >= ft.step[flowStateEstablished] {
				if int32(e.expires-f.Now) <= 0 || flags&TCPFlagSYN != 0 && e.state != flowStateEstablished {
					break
				}
				ft.Touch(e, flags, f.Now)
			}
		} else if e.state != flowStateUDP || f.Now+ft.tmo[flowStateUDP]-e.expires >= ft.step[flowStateUDP] {
			if int32(e.expires-f.Now) <= 0 {
				break
			}
			ft.Touch(e, 0, f.Now) // no flags: UDP
		}

		// Taken: from here on (and Touch above), what process does.
		f.C.RxBytes += uint64(n)
		if be.hdrLen == EthernetMinSize {
			*(*[EthernetMinSize]byte)(h[:]) = *(*[EthernetMinSize]byte)(be.hdr[:])
		} else {
			// The template (34 or 38 bytes) as two 16-byte array copies
			// and one 8-byte move overlapping them, then the per-packet
			// fields of the outer IPv4 header (fillOuter). A larger
			// array copy calls memmove (source and destination may
			// overlap, as far as the compiler knows); binary's Uint64
			// and PutUint64 would leave a NOP per inlined call (an
			// inlining mark) in the loop.
			// In bounds: start >= 0 (off >= maxFastHeader) and
			// start+len(be.hdr) <= off+fastFrame;
			// last, 26 or 30 (an IPv4 envelope: maxTot < 0 for the
			// others), is within both arrays. Through pointers with
			// constant offsets: no bounds checks, no address arithmetic
			// per move.
			o := unsafe.Add(unsafe.Pointer(unsafe.SliceData(p.Buf)), start)
			t := unsafe.Pointer(&be.hdr)
			last := uintptr(be.hdrLen - 8)
			*(*uint64)(o) = *(*uint64)(t)
			*(*uint64)(unsafe.Add(o, 8)) = *(*uint64)(unsafe.Add(t, 8))
			*(*uint64)(unsafe.Add(o, 16)) = *(*uint64)(unsafe.Add(t, 16))
			*(*uint64)(unsafe.Add(o, 24)) = *(*uint64)(unsafe.Add(t, 24))
			*(*uint64)(unsafe.Add(o, last)) = *(*uint64)(unsafe.Add(t, last))
			f.ipID++
			fillOuter((*[IPv4MinSize]byte)(unsafe.Add(o, ip)), be.outerSum, h[ip+ipv4TOS], binary.BigEndian.Uint16(h[ip+ipv4FlagsFrag:])&IPv4FlagDF,
				be.hdrLen-EthernetMinSize+tot, f.ipID)
		}
		p.Off = start
		p.Len = be.hdrLen + tot
		// The counters of svc and be (Backend.svcCounters, counters).
		// In bounds: svc and be are of s, so svc.ID <= s.MaxServiceID
		// and be.ID <= s.MaxBackendID, and the counters were grown to
		// those (s is f.snap, checked above).
		c := (*ServiceCounters)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(f.C.Services)), uintptr(be.svcCounters)))
		c.Packets++
		c.Bytes += uint64(tot)
		d := (*BackendCounters)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(f.C.Backends)), uintptr(be.counters)))
		d.Packets++
		d.Bytes += uint64(tot)
		b.egress[i] = uint16(be.Port)
	}
	hits := uint64(i - from)
	f.Flows.Hits += hits
	f.C.RxPackets += hits
	// Bits from..i-1 (1<<32 is 0 in uint32: i = 32 gives all bits).
	return (uint32(1)<<uint(i) - 1) &^ (uint32(1)<<uint(from) - 1), i
}

// fragNeeded turns p into an ICMP "fragmentation needed" (RFC 792, RFC 1191)
// to the client, quoting the IP header and 8 bytes of the packet, with the
// next-hop MTU the client can use through this service (port MTU minus the
// encapsulation overhead). It goes back out of the receiving port to the
// MAC the packet came from, on the packet's VLAN: an 802.1Q tag (l3 = 18)
// is copied as received. Over the worker's rate of ICMP errors the packet
// is dropped instead (icmp_error_limit).
func (f *Forwarder) fragNeeded(s *Snapshot, p *packet.Packet, l3 int, ip IPv4, port *PortState, over, rxPort int) (Verdict, int, DropReason) {
	quote := ip.HeaderLen() + 8
	if quote > len(ip) {
		quote = len(ip)
	}
	// The new frame: l3 bytes of Ethernet header, IPv4 and ICMP headers,
	// then the quote, which stays where it is (at p.Off+l3).
	start := p.Off - (IPv4MinSize + ICMPSize)
	if start < 0 {
		return VerdictDrop, 0, DropTooBig
	}
	if !f.icmpErrorAllowed(s) {
		return VerdictDrop, 0, DropICMPErrorLimit
	}
	frame := p.Buf[p.Off:]
	var srcMAC MAC
	copy(srcMAC[:], frame[6:12])
	client := ip.SrcU32()
	rx := &s.Ports[rxPort]
	out := p.Buf[start : p.Off+l3+quote]
	// out[:l3] lies before the received header: the tag is read before the
	// IPv4 and ICMP headers overwrite it.
	copy(out[0:6], srcMAC[:])
	copy(out[6:12], rx.MAC[:])
	copy(out[12:l3-2], frame[12:l3-2])
	binary.BigEndian.PutUint16(out[l3-2:], EtherTypeIPv4)
	o := IPv4(out[l3:])
	f.ipID++
	o[ipv4VersIHL] = 0x45
	o[ipv4TOS] = 0
	binary.BigEndian.PutUint16(o[ipv4TotalLen:], uint16(IPv4MinSize+ICMPSize+quote))
	binary.BigEndian.PutUint16(o[ipv4ID:], f.ipID)
	binary.BigEndian.PutUint16(o[ipv4FlagsFrag:], 0)
	o[ipv4TTL] = outerTTL
	o[ipv4Protocol] = ProtoICMP
	binary.BigEndian.PutUint16(o[ipv4Checksum:], 0)
	binary.BigEndian.PutUint32(o[ipv4Src:], rx.IP)
	binary.BigEndian.PutUint32(o[ipv4Dst:], client)
	binary.BigEndian.PutUint16(o[ipv4Checksum:], Checksum(o[:IPv4MinSize], 0))
	c := o[IPv4MinSize:]
	c[0] = ICMPDestUnreachable
	c[1] = ICMPFragNeeded
	binary.BigEndian.PutUint16(c[2:], 0)
	binary.BigEndian.PutUint16(c[4:], 0)
	binary.BigEndian.PutUint16(c[6:], uint16(port.MTU-over))
	binary.BigEndian.PutUint16(c[2:], Checksum(c[:ICMPSize+quote], 0))
	p.Off = start
	p.Len = len(out)
	f.C.FragNeededSent++
	return VerdictTx, rxPort, DropNone
}
