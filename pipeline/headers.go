// Package pipeline is the dsrlb fast path, in pure Go: header views over
// packet bytes, the flow key and its hash, Maglev tables, the flow table, the
// L2 / IPIP / GRE rewriters, verdicts with drop reasons, per-lcore counters
// and the burst worker loop.
//
// It imports nothing of ours but pipeline/packet and builds without DPDK:
// packets are byte slices with headroom (packet.Packet), ports are the small
// packet.Port interface that package dpdk implements and tests fake.
//
// Invariants of everything reachable from Worker.Poll: no allocation, no
// lock, no error value, no logging per packet.
package pipeline

import "encoding/binary"

// Ethernet header (IEEE 802.3):
//
//	 0                   1                   2                   3
//	+-----------------------------------------------------------------+
//	|                 destination MAC (6)   |    source MAC (6)       |
//	+-----------------------------------------------------------------+
//	| EtherType (2) | payload ...
//
// An 802.1Q tag inserts 4 bytes (TPID 0x8100, TCI) before the EtherType.
const (
	EthernetMinSize = 14
	VLANTagSize     = 4

	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100
	EtherTypeIPv6 = 0x86DD
)

// MAC is an Ethernet address.
type MAC [6]byte

// String formats m as colon-separated hex, for logs and the API.
func (m MAC) String() string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, x := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[x>>4], hex[x&15])
	}
	return string(b)
}

// IsZero reports whether m is 00:00:00:00:00:00 (unknown).
func (m MAC) IsZero() bool { return m == MAC{} }

// Ethernet is a view of an Ethernet header.
type Ethernet []byte

// Dst returns the destination MAC.
func (e Ethernet) Dst() (m MAC) { copy(m[:], e[0:6]); return }

// Src returns the source MAC.
func (e Ethernet) Src() (m MAC) { copy(m[:], e[6:12]); return }

// IPv4 header (RFC 791, section 3.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	IPv4MinSize = 20

	ipv4VersIHL   = 0
	ipv4TOS       = 1
	ipv4TotalLen  = 2
	ipv4ID        = 4
	ipv4FlagsFrag = 6
	ipv4TTL       = 8
	ipv4Protocol  = 9
	ipv4Checksum  = 10
	ipv4Src       = 12
	ipv4Dst       = 16

	// IPv4FlagDF is the Don't Fragment bit of the flags/fragment field.
	IPv4FlagDF = 0x4000
	// IPv4FlagMF is the More Fragments bit.
	IPv4FlagMF = 0x2000
	// IPv4FragOffMask masks the fragment offset (in 8-byte units).
	IPv4FragOffMask = 0x1fff

	ProtoICMP = 1
	ProtoIPIP = 4
	ProtoTCP  = 6
	ProtoUDP  = 17
	ProtoGRE  = 47
)

// IPv4 is a view of an IPv4 header. Accessors assume the caller validated
// the length once (see parse).
type IPv4 []byte

// Version returns the IP version nibble.
func (ip IPv4) Version() uint8 { return ip[ipv4VersIHL] >> 4 }

// HeaderLen returns the header length in bytes (IHL x 4).
func (ip IPv4) HeaderLen() int { return int(ip[ipv4VersIHL]&0xf) * 4 }

// TOS returns the type-of-service byte (DSCP and ECN).
func (ip IPv4) TOS() uint8 { return ip[ipv4TOS] }

// TotalLen returns the total length field.
func (ip IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(ip[ipv4TotalLen:]) }

// ID returns the identification field.
func (ip IPv4) ID() uint16 { return binary.BigEndian.Uint16(ip[ipv4ID:]) }

// FlagsFrag returns the flags and fragment offset field.
func (ip IPv4) FlagsFrag() uint16 { return binary.BigEndian.Uint16(ip[ipv4FlagsFrag:]) }

// TTL returns the time to live.
func (ip IPv4) TTL() uint8 { return ip[ipv4TTL] }

