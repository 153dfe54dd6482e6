package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"net/netip"
	"sync/atomic"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

var probeMAC = MAC{0x02, 0, 0, 0, 0, 0x99}

// probeSnapshot is testSnapshot's services with every backend probed
// through the VIP: backend k (in spec order) owns the probe block k, and
// backend 10.1.0.2 is down (health) and 10.1.0.1's next hop unresolved.
func probeSnapshot(t testing.TB) *Snapshot {
	t.Helper()
	k := 0
	be := func(id uint32, ip string, mac MAC, st BackendState) BackendSpec {
		b := BackendSpec{ID: id, IP: netip.MustParseAddr(ip), Weight: 1, NextHop: mac, State: st,
			ProbePort: uint16(ProbePortBase + k*ProbePortsPerTarget)}
		k++
		return b
	}
	s, err := NewSnapshot(SnapshotSpec{
		Generation: 1,
		Ports:      []PortSpec{{MAC: portMAC, IP: portIP, MTU: 1500}},
		Services: []ServiceSpec{
			{ID: 0, Name: "l2", VIP: vipL2, Proto: ProtoTCP, Port: 80, Mode: ModeL2, Backends: []BackendSpec{
				be(0, "192.0.2.21", be1MAC, BackendActive), be(1, "192.0.2.22", MAC{2, 0, 0, 0, 0, 0x22}, BackendActive)}},
			{ID: 1, Name: "ipip", VIP: vipIPIP, Proto: ProtoUDP, Port: 0, Mode: ModeIPIP, Backends: []BackendSpec{
				be(2, "10.1.0.1", MAC{}, BackendActive), be(3, "10.1.0.2", gwMAC, BackendDown)}},
			{ID: 2, Name: "gre", VIP: vipGRE, Proto: ProtoTCP, Port: 443, Mode: ModeGRE, Backends: []BackendSpec{
				be(4, "10.2.0.1", gwMAC, BackendActive)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// probeFrom is a TCP SYN the probe namespace sends from the port address
// and source port sport to vip:port.
func probeFrom(sport uint16, vip netip.Addr, port uint16) testpkt.Packet {
	return testpkt.Packet{SrcMAC: probeMAC, DstMAC: portMAC, Src: portIP, Dst: vip, Proto: ProtoTCP,
		SrcPort: sport, DstPort: port, TCPFlags: 0x02, DF: true, ID: 9}
}

// replyTo is a backend's SYN-ACK from vip:80 to the port address at dport.
func replyTo(src netip.Addr, dport uint16) testpkt.Packet {
	return testpkt.Packet{SrcMAC: be1MAC, DstMAC: portMAC, Src: src, Dst: portIP, Proto: ProtoTCP,
		SrcPort: 80, DstPort: dport, TCPFlags: 0x12}
}

// runProbeWorker runs a worker on snapshot s with port wp and probe port
// probe until in has delivered its frames (pollAll), and returns its
// counters.
func runProbeWorker(s *Snapshot, wp WorkerPort, probe, in *listPort) Counters {
	var snap atomic.Pointer[Snapshot]
	snap.Store(s)
	w := NewWorker([]WorkerPort{wp}, &snap, 1024, DefaultFlowTimeouts, 0)
	w.SetProbe(probe, 0, probeMAC)
	pollAll(w, in)
	return w.Counters()
}

// pollAll polls w until every port's frames are received and a last
// probe round ran.
func pollAll(w *Worker, ports ...*listPort) {
	for range 1000 {
		w.Poll()
	}
	for _, p := range ports {
		for p.next < len(p.frames) {
			w.Poll()
		}
	}
	for range 64 {
		w.Poll()
	}
}

// sendOneProbe sends in from the probe port on s and checks that one
// frame leaves, from the port's MAC to dstMAC, with the probe unchanged
// behind overhead bytes of envelope; it returns that frame, the probe's
// IP packet and the worker's counters.
func sendOneProbe(t *testing.T, s *Snapshot, in testpkt.Packet, dstMAC MAC, overhead int) (got, inner []byte, c Counters) {
	t.Helper()
	nic := &listPort{r: rand.New(rand.NewSource(1))}
	probe := &listPort{r: rand.New(rand.NewSource(2)), frames: [][]byte{in.Build()}}
	c = runProbeWorker(s, WorkerPort{NIC: nic}, probe, probe)
	if len(nic.sent) != 1 {
		t.Fatalf("sent %d packets, want 1; drops %v", len(nic.sent), c.Drops)
	}
	got, inner = nic.sent[0], in.Build()[14:]
	if !bytes.Equal(got[0:6], dstMAC[:]) || !bytes.Equal(got[6:12], portMAC[:]) {
		t.Errorf("MACs %x > %x, want %x > %x", got[6:12], got[0:6], portMAC, dstMAC)
	}
	if len(got) != 14+overhead+len(inner) || !bytes.Equal(got[14+overhead:], inner) {
		t.Errorf("probe changed:\n got %x\nwant %x", got[min(14+overhead, len(got)):], inner)
	}
	return got, inner, c
}

// checkOneProbe checks c after one probe to backend (ID) of a snapshot
// of n backends: counted as a probe of that backend only, and no client
// packet, flow table entry or NIC packet.
func checkOneProbe(t *testing.T, c Counters, backend uint32, n int) {
	t.Helper()
	if c.ProbesSent != 1 || c.Backend(backend).Probes != 1 {
		t.Errorf("probes sent %d, to backend %d: %d; want 1 and 1", c.ProbesSent, backend, c.Backend(backend).Probes)
	}
	for id := range uint32(n) {
		if b := c.Backend(id); b.Packets != 0 || b.NewFlows != 0 || (id != backend && b.Probes != 0) {
			t.Errorf("backend %d counters %+v, want no client packet and no probe", id, b)
		}
	}
	if c.FlowEntries != 0 || c.FlowMisses != 0 || c.RxPackets != 0 {
		t.Errorf("flow entries %d, misses %d, rx %d: a probe must not touch the flow table or the NIC counters",
			c.FlowEntries, c.FlowMisses, c.RxPackets)
	}
}

// checkProbeDropped sends frame from the probe port and checks that it
// is dropped for want, freed, and nothing is sent.
func checkProbeDropped(t *testing.T, s *Snapshot, frame []byte, want DropReason) {
	t.Helper()
	nic := &listPort{r: rand.New(rand.NewSource(1))}
	probe := &listPort{r: rand.New(rand.NewSource(2)), frames: [][]byte{frame}}
	c := runProbeWorker(s, WorkerPort{NIC: nic}, probe, probe)
	if len(nic.sent) != 0 || c.Drops[want] != 1 || probe.freed != 1 || c.ProbesSent != 0 {
		t.Errorf("sent %d, %s drops %d, freed %d, probes sent %d; want 0, 1, 1, 0; drops %v",
			len(nic.sent), want, c.Drops[want], probe.freed, c.ProbesSent, c.Drops)
	}
}

// checkHandedOver receives in on the NIC and checks where it goes: to the
// probe port, addressed to its MAC and counted as a probe reply, when
// toProbe, else to the kernel.
func checkHandedOver(t *testing.T, s *Snapshot, in []byte, toProbe bool) {
	t.Helper()
	nic := &listPort{r: rand.New(rand.NewSource(1)), frames: [][]byte{in}}
	tap := &listPort{r: rand.New(rand.NewSource(3))}
	probe := &listPort{r: rand.New(rand.NewSource(2))}
	c := runProbeWorker(s, WorkerPort{NIC: nic, Tap: tap}, probe, nic)
	if !toProbe {
		if len(tap.sent) != 1 || len(probe.sent) != 0 || c.ProbeReplies != 0 {
			t.Errorf("to the kernel %d, to the probe port %d, probe replies %d; want 1, 0, 0", len(tap.sent), len(probe.sent), c.ProbeReplies)
		}
		return
	}
	if len(probe.sent) != 1 || len(tap.sent) != 0 || c.ProbeReplies != 1 {
		t.Fatalf("to the probe port %d, to the kernel %d, probe replies %d; want 1, 0, 1", len(probe.sent), len(tap.sent), c.ProbeReplies)
	}
	got := probe.sent[0]
	if !bytes.Equal(got[0:6], probeMAC[:]) || !bytes.Equal(got[6:], in[6:]) {
		t.Errorf("handed over %x, want %x with destination MAC %x", got, in, probeMAC)
	}
}

// checkLooped processes frame, a probe that came back from a backend, on
// s: want VerdictDrop (probe_looped, no flow, no new flow on backends 0
// and 1) with probes in s, VerdictTx without.
func checkLooped(t *testing.T, s *Snapshot, frame []byte, want Verdict) {
	t.Helper()
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	v, _ := f.Process(s, newPacket(frame), 0)
	if v != want {
		t.Fatalf("verdict %v, want %v (drops %v)", v, want, f.C.Drops)
	}
	if want == VerdictDrop && (f.C.Drops[DropProbeLooped] != 1 || f.Flows.Entries != 0 || f.C.Backends[0].NewFlows+f.C.Backends[1].NewFlows != 0) {
		t.Errorf("probe_looped %d, flow entries %d, new flows %d/%d; want 1, 0, 0", f.C.Drops[DropProbeLooped], f.Flows.Entries,
			f.C.Backends[0].NewFlows, f.C.Backends[1].NewFlows)
	}
}

// TestProbeToOneBackend: a probe from the probe port goes to the one
// backend its source port names, with that backend's headers (l2 MACs,
// ipip or gre envelope), whatever the backend's health; the flow table,
// the clients' counters and Maglev see nothing of it.
func TestProbeToOneBackend(t *testing.T) {
	s := probeSnapshot(t)
	port := func(k int) uint16 { return uint16(ProbePortBase + k*ProbePortsPerTarget) }
	for _, tc := range []struct {
		desc     string
		in       testpkt.Packet
		dstMAC   MAC
		overhead int
		outerDst string
		backend  uint32 // ID
	}{
		{"l2 second backend", probeFrom(port(1)+3, vipL2, 80), MAC{2, 0, 0, 0, 0, 0x22}, 0, "", 1},
		{"l2 first backend", probeFrom(port(0), vipL2, 80), be1MAC, 0, "", 0},
		{"ipip backend down by health", probeFrom(port(3)+1, vipIPIP, 53), gwMAC, 20, "10.1.0.2", 3},
		{"gre", probeFrom(port(4)+2, vipGRE, 8443), gwMAC, 24, "10.2.0.1", 4},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, inner, c := sendOneProbe(t, s, tc.in, tc.dstMAC, tc.overhead)
			if tc.overhead > 0 {
				o := IPv4(got[14:])
				proto := uint8(ProtoIPIP)
				if tc.overhead == 24 {
					proto = ProtoGRE
					if g := binary.BigEndian.Uint32(got[34:]); g != 0x0800 {
						t.Errorf("GRE header %#x, want 0x0800", g)
					}
				}
				if o.Protocol() != proto || netip.AddrFrom4(o.Dst()) != netip.MustParseAddr(tc.outerDst) ||
					netip.AddrFrom4(o.Src()) != portIP || Checksum(o[:20], 0) != 0 || int(o.TotalLen()) != len(inner)+tc.overhead {
					t.Errorf("outer header proto %d %v > %v len %d checksum %#x, want proto %d %v > %s len %d, valid",
						o.Protocol(), netip.AddrFrom4(o.Src()), netip.AddrFrom4(o.Dst()), o.TotalLen(), Checksum(o[:20], 0),
						proto, portIP, tc.outerDst, len(inner)+tc.overhead)
				}
			}
			checkOneProbe(t, c, tc.backend, 5)
		})
	}
}

// TestProbeUnmatched: what the probe port sends that names no backend of
// its VIP is dropped, never sent to any backend.
func TestProbeUnmatched(t *testing.T) {
	s := probeSnapshot(t)
	arp := append(append(append([]byte(nil), portMAC[:]...), probeMAC[:]...), 0x08, 0x06)
	arp = append(arp, make([]byte, 46)...)
	for _, tc := range []struct {
		desc  string
		frame []byte
		want  DropReason
	}{
		{"source port below the range", probeFrom(ProbePortBase-1, vipL2, 80).Build(), DropProbeUnmatched},
		{"source port of no backend", probeFrom(ProbePortBase+5*ProbePortsPerTarget, vipL2, 80).Build(), DropProbeUnmatched},
		{"another VIP's backend", probeFrom(ProbePortBase+4*ProbePortsPerTarget, vipL2, 80).Build(), DropProbeUnmatched},
		{"ephemeral port", probeFrom(40000, vipGRE, 443).Build(), DropProbeUnmatched},
		{"arp", arp, DropProbeUnmatched},
		{"next hop unresolved", probeFrom(ProbePortBase+2*ProbePortsPerTarget, vipIPIP, 53).Build(), DropNoRoute},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkProbeDropped(t, s, tc.frame, tc.want)
		})
	}
}

// TestProbeReplies: a backend's answer to a probe (from a VIP to the port
// address at a probe port, or an ICMP error from a VIP) goes to the probe
// port, addressed to its MAC; everything else for the port address still
// goes to the kernel, and without probes in the snapshot nothing changes.
func TestProbeReplies(t *testing.T) {
	icmp := testpkt.Packet{SrcMAC: be1MAC, DstMAC: portMAC, Src: vipL2, Dst: portIP, Proto: ProtoICMP, ICMPType: 3, ICMPCode: 3,
		Payload: probeFrom(ProbePortBase, vipL2, 80).Build()[14:42]}
	for _, tc := range []struct {
		desc   string
		snap   *Snapshot
		in     testpkt.Packet
		toProb bool
	}{
		{"syn-ack from the VIP to a probe port", probeSnapshot(t), replyTo(vipL2, ProbePortBase+1), true},
		{"from a VIP to the last probe port", probeSnapshot(t), replyTo(vipGRE, ProbePortBase+MaxProbeTargets*ProbePortsPerTarget-1), true},
		{"icmp error from the VIP", probeSnapshot(t), icmp, true},
		{"from the VIP to a port above the range", probeSnapshot(t), replyTo(vipL2, ProbePortBase+MaxProbeTargets*ProbePortsPerTarget), false},
		{"from the backend's own address", probeSnapshot(t), replyTo(netip.MustParseAddr("192.0.2.21"), ProbePortBase+1), false},
		{"no probes in the snapshot", testSnapshot(t), replyTo(vipL2, ProbePortBase+1), false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkHandedOver(t, tc.snap, tc.in.Build(), tc.toProb)
		})
	}
}

// TestProbeSnapshotErrors: probe ports must be the first of a block of the
// range, each block one backend's.
func TestProbeSnapshotErrors(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		ports []uint16
	}{
		{"not a block's first", []uint16{ProbePortBase + 1}},
		{"below the range", []uint16{ProbePortBase - ProbePortsPerTarget}},
		{"above the range", []uint16{ProbePortBase + MaxProbeTargets*ProbePortsPerTarget}},
		{"shared", []uint16{ProbePortBase, ProbePortBase}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var bes []BackendSpec
			for i, p := range tc.ports {
				bes = append(bes, BackendSpec{ID: uint32(i), IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(21 + i)}), Weight: 1, NextHop: be1MAC, ProbePort: p})
			}
			_, err := NewSnapshot(SnapshotSpec{Ports: []PortSpec{{MAC: portMAC, IP: portIP}},
				Services: []ServiceSpec{{Name: "l2", VIP: vipL2, Proto: ProtoTCP, Port: 80, Mode: ModeL2, Backends: bes}}})
			if err == nil {
				t.Errorf("NewSnapshot accepted probe ports %v", tc.ports)
			}
		})
	}
}

