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

var (
	client6 = netip.MustParseAddr("2001:db8:ffff::7")
	portIP6 = netip.MustParseAddr("2001:db8:0:1::10")
	vip6L2  = netip.MustParseAddr("2001:db8:100::1")
	vip6IP  = netip.MustParseAddr("2001:db8:100::2") // ipip, IPv6 backend: v6-in-v6
	vip6IP4 = netip.MustParseAddr("2001:db8:100::3") // ipip, IPv4 backend: v6-in-v4
	vip6GRE = netip.MustParseAddr("2001:db8:100::4") // gre, IPv6 backend
	vip6GR4 = netip.MustParseAddr("2001:db8:100::5") // gre, IPv4 backend
	vip4IP6 = netip.MustParseAddr("203.0.113.6")     // ipip, IPv6 backend: v4-in-v6
	vip4GR6 = netip.MustParseAddr("203.0.113.7")     // gre, IPv6 backend
	vip6Mix = netip.MustParseAddr("2001:db8:100::8") // ipip, both families
)

// testSnapshot6 has one service per envelope combination of issue 14,
// and one with backends of both families.
func testSnapshot6(t testing.TB) *Snapshot { return testSnapshot6Partial(t, false) }

// testSnapshot6Partial is testSnapshot6 with the port receiving a
// kernel's frames (PartialChecksums) when partial is set.
func testSnapshot6Partial(t testing.TB, partial bool) *Snapshot {
	t.Helper()
	be := func(id uint32, ip string, mac MAC) BackendSpec {
		return BackendSpec{ID: id, IP: netip.MustParseAddr(ip), Weight: 1, NextHop: mac}
	}
	svc := func(id uint32, name string, vip netip.Addr, proto uint8, port uint16, m Mode, bs ...BackendSpec) ServiceSpec {
		return ServiceSpec{ID: id, Name: name, VIP: vip, Proto: proto, Port: port, Mode: m, Backends: bs}
	}
	s, err := NewSnapshot(SnapshotSpec{
		Generation: 1,
		Ports:      []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6, MTU: 1500, PartialChecksums: partial}},
		Services: []ServiceSpec{
			svc(0, "l2v6", vip6L2, ProtoTCP, 80, ModeL2, be(0, "2001:db8:0:1::21", be1MAC)),
			svc(1, "v6inv6", vip6IP, ProtoTCP, 443, ModeIPIP, be(1, "2001:db8:0:2::21", gwMAC)),
			svc(2, "v6inv4", vip6IP4, ProtoUDP, 0, ModeIPIP, be(2, "10.1.0.1", gwMAC)),
			svc(3, "gre6", vip6GRE, ProtoTCP, 443, ModeGRE, be(3, "2001:db8:0:2::23", gwMAC)),
			svc(4, "gre6in4", vip6GR4, ProtoTCP, 443, ModeGRE, be(4, "10.2.0.1", gwMAC)),
			svc(5, "v4inv6", vip4IP6, ProtoTCP, 80, ModeIPIP, be(5, "2001:db8:0:2::25", gwMAC)),
			svc(6, "gre4in6", vip4GR6, ProtoTCP, 80, ModeGRE, be(6, "2001:db8:0:2::26", gwMAC)),
			svc(7, "mixed", vip6Mix, ProtoTCP, 443, ModeIPIP, be(7, "10.1.0.7", gwMAC), be(8, "2001:db8:0:2::27", gwMAC)),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tcp6To(vip netip.Addr, port, sport uint16) testpkt.Packet {
	return testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: client6, Dst: vip, Proto: ProtoTCP,
		SrcPort: sport, DstPort: port, TOS: 0xb8, FlowLabel: 0x12345, Payload: []byte("hello")}
}

func process1(t testing.TB, s *Snapshot, frame []byte) (*Forwarder, *packet.Packet, Verdict, int) {
	t.Helper()
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	p := newPacket(frame)
	v, out := f.Process(s, p, 0)
	return f, p, v, out
}

// TestRewrite6 checks every envelope combination field by field: the
// outer header's family follows the backend, what it announces inside
// follows the VIP, traffic class or TOS is copied, hop limit or TTL 64,
// the source is the port's address of the envelope's family, and the
// client's packet is unchanged inside.
func TestRewrite6(t *testing.T) {
	s := testSnapshot6(t)
	v4 := func(vip netip.Addr) testpkt.Packet { p := tcpTo(vip, 80, 1000); p.TOS = 0x2e; return p }
	udp6 := tcp6To(vip6IP4, 53, 5353)
	udp6.Proto = ProtoUDP
	for _, tc := range []struct {
		desc    string
		in      testpkt.Packet
		outer6  bool   // IPv6 envelope
		next    uint8  // outer protocol / next header; 0: l2
		greType uint16 // GRE protocol
		dst     string // outer destination
	}{
		{"v6 l2", tcp6To(vip6L2, 80, 1000), false, 0, 0, ""},
		{"v6-in-v6", tcp6To(vip6IP, 443, 1000), true, ProtoIPv6, 0, "2001:db8:0:2::21"},
		{"v6-in-v4", udp6, false, ProtoIPv6, 0, "10.1.0.1"},
		{"gre over v6", tcp6To(vip6GRE, 443, 1000), true, ProtoGRE, EtherTypeIPv6, "2001:db8:0:2::23"},
		{"v6 in gre over v4", tcp6To(vip6GR4, 443, 1000), false, ProtoGRE, EtherTypeIPv6, "10.2.0.1"},
		{"v4-in-v6", v4(vip4IP6), true, ProtoIPIP, 0, "2001:db8:0:2::25"},
		{"v4 in gre over v6", v4(vip4GR6), true, ProtoGRE, EtherTypeIPv4, "2001:db8:0:2::26"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			frame := tc.in.Build()
			inner := append([]byte(nil), frame[14:]...)
			innerTOS := tc.in.TOS
			f, p, v, out := process1(t, s, frame)
			if v != VerdictTx || out != 0 {
				t.Fatalf("verdict %v port %d, want tx 0; drops %v", v, out, f.C.Drops)
			}
			got := p.Data()
			if !bytes.Equal(got[6:12], portMAC[:]) {
				t.Errorf("src MAC %x, want %x", got[6:12], portMAC)
			}
			if tc.next == 0 { // l2: only the destination MAC changes
				if !bytes.Equal(got[0:6], be1MAC[:]) || !bytes.Equal(got[12:], frame[12:]) {
					t.Errorf("l2 frame\n got %x\nwant %x%x%x", got, be1MAC, portMAC, frame[12:])
				}
				return
			}
			if !bytes.Equal(got[0:6], gwMAC[:]) {
				t.Errorf("dst MAC %x, want the gateway's %x", got[0:6], gwMAC)
			}
			over := 20
			if tc.outer6 {
				over = 40
			}
			if tc.next == ProtoGRE {
				over += 4
			}
			type check struct {
				name      string
				got, want uint64
			}
			var checks []check
			if tc.outer6 {
				if et := binary.BigEndian.Uint16(got[12:]); et != EtherTypeIPv6 {
					t.Fatalf("ethertype %#x, want 0x86dd", et)
				}
				o := IPv6(got[14:])
				src, dst := o.Src(), o.Dst()
				checks = []check{
					{"version", uint64(o.Version()), 6},
					{"traffic class", uint64(o.TrafficClass()), uint64(innerTOS)},
					{"payload length", uint64(o.PayloadLen()), uint64(len(inner) + over - 40)},
					{"next header", uint64(o.NextHeader()), uint64(tc.next)},
					{"hop limit", uint64(o.HopLimit()), 64},
					{"src is port ip6", b2u(netip.AddrFrom16(src) == portIP6), 1},
					{"dst is backend", b2u(netip.AddrFrom16(dst) == netip.MustParseAddr(tc.dst)), 1},
				}
			} else {
				if et := binary.BigEndian.Uint16(got[12:]); et != EtherTypeIPv4 {
					t.Fatalf("ethertype %#x, want 0x0800", et)
				}
				o := IPv4(got[14:])
				checks = []check{
					{"version/ihl", uint64(got[14]), 0x45},
					{"tos", uint64(o.TOS()), uint64(innerTOS)},
					{"total length", uint64(o.TotalLen()), uint64(len(inner) + over)},
					{"protocol", uint64(o.Protocol()), uint64(tc.next)},
					{"ttl", uint64(o.TTL()), 64},
					{"df (IPv6 inside)", uint64(o.FlagsFrag()), IPv4FlagDF},
					{"checksum ok", uint64(Checksum(o[:20], 0)), 0},
					{"src is port ip", uint64(o.SrcU32()), uint64(binary.BigEndian.Uint32(portIP.AsSlice()))},
					{"dst is backend", b2u(netip.AddrFrom4(o.Dst()) == netip.MustParseAddr(tc.dst)), 1},
				}
			}
			if tc.next == ProtoGRE {
				checks = append(checks, check{"gre flags+proto", uint64(binary.BigEndian.Uint32(got[14+over-4:])), uint64(tc.greType)})
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("outer %s = %#x, want %#x", c.name, c.got, c.want)
				}
			}
			if !bytes.Equal(got[14+over:], inner) {
				t.Errorf("inner packet changed:\n got %x\nwant %x", got[14+over:], inner)
			}
		})
	}
}