// Protocol returns the payload protocol number.
func (ip IPv4) Protocol() uint8 { return ip[ipv4Protocol] }

// Checksum returns the header checksum field.
func (ip IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(ip[ipv4Checksum:]) }

// Src returns the source address.
func (ip IPv4) Src() (a [4]byte) { copy(a[:], ip[ipv4Src:ipv4Src+4]); return }

// Dst returns the destination address.
func (ip IPv4) Dst() (a [4]byte) { copy(a[:], ip[ipv4Dst:ipv4Dst+4]); return }

// SrcU32 returns the source address as a big-endian integer.
func (ip IPv4) SrcU32() uint32 { return binary.BigEndian.Uint32(ip[ipv4Src:]) }

// DstU32 returns the destination address as a big-endian integer.
func (ip IPv4) DstU32() uint32 { return binary.BigEndian.Uint32(ip[ipv4Dst:]) }

// TCP header (RFC 9293, section 3.1): ports at 0 and 2, the sequence
// number at 4, data offset in the high nibble of byte 12, flags in byte 13,
// the checksum at 16. UDP header (RFC 768): ports, length at 4, checksum at
// 6.
const (
	TCPMinSize = 20
	UDPSize    = 8
	ICMPSize   = 8

	tcpSeqOff      = 4
	tcpFlagsOff    = 13
	tcpChecksumOff = 16
	udpChecksumOff = 6

	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
	TCPFlagCWR = 0x80

	ICMPEchoReply       = 0
	ICMPDestUnreachable = 3
	ICMPEchoRequest     = 8
	ICMPTimeExceeded    = 11
	// ICMPFragNeeded is the code of "fragmentation needed and DF set"
	// (RFC 792, RFC 1191).
	ICMPFragNeeded = 4
)

// Ports is a view of the first four bytes of a TCP or UDP header.
type Ports []byte

// Src returns the source port.
func (p Ports) Src() uint16 { return binary.BigEndian.Uint16(p[0:]) }

// Dst returns the destination port.
func (p Ports) Dst() uint16 { return binary.BigEndian.Uint16(p[2:]) }

// TCP is a view of a TCP header.
type TCP []byte

// DataOffset returns the header length in bytes.
func (t TCP) DataOffset() int { return int(t[12]>>4) * 4 }

// Flags returns the control bits.
func (t TCP) Flags() uint8 { return t[13] }

// ICMP is a view of an ICMPv4 header.
type ICMP []byte

// Type returns the ICMP type.
func (c ICMP) Type() uint8 { return c[0] }

// Code returns the ICMP code.
func (c ICMP) Code() uint8 { return c[1] }

// Checksum computes the Internet checksum (RFC 1071) of b, folded and
// complemented, seeded with the partial sum initial.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, initial))
}

// sum adds b as big-endian 16-bit words to s without folding.
func sum(b []byte, s uint32) uint32 {
	n := len(b)
	i := 0
	for ; i+8 <= n; i += 8 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
		s += uint32(b[i+2])<<8 | uint32(b[i+3])
		s += uint32(b[i+4])<<8 | uint32(b[i+5])
		s += uint32(b[i+6])<<8 | uint32(b[i+7])
	}
	for ; i+1 < n; i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if i < n {
		s += uint32(b[i]) << 8
	}
	return s
}

// pseudoSum returns the unfolded sum of the IPv4 pseudo-header that the
// TCP and UDP checksums cover (RFC 9293 section 3.1, RFC 768): ip's source
// and destination addresses, its protocol and the L4 length n.
func pseudoSum(ip IPv4, n int) uint32 {
	src, dst := ip.SrcU32(), ip.DstU32()
	return src>>16 + src&0xffff + dst>>16 + dst&0xffff + uint32(ip.Protocol()) + uint32(n)
}

// fold reduces a 32-bit one's-complement sum to 16 bits.
func fold(s uint32) uint16 {
	s = (s >> 16) + (s & 0xffff)
	s += s >> 16
	return uint16(s)
}