// TestProbeLooped: a probe a backend without the VIP sends back to the
// appliance (it forwards what it does not own: a new flow from the port
// address to the VIP) is dropped, never balanced to another backend; a
// snapshot without probes forwards it as before. The same over IPv6 (from
// the port's IPv6 address to an IPv6 VIP).
func TestProbeLooped(t *testing.T) {
	looped := probeFrom(ProbePortBase+1, vipL2, 80)
	looped.SrcMAC = be1MAC
	looped6 := probe6From(ProbePortBase+1, vip6L2, ProtoTCP, 80)
	looped6.SrcMAC = be1MAC
	for _, tc := range []struct {
		desc string
		snap *Snapshot
		in   testpkt.Packet
		want Verdict
	}{
		{"with probes", probeSnapshot(t), looped, VerdictDrop},
		{"without probes", testSnapshot(t), looped, VerdictTx},
		{"IPv6 with probes", probeSnapshot6(t), looped6, VerdictDrop},
		{"IPv6 without probes", testSnapshot6(t), looped6, VerdictTx},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			checkLooped(t, tc.snap, tc.in.Build(), tc.want)
		})
	}
}

// TestProbeToIPv6Backend: a probe of an IPv4 VIP whose backend is IPv6
// (ipip, gre) gets that backend's IPv6 envelope, as its clients do.
func TestProbeToIPv6Backend(t *testing.T) {
	for _, tc := range []struct {
		mode Mode
		next uint8 // the envelope's next header
		vip  netip.Addr
	}{{ModeIPIP, ProtoIPIP, vip4IP6}, {ModeGRE, ProtoGRE, vip4GR6}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			be6 := netip.MustParseAddr("2001:db8:0:2::25")
			s, err := NewSnapshot(SnapshotSpec{Ports: []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6, MTU: 1500}},
				Services: []ServiceSpec{{Name: "v4inv6", VIP: tc.vip, Proto: ProtoTCP, Port: 80, Mode: tc.mode,
					Backends: []BackendSpec{{ID: 0, IP: be6, Weight: 1, NextHop: gwMAC, ProbePort: ProbePortBase}}}}})
			if err != nil {
				t.Fatal(err)
			}
			in := probeFrom(ProbePortBase+2, tc.vip, 80)
			nic := &listPort{r: rand.New(rand.NewSource(1))}
			probe := &listPort{r: rand.New(rand.NewSource(2)), frames: [][]byte{in.Build()}}
			c := runProbeWorker(s, WorkerPort{NIC: nic}, probe, probe)
			if len(nic.sent) != 1 || c.ProbesSent != 1 {
				t.Fatalf("sent %d, probes %d; want 1, 1 (drops %v)", len(nic.sent), c.ProbesSent, c.Drops)
			}
			got := nic.sent[0]
			if et := binary.BigEndian.Uint16(got[12:]); et != EtherTypeIPv6 || !bytes.Equal(got[0:6], gwMAC[:]) {
				t.Fatalf("ethertype %#x to %x, want IPv6 to the gateway", et, got[0:6])
			}
			o := got[14:]
			src, _ := netip.AddrFromSlice(o[8:24])
			dst, _ := netip.AddrFromSlice(o[24:40])
			if o[6] != tc.next || src != portIP6 || dst != be6 {
				t.Errorf("envelope next header %d %v > %v, want %d %v > %v", o[6], src, dst, tc.next, portIP6, be6)
			}
			if inner := in.Build()[14:]; !bytes.Equal(got[len(got)-len(inner):], inner) {
				t.Errorf("probe changed inside the envelope")
			}
		})
	}
}

// TestProbeResolved: a backend is probed through the VIP only while its
// next hop is resolved (the data plane drops a probe to an unresolved one,
// no_route), whatever its health; unknown services and backends are not.
func TestProbeResolved(t *testing.T) {
	s := probeSnapshot(t)
	for _, tc := range []struct {
		svc, backend string
		want         bool
	}{
		{"l2", "192.0.2.21", true},
		{"ipip", "10.1.0.1", false}, // next hop unresolved
		{"ipip", "10.1.0.2", true},  // down, but resolved: probes find it back up
		{"gre", "10.2.0.1", true},
		{"gre", "10.2.0.9", false},
		{"nosuch", "10.2.0.1", false},
	} {
		if got := s.ProbeResolved(tc.svc, netip.MustParseAddr(tc.backend)); got != tc.want {
			t.Errorf("%s %s: resolved %v, want %v", tc.svc, tc.backend, got, tc.want)
		}
	}
}
