package pipeline

import (
	"encoding/binary"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// IPv6 in the fast path.
//
// process hands every IPv6 frame to process6, the IPv6 counterpart of its
// IPv4 part: the burst loop's fastPath takes IPv4 only, so IPv6 packets
// always take this path (see docs/performance.md for what it costs). What
// goes where:
//
//   - to the kernel: multicast (neighbour discovery, router
//     advertisements, MLD), link-local unicast, anything to a port's own
//     IPv6 address, and ICMPv6 to a VIP other than an error (echo, a
//     unicast neighbour solicitation), except a backend's answer to a
//     health probe through an IPv6 VIP, which goes to the probe port
//     (probe.go);
//   - to a backend: TCP and UDP to an IPv6 service (after the extension
//     headers upperLayer6 passes over), and ICMPv6 errors quoting a
//     service's flow, to the backend that owns it;
//   - dropped and counted: truncated headers (truncated), a payload length
//     beyond the frame (bad_total_length), fragments to a VIP (fragment),
//     extension headers it does not forward (ipv6_ext_header), hop limit 1
//     in L3 modes (ttl_exceeded), a probe looped back to a VIP
//     (probe_looped), anything else to a VIP (no_service) or to an
//     address that is not ours (no_service).

// process6 decides the IPv6 packet at l3 in frame (p's bytes), received
// on rxPort.
func (f *Forwarder) process6(s *Snapshot, p *packet.Packet, frame []byte, l3, rxPort int) (Verdict, int, DropReason) {
	if len(frame)-l3 < IPv6HeaderSize {
		return VerdictDrop, 0, DropTruncated
	}
	ip := IPv6(frame[l3:])
	if ip.Version() != 6 {
		return VerdictDrop, 0, DropBadVersion
	}
	mtu, partial := 1<<16, false // of the receiving port
	if rxPort < len(s.Ports) {
		mtu, partial = s.Ports[rxPort].MTU, s.Ports[rxPort].PartialChecksums
	}
	tot := IPv6HeaderSize + int(ip.PayloadLen())
	if tot > len(ip) {
		if len(ip) > mtu {
			return f.dropSuperframe(rxPort) // cut by the driver's ring frame
		}
		return VerdictDrop, 0, DropBadTotalLen
	}
	ip = ip[:tot] // drop Ethernet padding
	dst := (*[16]byte)(ip[ipv6Dst:])
	if dst[0] == 0xff || dst[0] == 0xfe && dst[1]&0xc0 == 0x80 { // multicast, link-local
		return VerdictKernel, 0, DropNone
	}
	for i := range s.Ports {
		if s.Ports[i].IP6 == *dst && *dst != ([16]byte{}) {
			v, out, r := f.toKernel6(ip, l3, mtu, partial, rxPort)
			if v == VerdictKernel && len(s.probes) != 0 && s.probeReply6(ip) {
				f.C.ProbeReplies++
				return VerdictProbe, 0, DropNone
			}
			return v, out, r
		}
	}
	if !s.IsVIP6(dst) {
		return VerdictDrop, 0, DropNoService
	}
	proto, off, r := upperLayer6(ip)
	if r != DropNone {
		return VerdictDrop, 0, r
	}
	l4 := ip[off:]
	var key FlowKey6
	switch proto {
	case ProtoTCP, ProtoUDP:
		var tcpFlags uint8
		if proto == ProtoTCP {
			if len(l4) < TCPMinSize || TCP(l4).DataOffset() < TCPMinSize || TCP(l4).DataOffset() > len(l4) {
				return VerdictDrop, 0, DropTruncatedL4
			}
			tcpFlags = TCP(l4).Flags()
		} else if len(l4) < UDPSize {
			return VerdictDrop, 0, DropTruncatedL4
		}
		key.Src, key.Dst, key.SrcPort, key.DstPort, key.Proto = ip.Src(), *dst, Ports(l4).Src(), Ports(l4).Dst(), proto
		si := s.LookupService6(dst, proto, key.DstPort)
		if si < 0 {
			return VerdictDrop, 0, DropNoService
		}
		svc := &s.Services[si]
		if tot > mtu {
			if v, r, ok := f.superframe6(ip, off, proto, l3, mtu, svc.segMax, rxPort); ok {
				return v, 0, r
			}
		}
		if partial {
			f.completeL4v6(ip, proto, off)
		}
		return f.toService6(s, svc, p, l3, ip, &key, tcpFlags, false, rxPort)
	case ProtoICMPv6:
		if len(l4) < ICMPSize {
			return VerdictDrop, 0, DropTruncatedL4
		}
		if !isICMPv6Error(l4[0]) {
			return VerdictKernel, 0, DropNone // echo, neighbour discovery: the kernel answers
		}
		// An error about a packet the backend sent from the VIP: the
		// quoted header runs VIP -> client; reversed it is the client's
		// flow.
		q := l4[ICMPSize:]
		if len(q) < IPv6HeaderSize || IPv6(q).Version() != 6 {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		qproto, qoff, r := upperLayer6(q)
		if r != DropNone || qoff+4 > len(q) || qproto != ProtoTCP && qproto != ProtoUDP {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		qip, qp := IPv6(q), Ports(q[qoff:])
		key.Src, key.Dst, key.SrcPort, key.DstPort, key.Proto = qip.Dst(), qip.Src(), qp.Dst(), qp.Src(), qproto
		si := s.LookupService6(&key.Dst, qproto, key.DstPort)
		if si < 0 {
			return VerdictDrop, 0, DropICMPUnrelated
		}
		return f.toService6(s, &s.Services[si], p, l3, ip, &key, 0, true, rxPort)
	}
	return VerdictDrop, 0, DropNoService
}

// toKernel6 hands ip, to a port's own IPv6 address, to the kernel,
// completing what a peer kernel left to offloads as process does for
// IPv4: a TCP super-frame is cut to the port's MTU, partial checksums
// are completed.
func (f *Forwarder) toKernel6(ip IPv6, l3, mtu int, partial bool, rxPort int) (Verdict, int, DropReason) {
	if len(ip) <= mtu && !partial {
		return VerdictKernel, 0, DropNone
	}
	proto, off, r := upperLayer6(ip)
	if r != DropNone {
		return VerdictKernel, 0, DropNone // the kernel judges it
	}
	if len(ip) > mtu {
		if v, r, ok := f.superframe6(ip, off, proto, l3, mtu, mtu, rxPort); ok {
			return v, 0, r
		}
	}
	if partial {
		f.completeL4v6(ip, proto, off)
	}
	return VerdictKernel, 0, DropNone
}

// toService6 picks the backend for the IPv6 flow key and rewrites p for
// it: toService for IPv6 clients. The envelope's family is the backend's.
func (f *Forwarder) toService6(s *Snapshot, svc *Service, p *packet.Packet, l3 int, ip IPv6,
	key *FlowKey6, tcpFlags uint8, icmpErr bool, rxPort int) (Verdict, int, DropReason) {
	if svc.Mode != ModeL2 && ip.HopLimit() <= 1 {
		return VerdictDrop, 0, DropTTL
	}
	ft := f.Flows
	if ft.buckets6 == nil { // Use gives them; a caller that skipped it
		ft.enable6()
	}
	h := slotHash6(key, f.Seed)
	e := ft.Lookup6(key, h, f.Now)
	bi, reused := f.established(svc, e, tcpFlags)
	if bi < 0 {
		if len(s.probes) != 0 && s.fromPort6(&key.Src) {
			return VerdictDrop, 0, DropProbeLooped
		}
		if bi = f.maglevPick(svc, keyHash6(key, f.Seed)); bi < 0 {
			return VerdictDrop, 0, DropNoBackend
		}
		if !icmpErr {
			if f.overLimit(svc, key.Proto, tcpFlags) {
				return VerdictDrop, 0, DropNewFlowLimit
			}
			if e == nil && f.stateful(s) {
				e = ft.Insert6(key, h, f.Now, svc.ID)
			}
			f.assign(svc, e, bi, reused)
		}
	}
	if e != nil && !icmpErr {
		ft.Touch(e, tcpFlags, f.Now)
	}
	b := &svc.Backends[bi]
	port := &s.Ports[b.Port]
	tot := len(ip)
	over := b.Overhead()
	if tot+over > port.MTU {
		if !icmpErr {
			return f.packetTooBig(s, p, l3, ip, port.MTU-over, rxPort)
		}
		return VerdictDrop, 0, DropTooBig
	}
	start := b.frameStart(p.Off, l3)
	if start < 0 {
		return VerdictDrop, 0, DropTruncated
	}
	if icmpErr {
		f.C.ICMPErrorsForwarded++
	}
	// An IPv4 envelope around IPv6 has DF set: IPv6 is never fragmented
	// on the path (RFC 4213, section 3.2).
	f.rewrite(svc, b, p, start, l3, tot, ip.TrafficClass(), IPv4FlagDF, h)
	return VerdictTx, b.Port, DropNone
}

// fillOuter6 writes the per-packet fields of an outer IPv6 header o whose
// other fields come from a template: version 6, traffic class tc copied
// from the inner packet, the flow label (the low 20 bits of the flow's
// hash: one label per flow, RFC 6438) and payload length n.
func fillOuter6(o *[IPv6HeaderSize]byte, tc uint8, hash uint32, n int) {
	binary.BigEndian.PutUint32(o[ipv6VersTCFlow:], 6<<28|uint32(tc)<<20|hash&0xfffff)
	binary.BigEndian.PutUint16(o[ipv6PayloadLen:], uint16(n))
}

// packetTooBig turns p into an ICMPv6 Packet Too Big (RFC 4443, section
// 3.2) to the client with mtu, what fits through the service's envelope
// (never below 1280: RFC 8201, section 4), quoting as much of the packet as
// fits an ICMPv6 error of 1280 bytes (RFC 4443, section 2.4 (c)). The
// quote stays where it is; the new headers go in front, in the headroom.
// It goes back out of the receiving port to the MAC the packet came from,
// on the packet's VLAN (l3 = 18: the tag is copied as received), from the
// port's IPv6 address, or the VIP on a port without one. Over the
// worker's rate of ICMP errors, shared with fragNeeded, the packet is
// dropped instead (icmp_error_limit).
func (f *Forwarder) packetTooBig(s *Snapshot, p *packet.Packet, l3 int, ip IPv6, mtu, rxPort int) (Verdict, int, DropReason) {
	const hdrs = IPv6HeaderSize + ICMPSize
	quote := min(len(ip), IPv6MinMTU-hdrs)
	start := p.Off - hdrs
	if start < 0 || rxPort >= len(s.Ports) {
		return VerdictDrop, 0, DropTooBig
	}
	if !f.icmpErrorAllowed(s) {
		return VerdictDrop, 0, DropICMPErrorLimit
	}
	frame := p.Buf[p.Off:]
	var srcMAC MAC
	copy(srcMAC[:], frame[6:12])
	client, vip := ip.Src(), ip.Dst()
	rx := &s.Ports[rxPort]
	src := rx.IP6
	if src == ([16]byte{}) {
		src = vip
	}
	out := p.Buf[start : p.Off+l3+quote]
	// out[:l3] lies before the received header: the tag is read before the
	// IPv6 and ICMPv6 headers overwrite it.
	copy(out[0:6], srcMAC[:])
	copy(out[6:12], rx.MAC[:])
	copy(out[12:l3-2], frame[12:l3-2])
	binary.BigEndian.PutUint16(out[l3-2:], EtherTypeIPv6)
	o := out[l3:]
	binary.BigEndian.PutUint32(o[ipv6VersTCFlow:], 6<<28)
	binary.BigEndian.PutUint16(o[ipv6PayloadLen:], uint16(ICMPSize+quote))
	o[ipv6NextHeader] = ProtoICMPv6
	o[ipv6HopLimit] = outerTTL
	copy(o[ipv6Src:], src[:])
	copy(o[ipv6Dst:], client[:])
	c := o[IPv6HeaderSize:]
	c[0], c[1] = ICMPv6PacketTooBig, 0
	binary.BigEndian.PutUint16(c[2:], 0)
	binary.BigEndian.PutUint32(c[4:], uint32(max(mtu, IPv6MinMTU)))
	binary.BigEndian.PutUint16(c[2:], Checksum(c[:ICMPSize+quote], pseudoSum6(o, ProtoICMPv6, ICMPSize+quote)))
	p.Off = start
	p.Len = len(out)
	f.C.PacketTooBigSent++
	return VerdictTx, rxPort, DropNone
}
