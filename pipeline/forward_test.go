package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"net/netip"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

var (
	portMAC  = MAC{0x02, 0, 0, 0, 0, 0x10}
	gwMAC    = MAC{0x02, 0, 0, 0, 0, 0x01}
	be1MAC   = MAC{0x02, 0, 0, 0, 0, 0x21}
	clientIP = netip.MustParseAddr("198.51.100.7")
	portIP   = netip.MustParseAddr("192.0.2.10")
	vipL2    = netip.MustParseAddr("203.0.113.1")
	vipIPIP  = netip.MustParseAddr("203.0.113.2")
	vipGRE   = netip.MustParseAddr("203.0.113.3")
)

const headroom = 128

// testSnapshot has one service per mode: l2 on-link backends, ipip and gre
// backends behind the gateway.
func testSnapshot(t testing.TB) *Snapshot {
	t.Helper()
	be := func(id uint32, ip string, w uint32, mac MAC) BackendSpec {
		return BackendSpec{ID: id, IP: netip.MustParseAddr(ip), Weight: w, NextHop: mac}
	}
	s, err := NewSnapshot(SnapshotSpec{
		Generation: 1,
		Ports:      []PortSpec{{MAC: portMAC, IP: portIP, MTU: 1500}},
		Services: []ServiceSpec{
			{ID: 0, Name: "l2", VIP: vipL2, Proto: ProtoTCP, Port: 80, Mode: ModeL2,
				Backends: []BackendSpec{be(0, "192.0.2.21", 1, be1MAC), be(1, "192.0.2.22", 1, MAC{2, 0, 0, 0, 0, 0x22})}},
			{ID: 1, Name: "ipip", VIP: vipIPIP, Proto: ProtoUDP, Port: 0, Mode: ModeIPIP,
				Backends: []BackendSpec{be(2, "10.1.0.1", 1, gwMAC), be(3, "10.1.0.2", 3, gwMAC)}},
			{ID: 2, Name: "gre", VIP: vipGRE, Proto: ProtoTCP, Port: 443, Mode: ModeGRE,
				Backends: []BackendSpec{be(4, "10.2.0.1", 1, gwMAC)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newPacket(frame []byte) *packet.Packet {
	buf := make([]byte, headroom+len(frame)+64)
	copy(buf[headroom:], frame)
	return &packet.Packet{Buf: buf, Off: headroom, Len: len(frame)}
}

func tcpTo(vip netip.Addr, port uint16, sport uint16) testpkt.Packet {
	return testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: clientIP, Dst: vip, Proto: ProtoTCP,
		SrcPort: sport, DstPort: port, TOS: 0xb8, DF: true, ID: 77, Payload: []byte("hello")}
}

func TestRewrite(t *testing.T) {
	s := testSnapshot(t)
	for _, tc := range []struct {
		desc      string
		in        testpkt.Packet
		overhead  int
		proto     uint8
		wantDst   MAC
		wantInner netip.Addr
	}{
		{"l2 tcp", tcpTo(vipL2, 80, 1000), 0, 0, MAC{}, vipL2},
		{"ipip udp", testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP,
			SrcPort: 5353, DstPort: 53, TOS: 0x2e, Payload: []byte("q")}, 20, ProtoIPIP, gwMAC, vipIPIP},
		{"gre tcp", tcpTo(vipGRE, 443, 2000), 24, ProtoGRE, gwMAC, vipGRE},
		{"l2 padded and tagged", func() testpkt.Packet { p := tcpTo(vipL2, 80, 3); p.VLAN = 7; p.PadTo = 100; return p }(), 0, 0, MAC{}, vipL2},
		{"ipip tagged", func() testpkt.Packet { p := tcpTo(vipIPIP, 53, 4); p.Proto = ProtoUDP; p.VLAN = 7; return p }(), 20, ProtoIPIP, gwMAC, vipIPIP},
		{"gre padded and tagged", func() testpkt.Packet { p := tcpTo(vipGRE, 443, 5); p.VLAN = 7; p.PadTo = 100; return p }(), 24, ProtoGRE, gwMAC, vipGRE},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			frame := tc.in.Build()
			inner := append([]byte(nil), frame[len(frame)-int(innerLen(tc.in)):]...)
			if tc.in.PadTo > 0 {
				l3 := 14
				if tc.in.VLAN != 0 {
					l3 = 18
				}
				inner = append([]byte(nil), frame[l3:l3+int(binary.BigEndian.Uint16(frame[l3+2:]))]...)
			}
			p := newPacket(frame)
			v, out := f.Process(s, p, 0)
			if v != VerdictTx || out != 0 {
				t.Fatalf("verdict %v port %d, want tx 0; drops %v", v, out, f.C.Drops)
			}
			got := p.Data()
			if !bytes.Equal(got[6:12], portMAC[:]) {
				t.Errorf("src MAC %x, want %x", got[6:12], portMAC)
			}
			// L2 keeps an 802.1Q tag as received; an envelope leaves
			// untagged.
			if tc.in.VLAN != 0 && tc.overhead == 0 {
				if !bytes.Equal(got[12:16], frame[12:16]) {
					t.Errorf("802.1Q tag %x, want %x as received", got[12:16], frame[12:16])
				}
				got = append(got[:12:12], got[16:]...)
			}
			if binary.BigEndian.Uint16(got[12:]) != EtherTypeIPv4 {
				t.Errorf("ethertype %#x, want 0x0800", binary.BigEndian.Uint16(got[12:]))
			}
			if tc.overhead == 0 {
				if dst := got[0:6]; !bytes.Equal(dst, be1MAC[:]) && !bytes.Equal(dst, []byte{2, 0, 0, 0, 0, 0x22}) {
					t.Errorf("dst MAC %x is no backend's", dst)
				}
			} else if !bytes.Equal(got[0:6], tc.wantDst[:]) {
				t.Errorf("dst MAC %x, want %x", got[0:6], tc.wantDst)
			}
			if !bytes.Equal(got[14+tc.overhead:], inner) {
				t.Errorf("inner packet changed:\n got %x\nwant %x", got[14+tc.overhead:], inner)
			}
			if tc.overhead == 0 {
				return
			}
			o := IPv4(got[14:])
			in := IPv4(inner)
			checks := []struct {
				name      string
				got, want uint64
			}{
				{"version/ihl", uint64(got[14]), 0x45},
				{"total length", uint64(o.TotalLen()), uint64(len(inner) + tc.overhead)},
				{"protocol", uint64(o.Protocol()), uint64(tc.proto)},
				{"ttl", uint64(o.TTL()), 64},
				{"tos", uint64(o.TOS()), uint64(in.TOS())},
				{"df", uint64(o.FlagsFrag() & IPv4FlagDF), uint64(in.FlagsFrag() & IPv4FlagDF)},
				{"checksum ok", uint64(Checksum(o[:20], 0)), 0},
				{"src", uint64(o.SrcU32()), uint64(binary.BigEndian.Uint32(portIP.AsSlice()))},
			}
			if tc.proto == ProtoGRE {
				checks = append(checks, struct {
					name      string
					got, want uint64
				}{"gre flags+proto", uint64(binary.BigEndian.Uint32(got[34:])), 0x0800})
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("outer %s = %#x, want %#x", c.name, c.got, c.want)
				}
			}
		})
	}
}

func innerLen(p testpkt.Packet) int {
	b := p.Build()
	l3 := 14
	if p.VLAN != 0 {
		l3 = 18
	}
	return int(binary.BigEndian.Uint16(b[l3+2:]))
}

func TestMalformedDrops(t *testing.T) {
	s := testSnapshot(t)
	good := tcpTo(vipL2, 80, 1).Build()
	mut := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		desc  string
		frame []byte
		want  DropReason
	}{
		{"empty", nil, DropTruncated},
		{"short ethernet", good[:10], DropTruncated},
		{"non-IP", mut(func(b []byte) []byte { b[12], b[13] = 0x88, 0xcc; return b }), DropNotIP},
		{"truncated IP", good[:14+10], DropTruncated},
		{"wrong version", mut(func(b []byte) []byte { b[14] = 0x65; return b }), DropBadVersion},
		{"IHL < 5", mut(func(b []byte) []byte { b[14] = 0x44; return b }), DropBadIHL},
		{"total length beyond frame", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 1400); return b }), DropBadTotalLen},
		{"total length < IHL", mut(func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 10); return b }), DropBadTotalLen},
		{"bad checksum", mut(func(b []byte) []byte { b[24] ^= 0xff; return b }), DropBadChecksum},
		{"no room for TCP", testpkt.Packet{Src: clientIP, Dst: vipL2, Proto: 6}.Build()[:34+10], DropBadTotalLen},
		{"IP header only, TCP", ipOnly(ProtoTCP), DropTruncatedL4},
		{"IP header only, UDP", ipOnly(ProtoUDP), DropTruncatedL4},
		{"not for us", tcpTo(netip.MustParseAddr("8.8.8.8"), 80, 1).Build(), DropNoService},
		{"VIP, wrong port", tcpTo(vipL2, 81, 1).Build(), DropNoService},
		{"fragment to VIP", func() []byte { p := tcpTo(vipL2, 80, 1); p.MoreFrags = true; p.DF = false; return p.Build() }(), DropFragment},
		{"TTL 1 on ipip", func() []byte { p := tcpTo(vipGRE, 443, 1); p.TTL = 1; return p.Build() }(), DropTTL},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			v, _ := f.Process(s, newPacket(tc.frame), 0)
			if v != VerdictDrop {
				t.Fatalf("verdict %v, want drop", v)
			}
			if f.C.Drops[tc.want] != 1 || f.C.Dropped() != 1 {
				t.Errorf("drops %v, want one %s", f.C.Drops, tc.want)
			}
		})
	}
}