// outerDst returns the destination address of frame's envelope.
func outerDst(frame []byte) []byte {
	if binary.BigEndian.Uint16(frame[12:]) == EtherTypeIPv6 {
		return append([]byte(nil), frame[14+24:14+40]...)
	}
	return append([]byte(nil), frame[14+16:14+20]...)
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// TestFlowStays6: every packet of an IPv6 flow goes to the same backend
// of a service with backends of both families, which two forwarders (two
// appliances) agree on, and the flow table holds it.
func TestFlowStays6(t *testing.T) {
	s := testSnapshot6(t)
	a, b := NewForwarder(1024, DefaultFlowTimeouts, 0), NewForwarder(1024, DefaultFlowTimeouts, 0)
	a.Use(s)
	b.Use(s)
	seen := map[int]int{}
	for sport := uint16(1000); sport < 1200; sport++ {
		var first []byte
		for i := 0; i < 3; i++ {
			for _, f := range []*Forwarder{a, b} {
				p := newPacket(tcp6To(vip6Mix, 443, sport).Build())
				if v, _ := f.Process(s, p, 0); v != VerdictTx {
					t.Fatalf("verdict %v; drops %v", v, f.C.Drops)
				}
				d := outerDst(p.Data())
				if first == nil {
					first = d
				} else if !bytes.Equal(d, first) {
					t.Fatalf("flow %d moved: to %x, then to %x", sport, first, d)
				}
			}
		}
		seen[len(first)]++
	}
	if seen[4] == 0 || seen[16] == 0 {
		t.Errorf("envelopes by address length %v: want both IPv4 and IPv6 backends used", seen)
	}
	if a.Flows.Entries != 200 || a.Flows.Hits != 400 {
		t.Errorf("flow table entries %d hits %d, want 200 and 400", a.Flows.Entries, a.Flows.Hits)
	}
}

// TestPacketTooBig6: an IPv6 packet that no longer fits once encapsulated
// gets an ICMPv6 Packet Too Big back to the client, quoting at most 1280
// bytes in all; an IPv4 packet with DF in an IPv6 envelope gets
// fragmentation needed with the MTU minus 40.
func TestPacketTooBig6(t *testing.T) {
	s := testSnapshot6(t)
	for _, tc := range []struct {
		desc    string
		vip     netip.Addr
		payload int
		mtu     uint32
		quote   int
	}{
		{"v6-in-v6", vip6IP, 1500 - 40 - 20, 1460, 1280 - 48},
		{"gre over v6", vip6GRE, 1500 - 40 - 20, 1456, 1280 - 48},
		{"v6-in-v4", vip6IP4, 1500 - 40 - 8, 1480, 1280 - 48},
		{"just over", vip6IP, 1500 - 40 - 20 - 39, 1460, 1280 - 48},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			in := tcp6To(tc.vip, 443, 999)
			if tc.vip == vip6IP4 {
				in.Proto, in.DstPort = ProtoUDP, 53
			}
			in.Payload = make([]byte, tc.payload)
			frame := in.Build()
			f, p, v, out := process1(t, s, frame)
			if v != VerdictTx || out != 0 || f.C.PacketTooBigSent != 1 {
				t.Fatalf("verdict %v port %d sent %d, want tx 0 and one Packet Too Big; drops %v", v, out, f.C.PacketTooBigSent, f.C.Drops)
			}
			got := p.Data()
			o := IPv6(got[14:])
			c := got[14+40:]
			if !bytes.Equal(got[0:6], gwMAC[:]) || !bytes.Equal(got[6:12], portMAC[:]) || binary.BigEndian.Uint16(got[12:]) != EtherTypeIPv6 {
				t.Errorf("ethernet %x, want back to %x from %x, IPv6", got[:14], gwMAC, portMAC)
			}
			src, dst := o.Src(), o.Dst()
			if netip.AddrFrom16(src) != portIP6 || netip.AddrFrom16(dst) != client6 || o.NextHeader() != ProtoICMPv6 || o.HopLimit() != 64 {
				t.Errorf("ipv6 %v -> %v next %d hop %d, want %v -> %v ICMPv6, 64", netip.AddrFrom16(src), netip.AddrFrom16(dst), o.NextHeader(), o.HopLimit(), portIP6, client6)
			}
			if len(got) != 14+48+tc.quote || int(o.PayloadLen()) != 8+tc.quote {
				t.Errorf("frame %d bytes payload length %d, want %d and %d", len(got), o.PayloadLen(), 14+48+tc.quote, 8+tc.quote)
			}
			if c[0] != ICMPv6PacketTooBig || c[1] != 0 || binary.BigEndian.Uint32(c[4:]) != tc.mtu {
				t.Errorf("icmpv6 type %d code %d mtu %d, want 2 0 %d", c[0], c[1], binary.BigEndian.Uint32(c[4:]), tc.mtu)
			}
			if sum := Checksum(c[:8+tc.quote], testpkt.Pseudo6(src, dst, ProtoICMPv6, 8+tc.quote)); sum != 0 {
				t.Errorf("icmpv6 checksum does not verify (%#x)", sum)
			}
			if !bytes.Equal(c[8:], frame[14:14+tc.quote]) {
				t.Errorf("quote is not the start of the client's packet")
			}
		})
	}
	// An IPv4 client's packet with DF, too big for an IPv6 envelope.
	in := tcpTo(vip4IP6, 80, 999)
	in.Payload = make([]byte, 1500-20-20-10)
	f, p, v, _ := process1(t, s, in.Build())
	if v != VerdictTx || f.C.FragNeededSent != 1 {
		t.Fatalf("verdict %v frag needed %d, want tx and 1; drops %v", v, f.C.FragNeededSent, f.C.Drops)
	}
	c := p.Data()[14+20:]
	if c[0] != ICMPDestUnreachable || c[1] != ICMPFragNeeded || binary.BigEndian.Uint16(c[6:]) != 1460 {
		t.Errorf("icmp %d/%d mtu %d, want 3/4 1460", c[0], c[1], binary.BigEndian.Uint16(c[6:]))
	}
}

