// Package testpkt builds readable test packets (Ethernet, optional 802.1Q,
// IPv4 or IPv6 with valid checksums, TCP, UDP, ICMP, ICMPv6) for tests,
// golden captures and the benchmark generator. It favours clarity over
// speed.
package testpkt

import (
	"encoding/binary"
	"net/netip"
)

// Packet describes one frame to build. Zero values get sensible defaults.
type Packet struct {
	SrcMAC, DstMAC [6]byte
	VLAN           uint16     // 802.1Q TCI (PCP<<13 | DEI<<12 | VID) of a tag after the MACs; 0: untagged
	Src, Dst       netip.Addr // IPv6 addresses make an IPv6 packet
	Proto          uint8      // 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6
	SrcPort        uint16
	DstPort        uint16
	TCPFlags       uint8 // default ACK
	TTL            uint8 // default 64; the hop limit of IPv6
	TOS            uint8 // the traffic class of IPv6
	DF             bool
	ID             uint16
	FragOff        uint16 // in 8-byte units
	MoreFrags      bool
	Options        []byte // IPv4 options, padded to 4 bytes by the caller
	ICMPType       uint8
	ICMPCode       uint8
	Payload        []byte
	// PadTo pads the frame with zeros to at least this many bytes
	// (Ethernet minimum 60 without FCS).
	PadTo int
	// PartialChecksum leaves the TCP or UDP checksum as a sending kernel
	// does when a NIC is to finish it (CHECKSUM_PARTIAL): the folded
	// pseudo-header sum, not complemented.
	PartialChecksum bool
	// Seq is the TCP sequence number; default 1000.
	Seq uint32
	// FlowLabel is the IPv6 flow label.
	FlowLabel uint32
	// Ext6 are IPv6 extension headers, in order, after the fixed header.
	Ext6 []Ext6
}

// Ext6 is one IPv6 extension header (RFC 8200, section 4): its type
// (0 hop-by-hop, 43 routing, 44 fragment, 60 destination options) and
// the bytes after its next-header byte (a length byte first, but for a
// fragment header), which Build chains.
type Ext6 struct {
	Type uint8
	Body []byte
}

// Options6 returns hop-by-hop or destination options of n*8 bytes in all
// (n >= 1), padded with PadN.
func Options6(typ uint8, n int) Ext6 {
	b := make([]byte, n*8-1)
	b[0] = byte(n - 1)
	b[1], b[2] = 1, byte(len(b)-3) // PadN over the rest
	return Ext6{Type: typ, Body: b}
}

// Build returns the frame bytes.
func (p Packet) Build() []byte {
	var l4 []byte
	switch p.Proto {
	case 6:
		l4 = make([]byte, 20+len(p.Payload))
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		seq := p.Seq
		if seq == 0 {
			seq = 1000
		}
		binary.BigEndian.PutUint32(l4[4:], seq)
		l4[12] = 5 << 4
		l4[13] = p.TCPFlags
		if p.TCPFlags == 0 {
			l4[13] = 0x10
		}
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], p.Payload)
	case 17:
		l4 = make([]byte, 8+len(p.Payload))
		binary.BigEndian.PutUint16(l4[0:], p.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], p.DstPort)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], p.Payload)
	case 1, 58:
		l4 = make([]byte, 8+len(p.Payload))
		l4[0], l4[1] = p.ICMPType, p.ICMPCode
		copy(l4[8:], p.Payload)
		if p.Proto == 1 {
			binary.BigEndian.PutUint16(l4[2:], checksum(l4, 0))
		}
	default:
		l4 = append([]byte(nil), p.Payload...)
	}
	if p.Src.Is6() {
		return p.build6(l4)
	}
	ihl := 20 + len(p.Options)
	ip := make([]byte, ihl+len(l4))
	ip[0] = 0x40 | byte(ihl/4)
	ip[1] = p.TOS
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], p.ID)
	ff := p.FragOff & 0x1fff
	if p.DF {
		ff |= 0x4000
	}
	if p.MoreFrags {
		ff |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], ff)
	ip[8] = p.TTL
	if p.TTL == 0 {
		ip[8] = 64
	}
	ip[9] = p.Proto
	s, d := p.Src.As4(), p.Dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	copy(ip[20:], p.Options)
	binary.BigEndian.PutUint16(ip[10:], checksum(ip[:ihl], 0))
	copy(ip[ihl:], l4)
	if p.Proto == 6 || p.Proto == 17 {
		ph := pseudo(s, d, p.Proto, len(l4))
		off := 16
		if p.Proto == 17 {
			off = 6
		}
		c := checksum(l4, ph)
		if p.Proto == 17 && c == 0 {
			c = 0xffff
		}
		if p.PartialChecksum {
			c = ^checksum(nil, ph)
		}
		binary.BigEndian.PutUint16(ip[ihl+off:], c)
	}
	return p.frame(0x0800, ip)
}