func ipOnly(proto uint8) []byte {
	b := testpkt.Packet{Src: clientIP, Dst: vipIPIP, Proto: 99}.Build()
	b[14+9] = proto
	b[14+10], b[14+11] = 0, 0
	c := Checksum(b[14:34], 0)
	binary.BigEndian.PutUint16(b[14+10:], c)
	return b
}

func TestKernelVerdicts(t *testing.T) {
	s := testSnapshot(t)
	arp := make([]byte, 60)
	binary.BigEndian.PutUint16(arp[12:], EtherTypeARP)
	for _, tc := range []struct {
		desc  string
		frame []byte
	}{
		{"arp", arp},
		{"tcp to own address", tcpTo(portIP, 179, 1).Build()},
		{"echo to VIP", testpkt.Packet{Src: clientIP, Dst: vipL2, Proto: ProtoICMP, ICMPType: ICMPEchoRequest}.Build()},
		{"multicast", testpkt.Packet{Src: clientIP, Dst: netip.MustParseAddr("224.0.0.5"), Proto: 89}.Build()},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			p := newPacket(tc.frame)
			before := append([]byte(nil), p.Data()...)
			if v, _ := f.Process(s, p, 0); v != VerdictKernel {
				t.Fatalf("verdict %v, want kernel", v)
			}
			if !bytes.Equal(p.Data(), before) {
				t.Errorf("kernel-bound packet was modified")
			}
		})
	}
}