// TestICMPv6ErrorFollowsFlow: an ICMPv6 error quoting a VIP flow (VIP ->
// client, as the backend sent it) goes to the backend owning the flow.
func TestICMPv6ErrorFollowsFlow(t *testing.T) {
	s := testSnapshot6(t)
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	p := newPacket(tcp6To(vip6Mix, 443, 4242).Build())
	if v, _ := f.Process(s, p, 0); v != VerdictTx {
		t.Fatalf("verdict %v", v)
	}
	want := outerDst(p.Data()) // the flow's backend
	reply := testpkt.Packet{Src: vip6Mix, Dst: client6, Proto: ProtoTCP, SrcPort: 443, DstPort: 4242, Payload: []byte("x")}.Build()[14:]
	for _, typ := range []uint8{ICMPv6DestUnreachable, ICMPv6PacketTooBig, ICMPv6TimeExceeded} {
		e := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.MustParseAddr("2001:db8:9::1"), Dst: vip6Mix,
			Proto: ProtoICMPv6, ICMPType: typ, Payload: reply}
		q := newPacket(e.Build())
		v, _ := f.Process(s, q, 0)
		if v != VerdictTx {
			t.Fatalf("type %d: verdict %v, drops %v", typ, v, f.C.Drops)
		}
		if got := outerDst(q.Data()); !bytes.Equal(got, want) {
			t.Errorf("type %d: sent to %x, the flow's backend is %x", typ, got, want)
		}
	}
	if f.C.ICMPErrorsForwarded != 3 {
		t.Errorf("icmp errors forwarded %d, want 3", f.C.ICMPErrorsForwarded)
	}
	// An error about a flow of no service is dropped.
	other := testpkt.Packet{Src: netip.MustParseAddr("2001:db8:100::99"), Dst: client6, Proto: ProtoTCP, SrcPort: 443, DstPort: 1}.Build()[14:]
	e := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.MustParseAddr("2001:db8:9::1"), Dst: vip6Mix,
		Proto: ProtoICMPv6, ICMPType: ICMPv6DestUnreachable, Payload: other}
	if v, _ := f.Process(s, newPacket(e.Build()), 0); v != VerdictDrop || f.C.Drops[DropICMPUnrelated] != 1 {
		t.Errorf("unrelated error: verdict %v, icmp_unrelated %d", v, f.C.Drops[DropICMPUnrelated])
	}
}

