package main

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// loopPort hands out fresh copies of capture's frames in order, forever, as
// net_pcap's infinite_rx does.
type loopPort struct {
	capture [][]byte
	next    int
}

func (lp *loopPort) RxBurst(_ uint16, pkts []packet.Packet) int {
	for i := range pkts {
		f := lp.capture[lp.next]
		lp.next = (lp.next + 1) % len(lp.capture)
		pkts[i] = packet.Packet{Buf: append([]byte(nil), f...), Len: len(f)}
	}
	return len(pkts)
}
func (lp *loopPort) TxBurst(_ uint16, pkts []packet.Packet) int { return len(pkts) }
func (lp *loopPort) Free([]packet.Packet)                       {}

// TestFlowCycler: pass k over the capture moves every client port by
// k mod passes, with checksums that match (each frame equal to one built
// with that port), and counts the flows of the cycled capture.
func TestFlowCycler(t *testing.T) {
	vip, vip6 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:100::1")
	base := []testpkt.Packet{
		{Src: netip.MustParseAddr("198.18.0.1"), Dst: vip, Proto: pipeline.ProtoTCP, SrcPort: 1024, DstPort: 80, PadTo: 60},
		{Src: netip.MustParseAddr("198.18.0.2"), Dst: vip, Proto: pipeline.ProtoUDP, SrcPort: 65534, DstPort: 53, PadTo: 60},
		{Src: netip.MustParseAddr("2001:2::1"), Dst: vip6, Proto: pipeline.ProtoTCP, SrcPort: 1024, DstPort: 443},
		{Src: netip.MustParseAddr("2001:2::2"), Dst: vip6, Proto: pipeline.ProtoUDP, SrcPort: 4000, DstPort: 53, Payload: []byte("q")},
		{Src: netip.MustParseAddr("198.18.0.3"), Dst: vip, Proto: 1, ICMPType: 8, PadTo: 60}, // not TCP/UDP: untouched
	}
	capture := make([][]byte, len(base))
	for i, p := range base {
		capture[i] = p.Build()
	}
	const passes = 3
	c := newFlowCycler(&loopPort{capture: capture}, len(capture), passes)
	var got []packet.Packet
	for len(got) < 4*passes*len(capture) {
		b := make([]packet.Packet, 7) // bursts that straddle passes
		n := c.RxBurst(0, b)
		got = append(got, b[:n]...)
	}
	for j := range got {
		i, pass := j%len(base), j/len(base)%passes
		want := base[i]
		if want.Proto != 1 {
			want.SrcPort += uint16(pass) // wraps like the port field
		}
		if w := want.Build(); !bytes.Equal(got[j].Data(), w) {
			t.Errorf("packet %d (capture %d, pass %d): got %x, want %x", j, i, pass, got[j].Data(), w)
		}
	}
	// 4 flows times 3 passes, and the ICMP frame (flowOf reads its first
	// four bytes as ports) once.
	if n, want := cycledFlows(capture, passes), 4*passes+1; n != want {
		t.Errorf("cycledFlows: got %d, want %d", n, want)
	}
	if n, want := cycledFlows(capture, 1), countFlows(capture); n != want {
		t.Errorf("cycledFlows with one pass: got %d, want countFlows %d", n, want)
	}
}
