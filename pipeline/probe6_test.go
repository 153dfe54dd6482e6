package pipeline_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// probeSnapshot6 has IPv6 VIPs probed through the VIP, backend k (in
// spec order) owning probe block k: l2 with two backends, v6-in-v6 ipip,
// v6-in-v4 gre, and the IPv4 l2 service of probeSnapshot (block 4) to
// check that a probe never crosses families.
func probeSnapshot6(t testing.TB) *Snapshot {
	t.Helper()
	k := 0
	be := func(id uint32, ip string, mac MAC) BackendSpec {
		b := BackendSpec{ID: id, IP: netip.MustParseAddr(ip), Weight: 1, NextHop: mac,
			ProbePort: uint16(ProbePortBase + k*ProbePortsPerTarget)}
		k++
		return b
	}
	s, err := NewSnapshot(SnapshotSpec{
		Generation: 1,
		Ports:      []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6, MTU: 1500}},
		Services: []ServiceSpec{
			{ID: 0, Name: "l2v6", VIP: vip6L2, Proto: ProtoTCP, Port: 80, Mode: ModeL2, Backends: []BackendSpec{
				be(0, "2001:db8:0:1::21", be1MAC), be(1, "2001:db8:0:1::22", MAC{2, 0, 0, 0, 0, 0x22})}},
			{ID: 1, Name: "v6inv6", VIP: vip6IP, Proto: ProtoTCP, Port: 443, Mode: ModeIPIP, Backends: []BackendSpec{
				be(2, "2001:db8:0:2::21", gwMAC)}},
			{ID: 2, Name: "gre6in4", VIP: vip6GR4, Proto: ProtoUDP, Port: 53, Mode: ModeGRE, Backends: []BackendSpec{
				be(3, "10.2.0.1", gwMAC)}},
			{ID: 3, Name: "l2", VIP: vipL2, Proto: ProtoTCP, Port: 80, Mode: ModeL2, Backends: []BackendSpec{
				be(4, "192.0.2.21", be1MAC)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// probe6From is a TCP SYN (UDP for proto 17) the probe namespace sends
// from the port's IPv6 address and source port sport to vip:port.
func probe6From(sport uint16, vip netip.Addr, proto uint8, port uint16) testpkt.Packet {
	return testpkt.Packet{SrcMAC: probeMAC, DstMAC: portMAC, Src: portIP6, Dst: vip, Proto: proto,
		SrcPort: sport, DstPort: port, TCPFlags: 0x02, TOS: 0x28, FlowLabel: 0xabcde}
}

// TestProbe6ToOneBackend: a probe to an IPv6 VIP goes to the one backend
// its source port names, with that backend's headers (l2 MACs, an IPv6
// envelope for an IPv6 backend, an IPv4 one for an IPv4 backend), checked
// field by field; the probe inside is unchanged, and the flow table and
// the clients' counters see nothing of it.
func TestProbe6ToOneBackend(t *testing.T) {
	s := probeSnapshot6(t)
	port := func(k int) uint16 { return uint16(ProbePortBase + k*ProbePortsPerTarget) }
	for _, tc := range []struct {
		desc     string
		in       testpkt.Packet
		dstMAC   MAC
		overhead int
		outerDst string
		backend  uint32 // ID
	}{
		{"l2 second backend", probe6From(port(1)+3, vip6L2, ProtoTCP, 80), MAC{2, 0, 0, 0, 0, 0x22}, 0, "", 1},
		{"l2 first backend", probe6From(port(0)+1, vip6L2, ProtoTCP, 80), be1MAC, 0, "", 0},
		{"ipip v6 in v6", probe6From(port(2)+2, vip6IP, ProtoTCP, 443), gwMAC, 40, "2001:db8:0:2::21", 2},
		{"gre v6 in v4, udp", probe6From(port(3), vip6GR4, ProtoUDP, 53), gwMAC, 24, "10.2.0.1", 3},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, inner, c := sendOneProbe(t, s, tc.in, tc.dstMAC, tc.overhead)
			et := binary.BigEndian.Uint16(got[12:])
			switch tc.overhead {
			case 0:
				if et != EtherTypeIPv6 {
					t.Errorf("ethertype %#x, want IPv6", et)
				}
			case 40: // IPv6 envelope, next header 41
				o := IPv6(got[14:])
				src, _ := netip.AddrFromSlice(o[8:24])
				dst, _ := netip.AddrFromSlice(o[24:40])
				if et != EtherTypeIPv6 || o.Version() != 6 || o.NextHeader() != ProtoIPv6 || src != portIP6 ||
					dst != netip.MustParseAddr(tc.outerDst) || int(o.PayloadLen()) != len(inner) || o.TrafficClass() != 0x28 || o.HopLimit() != 64 {
					t.Errorf("envelope %#x: version %d next %d %v > %v payload %d tc %#x hop limit %d; want IPv6 41 %v > %s %d 0x28 64",
						et, o.Version(), o.NextHeader(), src, dst, o.PayloadLen(), o.TrafficClass(), o.HopLimit(), portIP6, tc.outerDst, len(inner))
				}
			case 24: // IPv4 envelope, GRE 0x86dd
				o := IPv4(got[14:])
				if g := binary.BigEndian.Uint32(got[34:]); g != EtherTypeIPv6 {
					t.Errorf("GRE header %#x, want 0x86dd", g)
				}
				if et != EtherTypeIPv4 || o.Protocol() != ProtoGRE || netip.AddrFrom4(o.Dst()) != netip.MustParseAddr(tc.outerDst) ||
					netip.AddrFrom4(o.Src()) != portIP || Checksum(o[:20], 0) != 0 || int(o.TotalLen()) != len(inner)+24 ||
					o.FlagsFrag()&IPv4FlagDF == 0 || o.TOS() != 0x28 {
					t.Errorf("outer header %#x proto %d %v > %v len %d checksum %#x flags %#x tos %#x, want IPv4 GRE %v > %s len %d, valid, DF, 0x28",
						et, o.Protocol(), netip.AddrFrom4(o.Src()), netip.AddrFrom4(o.Dst()), o.TotalLen(), Checksum(o[:20], 0), o.FlagsFrag(), o.TOS(),
						portIP, tc.outerDst, len(inner)+24)
				}
			}
			checkOneProbe(t, c, tc.backend, 5)
		})
	}
}

// TestProbe6Unmatched: what the probe port sends over IPv6 that names no
// backend of its VIP (neighbour discovery, a router solicitation, another
// family's block, an ephemeral port) is dropped, never sent anywhere.
func TestProbe6Unmatched(t *testing.T) {
	s := probeSnapshot6(t)
	port := func(k int) uint16 { return uint16(ProbePortBase + k*ProbePortsPerTarget) }
	nd := func(typ uint8, dst string) []byte {
		return testpkt.Packet{SrcMAC: probeMAC, DstMAC: portMAC, Src: portIP6, Dst: netip.MustParseAddr(dst), Proto: ProtoICMPv6, ICMPType: typ, TTL: 255}.Build()
	}
	for _, tc := range []struct {
		desc  string
		frame []byte
		want  DropReason
	}{
		{"source port below the range", probe6From(ProbePortBase-1, vip6L2, ProtoTCP, 80).Build(), DropProbeUnmatched},
		{"source port of no backend", probe6From(port(5), vip6L2, ProtoTCP, 80).Build(), DropProbeUnmatched},
		{"another VIP's backend", probe6From(port(2), vip6L2, ProtoTCP, 80).Build(), DropProbeUnmatched},
		{"an IPv4 VIP's backend to an IPv6 VIP", probe6From(port(4), vip6L2, ProtoTCP, 80).Build(), DropProbeUnmatched},
		{"an IPv6 VIP's backend to an IPv4 VIP", probeFrom(port(0), vipL2, 80).Build(), DropProbeUnmatched},
		{"ephemeral port", probe6From(40000, vip6IP, ProtoTCP, 443).Build(), DropProbeUnmatched},
		{"neighbour solicitation", nd(135, "ff02::1:ff00:21"), DropProbeUnmatched},
		{"router solicitation", nd(133, "ff02::2"), DropProbeUnmatched},
		{"payload length beyond the frame", func() []byte {
			b := probe6From(port(0), vip6L2, ProtoTCP, 80).Build()
			binary.BigEndian.PutUint16(b[14+4:], 200)
			return b
		}(), DropBadTotalLen},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProbeDropped(t, s, tc.frame, tc.want)
		})
	}
	t.Run("next hop unresolved", func(t *testing.T) {
		s, err := NewSnapshot(SnapshotSpec{Ports: []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6, MTU: 1500}},
			Services: []ServiceSpec{{Name: "l2v6", VIP: vip6L2, Proto: ProtoTCP, Port: 80, Mode: ModeL2, Backends: []BackendSpec{
				{ID: 0, IP: netip.MustParseAddr("2001:db8:0:1::21"), Weight: 1, ProbePort: ProbePortBase}}}}})
		if err != nil {
			t.Fatal(err)
		}
		checkProbeDropped(t, s, probe6From(ProbePortBase, vip6L2, ProtoTCP, 80).Build(), DropNoRoute)
	})
}

