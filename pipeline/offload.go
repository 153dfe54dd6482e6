package pipeline

import (
	"encoding/binary"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Frames a local kernel left unfinished.
//
// A port that reads a kernel interface (net_af_packet on a veth) receives
// the kernel's socket buffers as they are, before the offloads a NIC would
// have run: with the peers' default offloads a TCP or UDP checksum field
// holds only the pseudo-header sum (CHECKSUM_PARTIAL: the NIC was to add
// the payload), and a TCP segment may be a GSO or GRO super-frame of up to
// 64 KB that the NIC was to cut at the MSS. Such ports have
// PortState.PartialChecksums set; process completes the checksums of the
// packets it forwards or hands to the kernel (completeL4).

// completeL4 completes the TCP or UDP checksum of ip, a validated IPv4
// packet with an ihl-byte header trimmed to its total length, when the
// field holds the folded pseudo-header sum (not complemented, as Linux
// leaves it for CHECKSUM_PARTIAL): the checksum over the L4 bytes as they
// are then covers the pseudo-header through that field (RFC 1071). A
// complete checksum that happens to equal the pseudo-header sum is
// recomputed to the same value, so the test is safe. A UDP field of 0 (no
// checksum) is never a pseudo-header sum and stays; a computed UDP
// checksum of 0 is sent as 0xffff (RFC 768). Fragments are left alone: the
// kernel completes a checksum before it fragments.
func (f *Forwarder) completeL4(ip IPv4, ihl int) {
	l4 := ip[ihl:]
	off := tcpChecksumOff
	switch ip.Protocol() {
	case ProtoTCP:
		if len(l4) < TCPMinSize {
			return
		}
	case ProtoUDP:
		if len(l4) < UDPSize {
			return
		}
		off = udpChecksumOff
	default:
		return
	}
	if ip.FlagsFrag()&(IPv4FlagMF|IPv4FragOffMask) != 0 {
		return
	}
	f.completeSum(l4, off, pseudoSum(ip, len(l4)))
}

// completeL4v6 is completeL4 for the IPv6 packet ip, whose upper layer
// proto starts at off (after the extension headers): the TCP or UDP
// checksum over the IPv6 pseudo-header. A UDP checksum of 0 is invalid in
// IPv6 (RFC 8200, section 8.1) and is left to the receiver to drop.
func (f *Forwarder) completeL4v6(ip IPv6, proto uint8, off int) {
	l4 := ip[off:]
	switch {
	case proto == ProtoTCP && len(l4) >= TCPMinSize:
		f.completeSum(l4, tcpChecksumOff, pseudoSum6(ip, proto, len(l4)))
	case proto == ProtoUDP && len(l4) >= UDPSize:
		f.completeSum(l4, udpChecksumOff, pseudoSum6(ip, proto, len(l4)))
	}
}

// completeSum writes the checksum of l4 into its field at off when the
// field holds the folded pseudo-header sum ps (completeL4).
func (f *Forwarder) completeSum(l4 []byte, off int, ps uint32) {
	if binary.BigEndian.Uint16(l4[off:]) != fold(ps) {
		return
	}
	c := Checksum(l4, 0)
	if c == 0 && off == udpChecksumOff {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
	f.C.L4ChecksumsCompleted++
}

// offloaded returns, among the packets of a burst classify hashed (its
// mask hinted: untagged IPv4 without options, TCP or UDP), those fastPath
// must leave to process on a port with partial checksums: a checksum field
// equal to the pseudo-header sum (completeL4) or an IP packet longer than
// the port's MTU (a super-frame). Worker.burst calls it for such ports
// only (Snapshot.partialChecksums).
func offloaded(pkts []packet.Packet, hinted uint32, mtu int) uint32 {
	var m uint32
	for i := range pkts {
		if hinted&(1<<uint(i)) == 0 {
			continue
		}
		p := &pkts[i]
		frame := p.Buf[p.Off : p.Off+p.Len]
		ip := IPv4(frame[EthernetMinSize:])
		tot := int(ip.TotalLen())
		off := IPv4MinSize + udpChecksumOff
		if ip.Protocol() == ProtoTCP {
			off = IPv4MinSize + tcpChecksumOff
		}
		if tot > mtu {
			m |= 1 << uint(i)
		} else if off+2 <= len(ip) && tot >= off+2 &&
			binary.BigEndian.Uint16(ip[off:]) == fold(pseudoSum(ip, tot-IPv4MinSize)) {
			m |= 1 << uint(i)
		}
	}
	return m
}

// maxSegments bounds the segments of one super-frame: 64 KB cut at the
// smallest MSS a 576-byte MTU leaves with both headers at their longest
// (60 bytes each) is 144 segments.
const maxSegments = 160

// superframe is a TCP super-frame process left to the worker to cut:
// frame offsets and the size of the pieces.
type superframe struct {
	l3, ihl, thl int // the IP header at l3, ihl long; the TCP header, thl
	// v6: the IP header is IPv6, ihl long with its extension headers.
	v6  bool
	tot int // the IP total length
	mss int // payload bytes per segment
	n   int // segments
}

// dropSuperframe drops a super-frame dsrlb cannot segment and flags its
// port (Counters.SuperframePorts) for the one log line that names the
// peer setting to change.
func (f *Forwarder) dropSuperframe(rxPort int) (Verdict, int, DropReason) {
	if rxPort >= 0 && rxPort < 64 {
		f.C.SuperframePorts |= 1 << uint(rxPort)
	}
	return VerdictDrop, 0, DropSuperframe
}

// superframe decides ip (validated, trimmed to its total length, after
// an l3-byte link header), a packet longer than the receiving port's MTU:
// the GSO or GRO super-frame of a peer's kernel, or a datagram its kernel
// reassembled. TCP is cut (by the worker, see Worker.segment) into
// segments that fit both the receiving port's mtu and segMax, the longest
// IP packet the egress side takes (verdictSegment, with f.seg set),
// or dropped when there is no allocator or the segment would not fit a
// buffer; a UDP GSO frame (its checksum still partial) is dropped, as
// datagram boundaries are lost. ok is false for anything else, which
// process forwards by the usual rules.
func (f *Forwarder) superframe(ip IPv4, ihl, l3, mtu, segMax, rxPort int) (v Verdict, r DropReason, ok bool) {
	if ip.FlagsFrag()&(IPv4FlagMF|IPv4FragOffMask) != 0 {
		return 0, 0, false
	}
	return f.superframeL4(ip, ihl, ip.Protocol(), pseudoSum(ip, len(ip)-ihl), false, l3, mtu, segMax, rxPort)
}

// superframe6 is superframe for the IPv6 packet ip, whose upper layer
// proto starts at off.
func (f *Forwarder) superframe6(ip IPv6, off int, proto uint8, l3, mtu, segMax, rxPort int) (v Verdict, r DropReason, ok bool) {
	return f.superframeL4(ip, off, proto, pseudoSum6(ip, proto, len(ip)-off), true, l3, mtu, segMax, rxPort)
}

// superframeL4 is superframe past the IP header (ihl long, of either
// family: v6), whose upper layer is proto and pseudo-header sum ps.
func (f *Forwarder) superframeL4(ip []byte, ihl int, proto uint8, ps uint32, v6 bool, l3, mtu, segMax, rxPort int) (v Verdict, r DropReason, ok bool) {
	l4 := ip[ihl:]
	switch proto {
	case ProtoUDP:
		if len(l4) < UDPSize || binary.BigEndian.Uint16(l4[udpChecksumOff:]) != fold(ps) {
			return 0, 0, false
		}
		v, _, r := f.dropSuperframe(rxPort)
		return v, r, true
	case ProtoTCP:
	default:
		return 0, 0, false
	}
	if len(l4) < TCPMinSize {
		return 0, 0, false
	}
	thl := TCP(l4).DataOffset()
	if thl < TCPMinSize || thl > len(l4) || TCP(l4).Flags()&(TCPFlagSYN|TCPFlagRST) != 0 || f.alloc == nil {
		v, _, r := f.dropSuperframe(rxPort)
		return v, r, true
	}
	mss := min(mtu, segMax, f.alloc.FrameRoom()-l3) - ihl - thl
	payload := len(l4) - thl
	if mss < 8 || payload <= 0 || (payload+mss-1)/mss > maxSegments {
		v, _, r := f.dropSuperframe(rxPort)
		return v, r, true
	}
	f.seg = superframe{l3: l3, ihl: ihl, thl: thl, v6: v6, tot: len(ip), mss: mss, n: (payload + mss - 1) / mss}
	return verdictSegment, DropNone, true
}

// cut writes the segments of super-frame p (f.seg, from process) into
// segs, len(segs) == f.seg.n, as the sender's NIC would have (TCP
// segmentation offload): each the link, IP and TCP headers of p with at
// most mss bytes of its payload in order; IPv4 total length, ID + i and
// header checksum, or IPv6 payload length; sequence number + i*mss; CWR
// only on the first, FIN and PSH only on the last; a complete TCP
// checksum. It reports false, writing nothing, if a buffer is too short.
func (f *Forwarder) cut(p *packet.Packet, segs []packet.Packet) bool {
	sf := &f.seg
	frame := p.Buf[p.Off : p.Off+p.Len]
	hlen := sf.l3 + sf.ihl + sf.thl
	hdr := frame[:hlen]
	payload := frame[hlen : sf.l3+sf.tot]
	for i := range segs {
		if s := &segs[i]; s.Off < 0 || len(s.Buf)-s.Off < hlen+sf.mss {
			return false
		}
	}
	ip := IPv4(hdr[sf.l3:])
	var id uint16
	if !sf.v6 {
		id = ip.ID()
	}
	seq := binary.BigEndian.Uint32(hdr[sf.l3+sf.ihl+tcpSeqOff:])
	flags := hdr[sf.l3+sf.ihl+tcpFlagsOff]
	last := len(segs) - 1
	for i := range segs {
		s := &segs[i]
		chunk := payload[i*sf.mss : min((i+1)*sf.mss, len(payload))]
		d := s.Buf[s.Off : s.Off+hlen+len(chunk)]
		copy(d, hdr)
		copy(d[hlen:], chunk)
		s.Len = len(d)
		sip := IPv4(d[sf.l3:])
		tcp := sip[sf.ihl:]
		if sf.v6 {
			binary.BigEndian.PutUint16(sip[ipv6PayloadLen:], uint16(sf.ihl-IPv6HeaderSize+sf.thl+len(chunk)))
		} else {
			binary.BigEndian.PutUint16(sip[ipv4TotalLen:], uint16(sf.ihl+sf.thl+len(chunk)))
			binary.BigEndian.PutUint16(sip[ipv4ID:], id+uint16(i))
			binary.BigEndian.PutUint16(sip[ipv4Checksum:], 0)
			binary.BigEndian.PutUint16(sip[ipv4Checksum:], Checksum(sip[:sf.ihl], 0))
		}
		binary.BigEndian.PutUint32(tcp[tcpSeqOff:], seq+uint32(i*sf.mss))
		fl := flags
		if i > 0 {
			fl &^= TCPFlagCWR
		}
		if i < last {
			fl &^= TCPFlagFIN | TCPFlagPSH
		}
		tcp[tcpFlagsOff] = fl
		binary.BigEndian.PutUint16(tcp[tcpChecksumOff:], 0)
		ps := pseudoSum(sip, len(tcp))
		if sf.v6 {
			ps = pseudoSum6(IPv6(sip), ProtoTCP, len(tcp))
		}
		binary.BigEndian.PutUint16(tcp[tcpChecksumOff:], Checksum(tcp, ps))
	}
	return true
}
