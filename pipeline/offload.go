package pipeline

import "encoding/binary"

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
	if ip.FlagsFrag()&(IPv4FlagMF|IPv4FragOffMask) != 0 ||
		binary.BigEndian.Uint16(l4[off:]) != fold(pseudoSum(ip, len(l4))) {
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
// only, so other ports pay one test per burst.
func offloaded(pkts []Packet, hinted uint32, mtu int) uint32 {
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