// TestProbe6Replies: a backend's answer to a probe of an IPv6 VIP (from
// the VIP to the port's IPv6 address at a probe port, or an ICMPv6 error
// from the VIP) goes to the probe port, addressed to its MAC; neighbour
// discovery and echo from a VIP, and everything else to the port's
// address, still go to the kernel, and without probes nothing changes.
func TestProbe6Replies(t *testing.T) {
	reply := func(src netip.Addr, proto uint8, dport uint16) testpkt.Packet {
		return testpkt.Packet{SrcMAC: be1MAC, DstMAC: portMAC, Src: src, Dst: portIP6, Proto: proto, SrcPort: 80, DstPort: dport, TCPFlags: 0x12}
	}
	icmp := func(typ uint8) testpkt.Packet {
		return testpkt.Packet{SrcMAC: be1MAC, DstMAC: portMAC, Src: vip6L2, Dst: portIP6, Proto: ProtoICMPv6, ICMPType: typ, ICMPCode: 4, TTL: 255,
			Payload: probe6From(ProbePortBase, vip6L2, ProtoUDP, 80).Build()[14 : 14+48]}
	}
	for _, tc := range []struct {
		desc   string
		snap   *Snapshot
		in     testpkt.Packet
		toProb bool
	}{
		{"syn-ack from the VIP to a probe port", probeSnapshot6(t), reply(vip6L2, ProtoTCP, ProbePortBase+1), true},
		{"udp from a VIP to the last probe port", probeSnapshot6(t), reply(vip6GR4, ProtoUDP, ProbePortBase+MaxProbeTargets*ProbePortsPerTarget-1), true},
		{"port unreachable from the VIP", probeSnapshot6(t), icmp(ICMPv6DestUnreachable), true},
		{"neighbour solicitation from the VIP", probeSnapshot6(t), icmp(135), false},
		{"echo request from the VIP", probeSnapshot6(t), icmp(ICMPv6EchoRequest), false},
		{"from the VIP to a port above the range", probeSnapshot6(t), reply(vip6L2, ProtoTCP, ProbePortBase+MaxProbeTargets*ProbePortsPerTarget), false},
		{"from the backend's own address", probeSnapshot6(t), reply(netip.MustParseAddr("2001:db8:0:1::21"), ProtoTCP, ProbePortBase+1), false},
		{"no probes in the snapshot", testSnapshot6(t), reply(vip6L2, ProtoTCP, ProbePortBase+1), false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkHandedOver(t, tc.snap, tc.in.Build(), tc.toProb)
		})
	}
}