// TestKernelVerdicts6: neighbour discovery, router advertisements, echo to
// a VIP or the port, link-local traffic and anything to the port's own
// IPv6 address go to the kernel.
func TestKernelVerdicts6(t *testing.T) {
	s := testSnapshot6(t)
	mc := netip.MustParseAddr("ff02::1:ff00:10") // solicited-node
	for _, tc := range []struct {
		desc string
		p    testpkt.Packet
	}{
		{"neighbour solicitation", testpkt.Packet{Src: client6, Dst: mc, Proto: ProtoICMPv6, ICMPType: 135, TTL: 255}},
		{"router advertisement", testpkt.Packet{Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("ff02::1"), Proto: ProtoICMPv6, ICMPType: 134, TTL: 255}},
		{"router solicitation", testpkt.Packet{Src: netip.MustParseAddr("fe80::2"), Dst: netip.MustParseAddr("ff02::2"), Proto: ProtoICMPv6, ICMPType: 133, TTL: 255}},
		{"unicast NS to the VIP", testpkt.Packet{Src: client6, Dst: vip6L2, Proto: ProtoICMPv6, ICMPType: 135, TTL: 255}},
		{"echo to a VIP", testpkt.Packet{Src: client6, Dst: vip6IP, Proto: ProtoICMPv6, ICMPType: ICMPv6EchoRequest}},
		{"echo to the port", testpkt.Packet{Src: client6, Dst: portIP6, Proto: ProtoICMPv6, ICMPType: ICMPv6EchoRequest}},
		{"tcp to the port (BGP)", testpkt.Packet{Src: client6, Dst: portIP6, Proto: ProtoTCP, SrcPort: 40000, DstPort: 179}},
		{"link-local unicast", testpkt.Packet{Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("fe80::10"), Proto: ProtoUDP, SrcPort: 1, DstPort: 2}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			tc.p.SrcMAC, tc.p.DstMAC = gwMAC, portMAC
			frame := tc.p.Build()
			f, p, v, _ := process1(t, s, frame)
			if v != VerdictKernel || f.C.ToKernel != 1 {
				t.Fatalf("verdict %v, want kernel; drops %v", v, f.C.Drops)
			}
			if !bytes.Equal(p.Data(), frame) {
				t.Error("the frame to the kernel changed")
			}
		})
	}
}

