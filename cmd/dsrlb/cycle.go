package main

import (
	"encoding/binary"

	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// flowCycler is the rx side of one queue of a bench port whose capture is
// replayed in a loop (net_pcap infinite_rx hands out copies of the
// capture's packets, in order, forever): it adds the number of the current
// pass over the capture, modulo passes, to every received packet's client
// (source) port, so that a capture of F flows is seen as F times passes
// distinct flows without a capture, and an mbuf pool, that large. With
// passes 1 it does the same work per packet and changes nothing: a run
// with 1 and a run with 16 differ only in the number of flows.
//
// The flows stay distinct when the capture's flows differ in their
// client address or their client ports are at least passes apart (`dsrlb
// gen` captures of up to 2^17 flows all use port 1024).
type flowCycler struct {
	// The pads keep each worker's cycler, written per packet, off the
	// cache lines of the others (allocated side by side).
	_ [64]byte
	packet.Port
	period int    // the capture's packets on this queue
	left   int    // packets left in the current pass
	pass   uint16 // the current pass, 0 to passes-1
	passes uint16
	_      [64]byte
}

// newFlowCycler wraps port's queue whose capture holds period packets.
func newFlowCycler(port packet.Port, period int, passes uint16) *flowCycler {
	return &flowCycler{Port: port, period: period, left: period, passes: max(passes, 1)}
}

// RxBurst receives from the wrapped port, then moves each packet's client
// port by the pass it belongs to.
func (c *flowCycler) RxBurst(q uint16, pkts []packet.Packet) int {
	n := c.Port.RxBurst(q, pkts)
	for i := range pkts[:n] {
		if c.left == 0 {
			c.left = c.period
			if c.pass++; c.pass == c.passes {
				c.pass = 0
			}
		}
		c.left--
		shiftClientPort(pkts[i].Data(), c.pass)
	}
	return n
}

// shiftClientPort adds d to the source port of an untagged IPv4 or IPv6
// TCP or UDP frame and updates its checksum to match (RFC 1624); other
// frames are left alone.
func shiftClientPort(b []byte, d uint16) {
	if len(b) < pipeline.EthernetMinSize {
		return
	}
	var proto uint8
	var l4 []byte
	v4 := false
	switch binary.BigEndian.Uint16(b[12:]) {
	case pipeline.EtherTypeIPv4:
		ip := pipeline.IPv4(b[pipeline.EthernetMinSize:])
		if len(ip) < pipeline.IPv4MinSize || len(ip) < ip.HeaderLen() {
			return
		}
		proto, l4, v4 = ip.Protocol(), ip[ip.HeaderLen():], true
	case pipeline.EtherTypeIPv6:
		ip := pipeline.IPv6(b[pipeline.EthernetMinSize:])
		if len(ip) < pipeline.IPv6HeaderSize {
			return
		}
		proto, l4 = ip.NextHeader(), ip[pipeline.IPv6HeaderSize:]
	default:
		return
	}
	var sumAt int
	switch proto {
	case pipeline.ProtoTCP:
		sumAt = 16
	case pipeline.ProtoUDP:
		sumAt = 6
	default:
		return
	}
	if len(l4) < sumAt+2 {
		return
	}
	old := binary.BigEndian.Uint16(l4)
	binary.BigEndian.PutUint16(l4, old+d)
	c := binary.BigEndian.Uint16(l4[sumAt:])
	if proto == pipeline.ProtoUDP && v4 && c == 0 {
		return // no checksum (RFC 768)
	}
	c = checksumReplace(c, old, old+d)
	if proto == pipeline.ProtoUDP && c == 0 {
		c = 0xffff // a computed zero is sent as all ones (RFC 768)
	}
	binary.BigEndian.PutUint16(l4[sumAt:], c)
}

// checksumReplace returns the Internet checksum c updated for one 16-bit
// word of the data changing from old to new: HC' = ~(~HC + ~m + m')
// (RFC 1624, equation 3).
func checksumReplace(c, old, new uint16) uint16 {
	s := uint32(^c) + uint32(^old) + uint32(new)
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

// cycledFlows counts the distinct flows of passes passes over pkts as a
// flowCycler rewrites them (pkts stay unchanged).
func cycledFlows(pkts [][]byte, passes uint16) int {
	seen := make(map[benchFlow]struct{}, len(pkts)*int(passes))
	var buf []byte
	for d := uint16(0); d < passes; d++ {
		for _, p := range pkts {
			buf = append(buf[:0], p...)
			shiftClientPort(buf, d)
			if k, ok := flowOf(buf); ok {
				seen[k] = struct{}{}
			}
		}
	}
	return len(seen)
}