func TestFragNeeded(t *testing.T) {
	s := testSnapshot(t)
	for _, tc := range []struct {
		desc    string
		vip     netip.Addr
		port    uint16
		vlan    uint16 // 802.1Q TCI of the client's frame; 0: untagged
		wantMTU uint16
	}{
		{"gre", vipGRE, 443, 0, 1500 - 24},
		{"gre, tagged: back on the client's VLAN", vipGRE, 443, trunkTCI, 1500 - 24},
	} {
		f := NewForwarder(1024, DefaultFlowTimeouts, 0)
		f.Use(s)
		in := tcpTo(tc.vip, tc.port, 9)
		in.Payload = make([]byte, 1500-40)
		in.VLAN = tc.vlan
		l3 := 14
		if tc.vlan != 0 {
			l3 = 18
		}
		frame := in.Build()
		p := newPacket(frame)
		v, out := f.Process(s, p, 0)
		if v != VerdictTx || out != 0 || f.C.FragNeededSent != 1 {
			t.Fatalf("%s: verdict %v port %d sent %d, want tx on port 0 and one frag-needed", tc.desc, v, out, f.C.FragNeededSent)
		}
		g := p.Data()
		if len(g) != l3+20+8+28 || !bytes.Equal(g[6:12], portMAC[:]) || binary.BigEndian.Uint16(g[l3-2:]) != EtherTypeIPv4 {
			t.Errorf("%s: want %d bytes from the port's MAC, EtherType 0x0800: %x", tc.desc, l3+20+8+28, g)
		}
		if tc.vlan != 0 {
			checkTag(t, tc.desc, g)
		}
		ip := IPv4(g[l3:])
		icmp := g[l3+20:]
		if !bytes.Equal(g[0:6], gwMAC[:]) || ip.Protocol() != ProtoICMP || ip.Dst() != clientIP.As4() ||
			icmp[0] != 3 || icmp[1] != 4 || binary.BigEndian.Uint16(icmp[6:]) != tc.wantMTU {
			t.Errorf("%s: bad frag-needed: %x", tc.desc, g)
		}
		if Checksum(ip[:20], 0) != 0 || Checksum(icmp, 0) != 0 {
			t.Errorf("%s: bad checksums in %x", tc.desc, g)
		}
		if !bytes.Equal(icmp[8:8+28], frame[l3:l3+28]) {
			t.Errorf("%s: quote %x, want %x", tc.desc, icmp[8:36], frame[l3:l3+28])
		}
	}
}

