package pipeline

import "encoding/binary"

// IPv6 header (RFC 8200, section 3):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Traffic Class |           Flow Label                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Payload Length        |  Next Header  |   Hop Limit   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                   Source Address (128 bits)                   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                Destination Address (128 bits)                 |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	IPv6HeaderSize = 40

	ipv6VersTCFlow = 0
	ipv6PayloadLen = 4
	ipv6NextHeader = 6
	ipv6HopLimit   = 7
	ipv6Src        = 8
	ipv6Dst        = 24

	// IPv6MinMTU is the smallest link MTU IPv6 allows (RFC 8200, section
	// 5): a Packet Too Big never asks for less, and an ICMPv6 error is at
	// most this long (RFC 4443, section 2.4 (c)).
	IPv6MinMTU = 1280

	// Next-header values (IANA "Assigned Internet Protocol Numbers").
	ProtoHopByHop = 0
	ProtoIPv6     = 41 // IPv6 in IP: 6in4 (RFC 4213), IPv6 in IPv6 (RFC 2473)
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDstOpts  = 60

	// ICMPv6 types (RFC 4443, RFC 4861). Types below 128 are errors.
	ICMPv6DestUnreachable = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6TimeExceeded    = 3
	ICMPv6ParamProblem    = 4
	ICMPv6EchoRequest     = 128
	ICMPv6EchoReply       = 129

	// maxExtHeaders bounds the extension headers walked before the
	// upper-layer header of a VIP packet; a longer chain is dropped.
	maxExtHeaders = 8
)

// IPv6 is a view of an IPv6 header. Accessors assume the caller validated
// the length once (see process6).
type IPv6 []byte

// Version returns the IP version nibble.
func (ip IPv6) Version() uint8 { return ip[ipv6VersTCFlow] >> 4 }

// TrafficClass returns the traffic class byte (DSCP and ECN).
func (ip IPv6) TrafficClass() uint8 { return ip[0]<<4 | ip[1]>>4 }

// FlowLabel returns the 20-bit flow label.
func (ip IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(ip[0:]) & 0xfffff }

// PayloadLen returns the payload length field: the bytes after the fixed
// header, extension headers included.
func (ip IPv6) PayloadLen() uint16 { return binary.BigEndian.Uint16(ip[ipv6PayloadLen:]) }

// NextHeader returns the type of the header after the fixed one.
func (ip IPv6) NextHeader() uint8 { return ip[ipv6NextHeader] }

// HopLimit returns the hop limit.
func (ip IPv6) HopLimit() uint8 { return ip[ipv6HopLimit] }

// Src returns the source address.
func (ip IPv6) Src() (a [16]byte) { copy(a[:], ip[ipv6Src:ipv6Src+16]); return }

// Dst returns the destination address.
func (ip IPv6) Dst() (a [16]byte) { copy(a[:], ip[ipv6Dst:ipv6Dst+16]); return }

// pseudoSum6 returns the unfolded sum of the IPv6 pseudo-header that the
// TCP, UDP and ICMPv6 checksums cover (RFC 8200, section 8.1): ip's source
// and destination addresses, the upper-layer length n and next header
// proto.
func pseudoSum6(ip IPv6, proto uint8, n int) uint32 {
	return sum(ip[ipv6Src:ipv6Dst+16], 0) + uint32(proto) + uint32(n>>16) + uint32(n&0xffff)
}

// upperLayer6 walks the extension headers of ip (a validated IPv6 packet,
// trimmed to its payload length) and returns the upper-layer protocol and
// its offset in ip. What it passes over is forwarded unchanged inside the
// envelope: hop-by-hop and destination options, a routing header with no
// segments left (the VIP is its final destination), and an atomic
// fragment (offset 0, no more fragments: RFC 6946 treats it as a whole
// packet). r is DropFragment for a real fragment, and DropExtHeader for a
// routing header with segments left (the packet is not addressed to the
// VIP in the end), a header it cannot read (truncated), or a chain longer
// than maxExtHeaders. AH and ESP are returned as upper layers: they hide
// the ports, so no service takes them.
func upperLayer6(ip []byte) (proto uint8, off int, r DropReason) {
	proto, off = ip[ipv6NextHeader], IPv6HeaderSize
	for range maxExtHeaders {
		switch proto {
		case ProtoHopByHop, ProtoDstOpts, ProtoRouting:
			if off+8 > len(ip) {
				return 0, 0, DropExtHeader
			}
			if proto == ProtoRouting && ip[off+3] != 0 { // segments left
				return 0, 0, DropExtHeader
			}
			n := (int(ip[off+1]) + 1) * 8
			if off+n > len(ip) {
				return 0, 0, DropExtHeader
			}
			proto, off = ip[off], off+n
		case ProtoFragment:
			if off+8 > len(ip) {
				return 0, 0, DropExtHeader
			}
			if binary.BigEndian.Uint16(ip[off+2:])&0xfff9 != 0 { // offset or M
				return 0, 0, DropFragment
			}
			proto, off = ip[off], off+8
		default:
			return proto, off, DropNone
		}
	}
	return 0, 0, DropExtHeader
}

// isICMPv6Error reports whether ICMPv6 type t is an error about a packet
// that quotes it (RFC 4443, section 2.1: types below 128).
func isICMPv6Error(t uint8) bool {
	return t == ICMPv6DestUnreachable || t == ICMPv6PacketTooBig || t == ICMPv6TimeExceeded || t == ICMPv6ParamProblem
}