// TestMalformedDrops6: broken or unforwardable IPv6 is dropped, counted by
// reason.
func TestMalformedDrops6(t *testing.T) {
	s := testSnapshot6(t)
	good := tcp6To(vip6IP, 443, 1234)
	with := func(mod func(p *testpkt.Packet)) []byte { p := good; mod(&p); return p.Build() }
	frame := good.Build()
	for _, tc := range []struct {
		desc  string
		frame []byte
		want  DropReason
	}{
		{"truncated header", frame[:14+39], DropTruncated},
		{"payload length beyond the frame", func() []byte {
			b := append([]byte(nil), frame...)
			binary.BigEndian.PutUint16(b[14+4:], uint16(len(b)-14-40+1))
			return b
		}(), DropBadTotalLen},
		{"version 4 in an IPv6 frame", func() []byte { b := append([]byte(nil), frame...); b[14] = 0x45; return b }(), DropBadVersion},
		{"fragment", with(func(p *testpkt.Packet) {
			p.Ext6 = []testpkt.Ext6{{Type: ProtoFragment, Body: []byte{0, 0, 1, 0, 0, 0, 7}}} // offset 0, M
		}), DropFragment},
		{"later fragment", with(func(p *testpkt.Packet) {
			p.Ext6 = []testpkt.Ext6{{Type: ProtoFragment, Body: []byte{0, 0x05, 0xa8, 0, 0, 0, 7}}}
		}), DropFragment},
		{"routing header with segments left", with(func(p *testpkt.Packet) {
			p.Ext6 = []testpkt.Ext6{{Type: ProtoRouting, Body: append([]byte{2, 4, 1, 0, 0, 0, 0}, make([]byte, 16)...)}}
		}), DropExtHeader},
		{"truncated extension header", with(func(p *testpkt.Packet) {
			p.Ext6 = []testpkt.Ext6{{Type: ProtoDstOpts, Body: []byte{3, 1, 2, 0, 0, 0, 0}}} // claims 32 bytes
			p.Payload = nil
		}), DropExtHeader},
		{"nine extension headers", with(func(p *testpkt.Packet) {
			for range 9 {
				p.Ext6 = append(p.Ext6, testpkt.Options6(ProtoDstOpts, 1))
			}
		}), DropExtHeader},
		{"truncated tcp", func() []byte {
			b := append([]byte(nil), frame[:14+40+10]...)
			binary.BigEndian.PutUint16(b[14+4:], 10)
			return b
		}(), DropTruncatedL4},
		{"hop limit 1", with(func(p *testpkt.Packet) { p.TTL = 1 }), DropTTL},
		{"no service on the port", with(func(p *testpkt.Packet) { p.DstPort = 444 }), DropNoService},
		{"esp to a VIP", with(func(p *testpkt.Packet) { p.Proto = ProtoESP; p.Payload = make([]byte, 16) }), DropNoService},
		{"not our address", with(func(p *testpkt.Packet) { p.Dst = netip.MustParseAddr("2001:db8:100::99") }), DropNoService},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f, _, v, _ := process1(t, s, tc.frame)
			if v != VerdictDrop || f.C.Drops[tc.want] != 1 {
				t.Errorf("verdict %v drops %v, want one %v", v, f.C.Drops, tc.want)
			}
		})
	}
}

