package pipeline

import "encoding/binary"

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
		f.snap = s
	}
}

// Process decides what to do with p, received on NIC port rxPort, and
// rewrites it in place for VerdictTx. It returns the verdict and, for
// VerdictTx, the index of the egress port. It counts everything except the
// final transmission (the worker counts TxPackets and DropTxFull).
//
// p.Off and p.Len may change (headers prepended, padding trimmed).
func (f *Forwarder) Process(s *Snapshot, p *Packet, rxPort int) (Verdict, int) {
	f.C.RxPackets++
	f.C.RxBytes += uint64(p.Len)
	v, out, r := f.process(s, p, rxPort)
	if v == VerdictDrop {
		f.C.Drops[r]++
	} else if v == VerdictKernel {
		f.C.ToKernel++
	}
	return v, out
}

func (f *Forwarder) process(s *Snapshot, p *Packet, rxPort int) (Verdict, int, DropReason) {
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
	case EtherTypeARP, EtherTypeIPv6:
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
	tot := int(ip.TotalLen())
	if tot < ihl || tot > len(ip) {
		return VerdictDrop, 0, DropBadTotalLen
	}
	ip = ip[:tot] // drop Ethernet padding
	if Checksum(ip[:ihl], 0) != 0 {
		return VerdictDrop, 0, DropBadChecksum
	}
	dst := ip.DstU32()
	for i := range s.Ports {
		if s.Ports[i].IP == dst {
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
		key = FlowKey{Src: ip.SrcU32(), Dst: dst, SrcPort: Ports(l4).Src(), DstPort: Ports(l4).Dst(), Proto: proto}
		si := s.LookupService(dst, proto, key.DstPort)
		if si < 0 {
			if s.IsVIP(dst) {
				return VerdictDrop, 0, DropNoService
			}
			return f.notForUs(dst)
		}
		svc := &s.Services[si]
		return f.toService(s, svc, p, l3, ip, &key, tcpFlags, false, rxPort)
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
		key = FlowKey{Src: qip.DstU32(), Dst: qip.SrcU32(), SrcPort: qp.Dst(), DstPort: qp.Src(), Proto: qip.Protocol()}
		if key.Proto != ProtoTCP && key.Proto != ProtoUDP {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		si := s.LookupService(key.Dst, key.Proto, key.DstPort)
		if si < 0 {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		return f.toService(s, &s.Services[si], p, l3, ip, &key, 0, true, rxPort)
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

// toService picks the backend for key and rewrites p for it.
func (f *Forwarder) toService(s *Snapshot, svc *Service, p *Packet, l3 int, ip IPv4,
	key *FlowKey, tcpFlags uint8, icmpErr bool, rxPort int) (Verdict, int, DropReason) {
	if svc.Mode != ModeL2 && ip.TTL() <= 1 {
		return VerdictDrop, 0, DropTTL
	}
	h := key.Hash(f.Seed)
	bi := -1
	e := f.Flows.Lookup(key, h, f.Now)
	if e != nil && e.service == svc.ID {
		if i := svc.BackendIndex(e.backend); i >= 0 && svc.Backends[i].Usable() {
			bi = i
		} else {
			f.C.FlowRemapped++
		}
	}
	if bi < 0 {
		if len(svc.Table) == 0 {
			f.C.Services[svc.ID].NoBackend++
			return VerdictDrop, 0, DropNoBackend
		}
		t := svc.Table[h%uint32(len(svc.Table))]
		if t == MaglevNone {
			f.C.Services[svc.ID].NoBackend++
			return VerdictDrop, 0, DropNoBackend
		}
		bi = int(t)
		if !icmpErr {
			if e == nil {
				e = f.Flows.Insert(key, h, f.Now, svc.ID, svc.Backends[bi].IP)
			} else {
				e.service, e.backend = svc.ID, svc.Backends[bi].IP
			}
			f.C.Backends[svc.Backends[bi].ID].NewFlows++
		}
	}
	if e != nil && !icmpErr {
		f.Flows.Touch(e, tcpFlags, f.Now)
	}
	b := &svc.Backends[bi]
	port := &s.Ports[b.Port]
	tot := len(ip)
	over := svc.Mode.Overhead()
	if tot+over > port.MTU {
		if ip.FlagsFrag()&IPv4FlagDF != 0 && !icmpErr {
			return f.fragNeeded(s, p, l3, ip, port, over, rxPort)
		}
		return VerdictDrop, 0, DropTooBig
	}
	start := p.Off + l3 - b.hdrLen
	if start < 0 {
		return VerdictDrop, 0, DropTruncated
	}
	hdr := p.Buf[start : p.Off+l3]
	copy(hdr, b.hdr[:b.hdrLen])
	if over > 0 {
		o := hdr[EthernetMinSize:]
		tos := ip.TOS()
		flags := ip.FlagsFrag() & IPv4FlagDF
		f.ipID++
		o[ipv4TOS] = tos
		binary.BigEndian.PutUint16(o[ipv4TotalLen:], uint16(tot+over))
		binary.BigEndian.PutUint16(o[ipv4ID:], f.ipID)
		binary.BigEndian.PutUint16(o[ipv4FlagsFrag:], flags)
		cs := b.outerSum + uint32(tos) + uint32(tot+over) + uint32(f.ipID) + uint32(flags)
		binary.BigEndian.PutUint16(o[ipv4Checksum:], ^fold(cs))
		if svc.Mode == ModeGRE {
			binary.BigEndian.PutUint16(o[IPv4MinSize+2:], EtherTypeIPv4)
		}
	}
	if ip.HeaderLen() > IPv4MinSize {
		f.C.IPOptions++
	}
	if icmpErr {
		f.C.ICMPErrorsForwarded++
	}
	p.Off = start
	p.Len = b.hdrLen + tot
	sc := &f.C.Services[svc.ID]
	sc.Packets++
	sc.Bytes += uint64(tot)
	bc := &f.C.Backends[b.ID]
	bc.Packets++
	bc.Bytes += uint64(tot)
	return VerdictTx, b.Port, DropNone
}

// fragNeeded turns p into an ICMP "fragmentation needed" (RFC 792, RFC 1191)
// to the client, quoting the IP header and 8 bytes of the packet, with the
// next-hop MTU the client can use through this service (port MTU minus the
// encapsulation overhead). It goes back out of the receiving port to the
// MAC the packet came from.
func (f *Forwarder) fragNeeded(s *Snapshot, p *Packet, l3 int, ip IPv4, port *PortState, over, rxPort int) (Verdict, int, DropReason) {
	const hdrs = EthernetMinSize + IPv4MinSize + ICMPSize
	quote := ip.HeaderLen() + 8
	if quote > len(ip) {
		quote = len(ip)
	}
	start := p.Off + l3 - hdrs
	if start < 0 {
		return VerdictDrop, 0, DropTooBig
	}
	frame := p.Buf[p.Off:]
	var srcMAC MAC
	copy(srcMAC[:], frame[6:12])
	client := ip.SrcU32()
	rx := &s.Ports[rxPort]
	out := p.Buf[start : p.Off+l3+quote]
	copy(out[0:6], srcMAC[:])
	copy(out[6:12], rx.MAC[:])
	binary.BigEndian.PutUint16(out[12:], EtherTypeIPv4)
	o := IPv4(out[EthernetMinSize:])
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