// TestProbeSource6: an IPv6 VIP's probes come from the egress port's IPv6
// address, an IPv4 VIP's from its IPv4 address whatever the backend's
// family; without an address of the VIP's family there is no source.
func TestProbeSource6(t *testing.T) {
	s := probeSnapshot6(t)
	for _, tc := range []struct {
		svc, backend string
		want         netip.AddrPort
	}{
		{"l2v6", "2001:db8:0:1::22", netip.AddrPortFrom(portIP6, ProbePortBase+ProbePortsPerTarget)},
		{"gre6in4", "10.2.0.1", netip.AddrPortFrom(portIP6, ProbePortBase+3*ProbePortsPerTarget)},
		{"l2", "192.0.2.21", netip.AddrPortFrom(portIP, ProbePortBase+4*ProbePortsPerTarget)},
	} {
		if got, ok := s.ProbeSource(tc.svc, netip.MustParseAddr(tc.backend)); !ok || got != tc.want {
			t.Errorf("%s %s: source %v %v, want %v", tc.svc, tc.backend, got, ok, tc.want)
		}
	}
	v4in6, err := NewSnapshot(SnapshotSpec{Ports: []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6, MTU: 1500}},
		Services: []ServiceSpec{{Name: "v4inv6", VIP: vip4IP6, Proto: ProtoTCP, Port: 80, Mode: ModeIPIP,
			Backends: []BackendSpec{{ID: 0, IP: netip.MustParseAddr("2001:db8:0:2::25"), Weight: 1, NextHop: gwMAC, ProbePort: ProbePortBase}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := v4in6.ProbeSource("v4inv6", netip.MustParseAddr("2001:db8:0:2::25")); !ok || got != netip.AddrPortFrom(portIP, ProbePortBase) {
		t.Errorf("IPv4 VIP, IPv6 backend: source %v %v, want %v", got, ok, netip.AddrPortFrom(portIP, ProbePortBase))
	}
	no6, err := NewSnapshot(SnapshotSpec{Ports: []PortSpec{{MAC: portMAC, IP: portIP, MTU: 1500}},
		Services: []ServiceSpec{{Name: "gre6in4", VIP: vip6GR4, Proto: ProtoTCP, Port: 80, Mode: ModeGRE,
			Backends: []BackendSpec{{ID: 0, IP: netip.MustParseAddr("10.2.0.1"), Weight: 1, NextHop: gwMAC, ProbePort: ProbePortBase}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := no6.ProbeSource("gre6in4", netip.MustParseAddr("10.2.0.1")); ok {
		t.Errorf("port without ip6: source %v, want none", got)
	}
}

// TestProbeZeroAllocs6: the probe paths of IPv6 (an answer to the probe
// port, a looped probe, a client's flow beside probes) allocate nothing.
func TestProbeZeroAllocs6(t *testing.T) {
	s := probeSnapshot6(t)
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	looped := probe6From(ProbePortBase+1, vip6L2, ProtoTCP, 80)
	looped.SrcMAC = be1MAC
	frames := [][]byte{
		testpkt.Packet{SrcMAC: be1MAC, DstMAC: portMAC, Src: vip6L2, Dst: portIP6, Proto: ProtoTCP, SrcPort: 80, DstPort: ProbePortBase, TCPFlags: 0x12}.Build(),
		looped.Build(),
		tcp6To(vip6IP, 443, 1).Build(),
	}
	checkZeroAllocs(t, f, s, frames, []Verdict{VerdictProbe, VerdictDrop, VerdictTx})
}