// TestExtHeadersForwarded6: hop-by-hop and destination options, an atomic
// fragment and a routing header with no segments left are passed over to
// find the ports, and forwarded unchanged inside the envelope.
func TestExtHeadersForwarded6(t *testing.T) {
	s := testSnapshot6(t)
	for _, ext := range [][]testpkt.Ext6{
		{testpkt.Options6(ProtoHopByHop, 1)},
		{testpkt.Options6(ProtoHopByHop, 1), testpkt.Options6(ProtoDstOpts, 2)},
		{{Type: ProtoFragment, Body: []byte{0, 0, 0, 0, 0, 0, 9}}},
		{{Type: ProtoRouting, Body: append([]byte{2, 4, 0, 0, 0, 0, 0}, make([]byte, 16)...)}},
	} {
		in := tcp6To(vip6IP, 443, 777)
		in.Ext6 = ext
		frame := in.Build()
		f, p, v, _ := process1(t, s, frame)
		if v != VerdictTx {
			t.Fatalf("%d extension headers: verdict %v, drops %v", len(ext), v, f.C.Drops)
		}
		if !bytes.Equal(p.Data()[14+40:], frame[14:]) {
			t.Errorf("%d extension headers: inner packet changed", len(ext))
		}
	}
}

func TestZeroAllocs6(t *testing.T) {
	s := testSnapshot6(t)
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	frames := [][]byte{tcp6To(vip6IP, 443, 1).Build(), tcp6To(vip6GR4, 443, 2).Build(), tcpTo(vip4IP6, 80, 3).Build(),
		func() []byte { p := tcp6To(vip6IP, 443, 4); p.Payload = make([]byte, 1430); return p.Build() }()} // the last: Packet Too Big
	checkZeroAllocs(t, f, s, frames, []Verdict{VerdictTx, VerdictTx, VerdictTx, VerdictTx})
}