func TestICMPErrorFollowsFlow(t *testing.T) {
	s := testSnapshot(t)
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	fwd := tcpTo(vipGRE, 443, 4242)
	p := newPacket(fwd.Build())
	f.Process(s, p, 0)
	wantDst := IPv4(p.Data()[14:]).Dst()
	// A router on the return path says the backend's reply was too big.
	reply := testpkt.Packet{Src: vipGRE, Dst: clientIP, Proto: ProtoTCP, SrcPort: 443, DstPort: 4242}.Build()[14:]
	icmp := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.MustParseAddr("192.0.2.1"), Dst: vipGRE, Proto: ProtoICMP,
		ICMPType: 3, ICMPCode: 4, Payload: reply[:28]}.Build()
	p = newPacket(icmp)
	if v, _ := f.Process(s, p, 0); v != VerdictTx {
		t.Fatalf("verdict %v, want tx (drops %v)", v, f.C.Drops)
	}
	if got := IPv4(p.Data()[14:]).Dst(); got != wantDst || f.C.ICMPErrorsForwarded != 1 {
		t.Errorf("ICMP error went to %v (forwarded %d), want the flow's backend %v", got, f.C.ICMPErrorsForwarded, wantDst)
	}
}

func TestIPOptionsForwarded(t *testing.T) {
	s := testSnapshot(t)
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	in := tcpTo(vipIPIP, 53, 1)
	in.Proto = ProtoUDP
	in.Options = []byte{1, 1, 1, 0} // NOP NOP NOP EOL
	p := newPacket(in.Build())
	if v, _ := f.Process(s, p, 0); v != VerdictTx || f.C.IPOptions != 1 {
		t.Fatalf("verdict %v options %d, want tx and one counted", v, f.C.IPOptions)
	}
}

// TestSharesFollowWeights sends 100k flows to a 1:3 weighted service.
func TestSharesFollowWeights(t *testing.T) {
	s := testSnapshot(t)
	f := NewForwarder(1<<18, DefaultFlowTimeouts, 0)
	f.Use(s)
	count := map[[4]byte]int{}
	first := map[uint32][4]byte{}
	const flows = 100000
	base := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Dst: vipIPIP, Proto: ProtoUDP, DstPort: 53}
	for round := 0; round < 2; round++ {
		for i := 0; i < flows; i++ {
			pk := base
			pk.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			pk.SrcPort = uint16(1024 + i%50000)
			p := newPacket(pk.Build())
			if v, _ := f.Process(s, p, 0); v != VerdictTx {
				t.Fatalf("flow %d: verdict %v", i, v)
			}
			dst := IPv4(p.Data()[14:]).Dst()
			if round == 0 {
				count[dst]++
				first[uint32(i)] = dst
			} else if first[uint32(i)] != dst {
				t.Fatalf("flow %d moved from %v to %v", i, first[uint32(i)], dst)
			}
		}
	}
	share := float64(count[[4]byte{10, 1, 0, 2}]) / flows
	if math.Abs(share-0.75) > 0.02 {
		t.Errorf("weight-3 backend got %.3f of flows, want 0.75±0.02 (%v)", share, count)
	}
}

