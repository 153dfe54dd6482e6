package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// icmpLimitSnapshot has a GRE service for IPv4 clients (fragmentation
// needed at 1500-24) and an IPv6 one in IPv6 (Packet Too Big at
// 1500-40), with rate ICMP errors per second per worker.
func icmpLimitSnapshot(t testing.TB, rate uint32) *Snapshot {
	t.Helper()
	s, err := NewSnapshot(SnapshotSpec{
		Generation:          1,
		ICMPErrorsPerSecond: rate,
		Ports:               []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6, MTU: 1500}},
		Services: []ServiceSpec{
			{ID: 0, Name: "gre", VIP: vipGRE, Proto: ProtoTCP, Port: 443, Mode: ModeGRE,
				Backends: []BackendSpec{{ID: 0, IP: netip.MustParseAddr("10.2.0.1"), Weight: 1, NextHop: gwMAC}}},
			{ID: 1, Name: "v6inv6", VIP: vip6IP, Proto: ProtoTCP, Port: 443, Mode: ModeIPIP,
				Backends: []BackendSpec{{ID: 1, IP: netip.MustParseAddr("2001:db8:0:2::21"), Weight: 1, NextHop: gwMAC}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// oversized returns a full-sized frame from client port sport: IPv4 with
// DF to the GRE VIP, or IPv6 to the IPv6 VIP; neither fits its envelope.
func oversized(v6 bool, sport uint16) []byte {
	if v6 {
		p := tcp6To(vip6IP, 443, sport)
		p.Payload = make([]byte, 1500-40-20)
		return p.Build()
	}
	p := tcpTo(vipGRE, 443, sport)
	p.Payload = make([]byte, 1500-20-20)
	return p.Build()
}

// checkICMPError checks, field by field, that p holds the ICMP error
// answering frame: fragmentation needed (MTU 1476) for IPv4, Packet Too
// Big (MTU 1460) for IPv6, back to the client's MAC from the port's, from
// the port's address, checksums valid, quoting the client's packet.
func checkICMPError(t *testing.T, n int, v6 bool, frame []byte, p *packet.Packet) {
	t.Helper()
	g := p.Data()
	if !bytes.Equal(g[0:6], gwMAC[:]) || !bytes.Equal(g[6:12], portMAC[:]) {
		t.Errorf("packet %d: ethernet %x, want to %x from %x", n, g[:14], gwMAC, portMAC)
	}
	if v6 {
		o := IPv6(g[14:])
		c := g[14+IPv6HeaderSize:]
		src, dst := o.Src(), o.Dst()
		quote := len(c) - ICMPSize
		switch {
		case binary.BigEndian.Uint16(g[12:]) != EtherTypeIPv6 || netip.AddrFrom16(src) != portIP6 || netip.AddrFrom16(dst) != client6 ||
			o.NextHeader() != ProtoICMPv6 || o.HopLimit() != 64 || int(o.PayloadLen()) != len(c):
			t.Errorf("packet %d: IPv6 header %x, want %v -> %v, ICMPv6, hop limit 64", n, g[14:14+IPv6HeaderSize], portIP6, client6)
		case c[0] != ICMPv6PacketTooBig || c[1] != 0 || binary.BigEndian.Uint32(c[4:]) != 1460:
			t.Errorf("packet %d: ICMPv6 type %d code %d mtu %d, want Packet Too Big (2/0) 1460", n, c[0], c[1], binary.BigEndian.Uint32(c[4:]))
		case Checksum(c, testpkt.Pseudo6(src, dst, ProtoICMPv6, len(c))) != 0:
			t.Errorf("packet %d: ICMPv6 checksum does not verify", n)
		case quote != IPv6MinMTU-IPv6HeaderSize-ICMPSize || !bytes.Equal(c[ICMPSize:], frame[14:14+quote]):
			t.Errorf("packet %d: quote of %d bytes, want the first %d of the client's packet", n, quote, IPv6MinMTU-IPv6HeaderSize-ICMPSize)
		}
		return
	}
	ip := IPv4(g[14:])
	c := g[14+IPv4MinSize:]
	switch {
	case binary.BigEndian.Uint16(g[12:]) != EtherTypeIPv4 || ip.Src() != portIP.As4() || ip.Dst() != clientIP.As4() ||
		ip.Protocol() != ProtoICMP || int(ip.TotalLen()) != len(g)-14:
		t.Errorf("packet %d: IPv4 header %x, want %v -> %v, ICMP", n, g[14:14+IPv4MinSize], portIP, clientIP)
	case c[0] != ICMPDestUnreachable || c[1] != ICMPFragNeeded || binary.BigEndian.Uint16(c[6:]) != 1476:
		t.Errorf("packet %d: ICMP type %d code %d mtu %d, want fragmentation needed (3/4) 1476", n, c[0], c[1], binary.BigEndian.Uint16(c[6:]))
	case Checksum(ip[:IPv4MinSize], 0) != 0 || Checksum(c, 0) != 0:
		t.Errorf("packet %d: checksums do not verify: %x", n, g)
	case !bytes.Equal(c[ICMPSize:], frame[14:14+IPv4MinSize+8]):
		t.Errorf("packet %d: quote %x, want the client's IPv4 header and 8 bytes", n, c[ICMPSize:])
	}
}

// icmpBurst sends n oversized packets through f at its clock, IPv4 and
// IPv6 in turn when mixed (else IPv4 only), from client ports from on,
// checks every answer and every drop, and returns how many were answered.
// A packet is answered until the first one dropped, then never again.
func icmpBurst(t *testing.T, f *Forwarder, s *Snapshot, n int, mixed bool, from uint16) (answered int) {
	t.Helper()
	for i := 0; i < n; i++ {
		v6 := mixed && i%2 == 1
		frame := oversized(v6, from+uint16(i))
		p := newPacket(frame)
		drops := f.C.Drops[DropICMPErrorLimit]
		switch v, out := f.Process(s, p, 0); {
		case v == VerdictTx && out == 0 && answered == i:
			checkICMPError(t, i, v6, frame, p)
			answered++
		case v == VerdictDrop && f.C.Drops[DropICMPErrorLimit] == drops+1:
		default:
			t.Fatalf("packet %d (IPv6 %v, %d answered): verdict %v port %d, drops %v; want an ICMP error, or a drop as icmp_error_limit after the last answered",
				i, v6, answered, v, out, f.C.Drops)
		}
	}
	return answered
}

// TestICMPErrorLimit: above the worker's rate the oversized packets that
// would draw an ICMP error are dropped as icmp_error_limit; IPv4 and IPv6
// share one bucket of one second of the rate, refilled as the clock
// advances; packets that fit are forwarded whatever the bucket holds.
func TestICMPErrorLimit(t *testing.T) {
	const rate = 10
	s := icmpLimitSnapshot(t, rate)
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	// The bucket starts full, even on a worker's first millisecond.
	f.Now = 0
	sport := uint16(1000)
	step := func(desc string, advance uint32, n, want int) {
		t.Helper()
		f.Now += advance
		before := f.C.Drops
		sent := f.C.FragNeededSent + f.C.PacketTooBigSent
		got := icmpBurst(t, f, s, n, true, sport)
		sport += uint16(n)
		if got != want {
			t.Errorf("%s: %d of %d answered, want %d", desc, got, n, want)
		}
		if d := f.C.Drops[DropICMPErrorLimit] - before[DropICMPErrorLimit]; d != uint64(n-want) {
			t.Errorf("%s: icmp_error_limit +%d, want %d", desc, d, n-want)
		}
		if d := f.C.FragNeededSent + f.C.PacketTooBigSent - sent; d != uint64(want) {
			t.Errorf("%s: frag_needed_sent + packet_too_big_sent +%d, want %d", desc, d, want)
		}
		for r := DropReason(1); r < NumDropReasons; r++ {
			if r != DropICMPErrorLimit && f.C.Drops[r] != before[r] {
				t.Errorf("%s: %s +%d, want only icmp_error_limit drops", desc, r, f.C.Drops[r]-before[r])
			}
		}
	}
	step("a burst at one instant", 0, 3*rate, rate)
	if f.C.FragNeededSent != rate/2 || f.C.PacketTooBigSent != rate/2 {
		t.Errorf("frag needed %d, packet too big %d: want %d each (one bucket, IPv4 and IPv6 in turn)",
			f.C.FragNeededSent, f.C.PacketTooBigSent, rate/2)
	}
	// A packet that fits still goes to its backend.
	if v, out := f.Process(s, newPacket(tcpTo(vipGRE, 443, 1).Build()), 0); v != VerdictTx || out != 0 {
		t.Errorf("a packet that fits: verdict %v port %d, want tx on port 0", v, out)
	}
	step("0.25 s later: two and a half errors", 250, 5, 2)
	step("0.05 s later: the half left and another", 50, 3, 1)
	step("0.05 s later: half an error", 50, 2, 0)
	step("0.05 s later: the other half", 50, 2, 1)
	step("10 s later: the bucket holds one second", 10_000, 2*rate, rate)
	// The clock is a uint32 of milliseconds: it wraps after 49.7 days.
	f.Now = ^uint32(0) - 100
	step("just before the clock wraps", 0, 2*rate, rate)
	step("0.25 s later, across the wrap", 250, 5, 2)
}

// TestICMPErrorLimitDefault: the default rate answers 1000 oversized
// packets at one instant and no more, each its own flow.
func TestICMPErrorLimitDefault(t *testing.T) {
	s := icmpLimitSnapshot(t, DefaultICMPErrorsPerSecond)
	f := NewForwarder(1<<16, DefaultFlowTimeouts, 0)
	f.Use(s)
	f.Now = 7
	if got := icmpBurst(t, f, s, DefaultICMPErrorsPerSecond+200, false, 1); got != DefaultICMPErrorsPerSecond {
		t.Errorf("%d answered, want %d", got, DefaultICMPErrorsPerSecond)
	}
	if f.C.Drops[DropICMPErrorLimit] != 200 {
		t.Errorf("icmp_error_limit %d, want 200", f.C.Drops[DropICMPErrorLimit])
	}
}

// TestICMPErrorLimitOff: a rate of 0 answers every oversized packet, and
// a rate set later starts with a full bucket.
func TestICMPErrorLimitOff(t *testing.T) {
	off := icmpLimitSnapshot(t, 0)
	f := NewForwarder(1<<16, DefaultFlowTimeouts, 0)
	f.Use(off)
	f.Now = 5000
	const n = 3000
	if got := icmpBurst(t, f, off, n, true, 1); got != n || f.C.Drops[DropICMPErrorLimit] != 0 {
		t.Errorf("no limit: %d of %d answered, icmp_error_limit %d; want all, 0", got, n, f.C.Drops[DropICMPErrorLimit])
	}
	on := icmpLimitSnapshot(t, 5)
	f.Use(on)
	if got := icmpBurst(t, f, on, 8, true, n+1); got != 5 {
		t.Errorf("limit of 5 set: %d of 8 answered, want 5", got)
	}
}

// TestICMPErrorLimitZeroAllocs: answering and dropping over the limit
// allocate nothing.
func TestICMPErrorLimitZeroAllocs(t *testing.T) {
	frames := [][]byte{oversized(false, 1), oversized(true, 2)}
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	high := icmpLimitSnapshot(t, 1_000_000)
	f.Use(high)
	checkZeroAllocs(t, f, high, frames, []Verdict{VerdictTx, VerdictTx})
	one := icmpLimitSnapshot(t, 1)
	f.Use(one)
	if v, _ := f.Process(one, newPacket(frames[0]), 0); v != VerdictTx {
		t.Fatalf("first oversized packet at a rate of 1: verdict %v, want tx", v)
	}
	checkZeroAllocs(t, f, one, frames, []Verdict{VerdictDrop, VerdictDrop})
}

// TestICMPErrorLimitTrace: a trace shows what an oversized packet draws
// whatever the workers' buckets hold: it meters nothing.
func TestICMPErrorLimitTrace(t *testing.T) {
	s := icmpLimitSnapshot(t, 1)
	for i := range 3 {
		for _, v6 := range []bool{false, true} {
			tr := s.Trace(oversized(v6, 1), 0, 0, FlowProbe{})
			ptb := len(tr.Frame) > 14+IPv6HeaderSize && IPv6(tr.Frame[14:]).NextHeader() == ProtoICMPv6 &&
				tr.Frame[14+IPv6HeaderSize] == ICMPv6PacketTooBig
			if tr.Verdict != VerdictTx || tr.FragNeeded == v6 || ptb != v6 {
				t.Errorf("trace %d (IPv6 %v): verdict %v, fragmentation needed %v, Packet Too Big %v; want tx and the ICMP error",
					i, v6, tr.Verdict, tr.FragNeeded, ptb)
			}
		}
	}
}