// checkZeroAllocs processes frames on f and s over and over, each frame
// afresh, and checks that each gets its verdict of want and that nothing
// is allocated.
func checkZeroAllocs(t *testing.T, f *Forwarder, s *Snapshot, frames [][]byte, want []Verdict) {
	t.Helper()
	pkts := make([]*packet.Packet, len(frames))
	for i, fr := range frames {
		pkts[i] = newPacket(fr)
	}
	allocs := testing.AllocsPerRun(200, func() {
		for i, fr := range frames {
			p := pkts[i]
			copy(p.Buf[headroom:], fr)
			p.Off, p.Len = headroom, len(fr)
			if v, _ := f.Process(s, p, 0); v != want[i] {
				t.Fatalf("frame %d: verdict %v, want %v", i, v, want[i])
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

// BenchmarkProcess6 runs the IPv6 envelopes over established flows.
func BenchmarkProcess6(b *testing.B) {
	s := testSnapshot6(b)
	for _, tc := range []struct {
		name string
		in   testpkt.Packet
	}{
		{"l2", tcp6To(vip6L2, 80, 1)},
		{"v6inv6", tcp6To(vip6IP, 443, 1)},
		{"gre6", tcp6To(vip6GRE, 443, 1)},
		{"v6inv4", func() testpkt.Packet { p := tcp6To(vip6IP4, 53, 1); p.Proto = ProtoUDP; return p }()},
		{"v4inv6", tcpTo(vip4IP6, 80, 1)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			frame := tc.in.Build()
			p := newPacket(frame)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				copy(p.Buf[headroom:], frame)
				p.Off, p.Len = headroom, len(frame)
				if v, _ := f.Process(s, p, 0); v != VerdictTx {
					b.Fatalf("verdict %v", v)
				}
			}
		})
	}
}

// FuzzProcess6 is FuzzProcess on IPv6 input and the envelope combinations
// of testSnapshot6.
func FuzzProcess6(f *testing.F) {
	for _, v := range []netip.Addr{vip6L2, vip6IP, vip6GRE, vip6GR4, vip6Mix} {
		f.Add(tcp6To(v, 443, 1).Build())
	}
	f.Add(tcpTo(vip4IP6, 80, 1).Build())
	udp := tcp6To(vip6IP4, 53, 2)
	udp.Proto = ProtoUDP
	f.Add(udp.Build())
	big := tcp6To(vip6IP, 443, 3)
	big.Payload = make([]byte, 1430) // Packet Too Big
	f.Add(big.Build())
	tagged := tcp6To(vip6GRE, 443, 4)
	tagged.VLAN = 100
	f.Add(tagged.Build())
	ext := tcp6To(vip6IP, 443, 5)
	ext.Ext6 = []testpkt.Ext6{testpkt.Options6(ProtoHopByHop, 1), {Type: ProtoFragment, Body: []byte{0, 0, 0, 0, 0, 0, 1}}}
	f.Add(ext.Build())
	reply := testpkt.Packet{Src: vip6Mix, Dst: client6, Proto: ProtoTCP, SrcPort: 443, DstPort: 1}.Build()[14:]
	f.Add(testpkt.Packet{Src: client6, Dst: vip6Mix, Proto: ProtoICMPv6, ICMPType: ICMPv6PacketTooBig, Payload: reply}.Build())
	f.Add(testpkt.Packet{Src: client6, Dst: netip.MustParseAddr("ff02::1:ff00:10"), Proto: ProtoICMPv6, ICMPType: 135}.Build())
	s := testSnapshot6(f)
	f.Fuzz(func(t *testing.T, frame []byte) { processGuarded(t, s, frame) })
}