func TestZeroAllocs(t *testing.T) {
	s := testSnapshot(t)
	for _, tc := range []struct {
		desc string
		pkt  testpkt.Packet
	}{
		{"l2", tcpTo(vipL2, 80, 1)},
		{"ipip", func() testpkt.Packet { p := tcpTo(vipIPIP, 53, 1); p.Proto = ProtoUDP; return p }()},
		{"gre", tcpTo(vipGRE, 443, 1)},
	} {
		f := NewForwarder(1024, DefaultFlowTimeouts, 0)
		f.Use(s)
		frame := tc.pkt.Build()
		p := newPacket(frame)
		allocs := testing.AllocsPerRun(1000, func() {
			copy(p.Buf[headroom:], frame)
			p.Off, p.Len = headroom, len(frame)
			f.Process(s, p, 0)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per packet, want 0", tc.desc, allocs)
		}
	}
}

func BenchmarkProcess(b *testing.B) {
	s := testSnapshot(b)
	for _, tc := range []struct {
		desc string
		pkt  testpkt.Packet
	}{
		{"l2", tcpTo(vipL2, 80, 1)},
		{"ipip", func() testpkt.Packet { p := tcpTo(vipIPIP, 53, 1); p.Proto = ProtoUDP; return p }()},
		{"gre", tcpTo(vipGRE, 443, 1)},
	} {
		b.Run(tc.desc, func(b *testing.B) {
			f := NewForwarder(1<<16, DefaultFlowTimeouts, 0)
			f.Use(s)
			frames := make([][]byte, 1024)
			for i := range frames {
				pk := tc.pkt
				pk.SrcPort = uint16(i)
				frames[i] = pk.Build()
			}
			p := newPacket(frames[0])
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				fr := frames[i&1023]
				copy(p.Buf[headroom:], fr)
				p.Off, p.Len = headroom, len(fr)
				f.Process(s, p, 0)
			}
		})
	}
}

func FuzzProcess(f *testing.F) {
	f.Add(tcpTo(vipL2, 80, 1).Build())
	f.Add(tcpTo(vipGRE, 443, 1).Build())
	f.Add(testpkt.Packet{Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP, DstPort: 9}.Build())
	f.Add(testpkt.Packet{Src: clientIP, Dst: vipGRE, Proto: ProtoICMP, ICMPType: 3, ICMPCode: 4,
		Payload: testpkt.Packet{Src: vipGRE, Dst: clientIP, Proto: ProtoTCP, SrcPort: 443}.Build()[14:42]}.Build())
	tagged := tcpTo(vipL2, 80, 1)
	tagged.VLAN = 100
	f.Add(tagged.Build())
	tagged.Dst, tagged.DstPort, tagged.Payload = vipGRE, 443, make([]byte, 1500-40) // fragmentation needed
	f.Add(tagged.Build())
	s := testSnapshot(f)
	f.Fuzz(func(t *testing.T, frame []byte) { processGuarded(t, s, frame) })
}

// processGuarded runs Process on frame alone and fails t if it writes
// outside the packet and its headroom, leaves bounds outside the buffer,
// or gives no verdict or an uncounted drop.
func processGuarded(t *testing.T, s *Snapshot, frame []byte) {
	fw := NewForwarder(64, DefaultFlowTimeouts, 0)
	fw.Use(s)
	// Guard bytes around the packet catch writes outside packet+headroom.
	buf := make([]byte, headroom+len(frame)+64)
	copy(buf[headroom:], frame)
	for i := headroom + len(frame); i < len(buf); i++ {
		buf[i] = 0xa5
	}
	p := &packet.Packet{Buf: buf[:headroom+len(frame)], Off: headroom, Len: len(frame)}
	v, _ := fw.Process(s, p, 0)
	for i := headroom + len(frame); i < len(buf); i++ {
		if buf[i] != 0xa5 {
			t.Fatalf("write beyond the packet at %d", i-headroom)
		}
	}
	if p.Off < 0 || p.Off+p.Len > headroom+len(frame) {
		t.Fatalf("packet bounds off=%d len=%d outside buffer", p.Off, p.Len)
	}
	if fw.C.RxPackets != 1 || uint64(v) > 2 {
		t.Fatalf("no verdict")
	}
	if v == VerdictDrop && fw.C.Dropped() != 1 {
		t.Fatalf("drop not counted")
	}
}