// frame puts the Ethernet header (and tag) in front of the IP packet ip.
func (p Packet) frame(etherType uint16, ip []byte) []byte {
	var eth []byte
	eth = append(eth, p.DstMAC[:]...)
	eth = append(eth, p.SrcMAC[:]...)
	if p.VLAN != 0 {
		eth = append(eth, 0x81, 0x00, byte(p.VLAN>>8), byte(p.VLAN))
	}
	eth = append(eth, byte(etherType>>8), byte(etherType))
	f := append(eth, ip...)
	for len(f) < p.PadTo {
		f = append(f, 0)
	}
	return f
}

// build6 builds the IPv6 frame around the upper layer l4 (checksum
// field zero).
func (p Packet) build6(l4 []byte) []byte {
	var ext []byte
	next := p.Proto
	for i := len(p.Ext6) - 1; i >= 0; i-- {
		e := p.Ext6[i]
		ext = append(append([]byte{next}, e.Body...), ext...)
		next = e.Type
	}
	ip := make([]byte, 40, 40+len(ext)+len(l4))
	binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(p.TOS)<<20|p.FlowLabel&0xfffff)
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(l4)))
	ip[6] = next
	ip[7] = p.TTL
	if p.TTL == 0 {
		ip[7] = 64
	}
	s, d := p.Src.As16(), p.Dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	ip = append(append(ip, ext...), l4...)
	up := ip[40+len(ext):]
	off := -1
	switch p.Proto {
	case 6:
		off = 16
	case 17:
		off = 6
	case 58:
		off = 2
	}
	if off >= 0 && len(up) >= off+2 {
		ph := Pseudo6(s, d, p.Proto, len(up))
		c := checksum(up, ph)
		if p.Proto == 17 && c == 0 {
			c = 0xffff
		}
		if p.PartialChecksum {
			c = ^checksum(nil, ph)
		}
		binary.BigEndian.PutUint16(up[off:], c)
	}
	return p.frame(0x86DD, ip)
}

// Pseudo6 returns the unfolded sum of the IPv6 pseudo-header (RFC 8200,
// section 8.1) of an upper layer proto, n bytes long.
func Pseudo6(s, d [16]byte, proto uint8, n int) uint32 {
	var x uint32
	for i := 0; i < 16; i += 2 {
		x += uint32(s[i])<<8 | uint32(s[i+1])
		x += uint32(d[i])<<8 | uint32(d[i+1])
	}
	return x + uint32(proto) + uint32(n>>16) + uint32(n&0xffff)
}

// Checksum returns the Internet checksum (RFC 1071) of b seeded with the
// unfolded sum s.
func Checksum(b []byte, s uint32) uint16 { return checksum(b, s) }

func pseudo(s, d [4]byte, proto uint8, n int) uint32 {
	var x uint32
	x += uint32(s[0])<<8 | uint32(s[1])
	x += uint32(s[2])<<8 | uint32(s[3])
	x += uint32(d[0])<<8 | uint32(d[1])
	x += uint32(d[2])<<8 | uint32(d[3])
	x += uint32(proto) + uint32(n)
	return x
}

func checksum(b []byte, s uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
