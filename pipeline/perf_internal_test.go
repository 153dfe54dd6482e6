package pipeline

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// The fast path's shortcuts must agree with the reference functions.

// fastPathOne runs the fast path on one packet as Worker.burst does
// (classify, then fastPath) and reports the egress port and whether the
// fast path took the packet; when it did not, nothing has changed and the
// caller runs Process.
func (f *Forwarder) fastPathOne(s *Snapshot, p *packet.Packet) (int, bool) {
	var b rxBurst
	b.pkts[0] = *p
	hinted := f.classify(b.pkts[:1], &b.fp)
	taken, _ := f.fastPath(s, &b, 1, hinted, 0)
	*p = b.pkts[0]
	return int(b.egress[0]), taken != 0
}

// burstOne is Worker.burst for one packet: the fast path, else Process
// with the flow hash classify computed.
func (f *Forwarder) burstOne(s *Snapshot, p *packet.Packet, rxPort int) (Verdict, int, bool) {
	var b rxBurst
	b.pkts[0] = *p
	hinted := f.classify(b.pkts[:1], &b.fp)
	fast := hinted
	if s.partialChecksums(rxPort) {
		fast &^= offloaded(b.pkts[:1], hinted, s.Ports[rxPort].MTU)
	}
	taken, _ := f.fastPath(s, &b, 1, fast, 0)
	*p = b.pkts[0]
	if taken != 0 {
		return VerdictTx, int(b.egress[0]), true
	}
	v, o := f.processHinted(s, p, rxPort, b.fp[0].hash, hinted&1 != 0)
	return v, o, false
}

func TestFlowHashMatchesKeyHash(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 20000; i++ {
		k := FlowKey{Src: r.Uint32(), Dst: r.Uint32(), SrcPort: uint16(r.Uint32()), DstPort: uint16(r.Uint32()), Proto: uint8(r.Uint32())}
		seed := r.Uint32()
		if got, want := keyHash(&k, seed), k.Hash(seed); got != want {
			t.Fatalf("keyHash(%+v, %#x) = %#x, want FlowKey.Hash %#x", k, seed, got, want)
		}
		// From packet bytes, as Prefetch reads them.
		var hdr [24]byte
		binary.BigEndian.PutUint32(hdr[12:], k.Src)
		binary.BigEndian.PutUint32(hdr[16:], k.Dst)
		binary.BigEndian.PutUint16(hdr[20:], k.SrcPort)
		binary.BigEndian.PutUint16(hdr[22:], k.DstPort)
		got := flowHash(binary.LittleEndian.Uint32(hdr[12:]), binary.LittleEndian.Uint32(hdr[16:]),
			binary.LittleEndian.Uint32(hdr[20:]), uint32(k.Proto), seed)
		if want := k.Hash(seed); got != want {
			t.Fatalf("flowHash of the header bytes of %+v = %#x, want %#x", k, got, want)
		}
		// The slot hash as classify computes it from a frame.
		if k.Proto == ProtoTCP || k.Proto == ProtoUDP {
			// A frame classify hashes: fastFrame bytes behind the
			// headroom of the largest envelope.
			buf := make([]byte, maxFastHeader+fastFrame)
			fr := buf[maxFastHeader:]
			binary.BigEndian.PutUint16(fr[12:], EtherTypeIPv4)
			fr[14] = 0x45
			fr[14+9] = k.Proto
			copy(fr[14+12:], hdr[12:24])
			f := &Forwarder{Flows: NewFlowTable(16, DefaultFlowTimeouts), Seed: seed}
			var fp [packet.BurstSize]fastPkt
			want := slotHashKey(&k, seed)
			if m := f.classify([]packet.Packet{{Buf: buf, Off: maxFastHeader, Len: len(fr)}}, &fp); m != 1 || fp[0].hash != want {
				t.Fatalf("classify slot hash of %+v = %#x (mask %b), want %#x", k, fp[0].hash, m, want)
			}
		}
	}
}

// TestBucket6AddrMatchesSlotHash6: the bucket classify prefetches for an
// IPv6 frame is the one toService6 looks the flow up in.
func TestBucket6AddrMatchesSlotHash6(t *testing.T) {
	if !asmPrefetch {
		t.Skip("no prefetch on this architecture")
	}
	r := rand.New(rand.NewSource(4))
	f := &Forwarder{Flows: NewFlowTable(1<<12, DefaultFlowTimeouts)}
	f.Flows.enable6()
	for i := 0; i < 20000; i++ {
		var k FlowKey6
		r.Read(k.Src[:])
		r.Read(k.Dst[:])
		k.SrcPort, k.DstPort, k.Proto = uint16(r.Uint32()), uint16(r.Uint32()), []uint8{ProtoTCP, ProtoUDP}[i%2]
		f.Seed = r.Uint32()
		fr := make([]byte, EthernetMinSize+IPv6HeaderSize+4)
		binary.BigEndian.PutUint16(fr[12:], EtherTypeIPv6)
		fr[EthernetMinSize] = 0x60
		fr[EthernetMinSize+ipv6NextHeader] = k.Proto
		copy(fr[EthernetMinSize+ipv6Src:], k.Src[:])
		copy(fr[EthernetMinSize+ipv6Dst:], k.Dst[:])
		binary.BigEndian.PutUint16(fr[EthernetMinSize+IPv6HeaderSize:], k.SrcPort)
		binary.BigEndian.PutUint16(fr[EthernetMinSize+IPv6HeaderSize+2:], k.DstPort)
		a, ok := f.bucket6Addr(fr)
		want := uintptr(unsafe.Pointer(&f.Flows.buckets6[slotHash6(&k, f.Seed)&f.Flows.mask][0]))
		if !ok || a != want {
			t.Fatalf("bucket6Addr of %+v = %#x, %v; want the bucket of slotHash6, %#x", k, a, ok, want)
		}
	}
}

func TestHeaderSumOKMatchesChecksum(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	var ip [20]byte
	check := func() {
		t.Helper()
		if got, want := headerSumOK(ip[:]), Checksum(ip[:], 0) == 0; got != want {
			t.Fatalf("headerSumOK(%x) = %v, Checksum says %v", ip, got, want)
		}
	}
	for i := 0; i < 200000; i++ {
		r.Read(ip[:])
		switch i % 4 {
		case 0: // valid
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:], 0))
		case 1: // all zero but a few bytes: sums near 0 and 0xffff
			ip = [20]byte{}
			ip[r.Intn(20)] = byte(r.Intn(3))
			ip[r.Intn(20)] = 0xff
		case 2: // valid, then one bit flipped
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:], 0))
			ip[r.Intn(20)] ^= 1 << uint(r.Intn(8))
		}
		check()
	}
	for _, b := range []byte{0, 0xff} {
		ip = [20]byte{}
		for j := range ip {
			ip[j] = b
		}
		check()
	}
}

// fastSnapshot has one service per mode (l2 TCP/80, ipip UDP all ports,
// gre TCP/443), a draining and a down backend, an MTU that IMIX-sized
// frames overflow once encapsulated, and a VIP that is the port's address.
func fastSnapshot(t testing.TB) *Snapshot {
	t.Helper()
	mac := MAC{2, 0, 0, 0, 0, 1}
	be := func(id uint32, ip string, st BackendState) BackendSpec {
		return BackendSpec{ID: id, IP: netip.MustParseAddr(ip), Weight: 1, State: st, NextHop: mac}
	}
	s, err := NewSnapshot(SnapshotSpec{
		Generation: 1,
		Ports:      []PortSpec{{MAC: MAC{2, 0, 0, 0, 0, 0x10}, IP: netip.MustParseAddr("192.0.2.10"), MTU: 1500}},
		Services: []ServiceSpec{
			{ID: 0, Name: "l2", VIP: netip.MustParseAddr("203.0.113.1"), Proto: ProtoTCP, Port: 80, Mode: ModeL2,
				Backends: []BackendSpec{be(0, "192.0.2.21", BackendActive), be(1, "192.0.2.22", BackendDrain)}},
			{ID: 1, Name: "ipip", VIP: netip.MustParseAddr("203.0.113.2"), Proto: ProtoUDP, Port: 0, Mode: ModeIPIP,
				Backends: []BackendSpec{be(2, "10.1.0.1", BackendActive), be(3, "10.1.0.2", BackendDown), be(4, "10.1.0.3", BackendActive)}},
			{ID: 2, Name: "gre", VIP: netip.MustParseAddr("203.0.113.3"), Proto: ProtoTCP, Port: 443, Mode: ModeGRE,
				Backends: []BackendSpec{be(5, "10.2.0.1", BackendActive)}},
			// A VIP that is also the port's address: the kernel's.
			{ID: 3, Name: "own", VIP: netip.MustParseAddr("192.0.2.10"), Proto: ProtoUDP, Port: 7, Mode: ModeL2,
				Backends: []BackendSpec{be(6, "192.0.2.30", BackendActive)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runBoth sends frame through a forwarder the way Worker.burst does
// (Prefetch, then fast, else the reference) and through a twin with
// Process alone, and fails on any difference: verdict, egress, frame
// bytes and bounds, counters, flow table.
func runBoth(t *testing.T, s *Snapshot, a, b *Forwarder, frame []byte) bool {
	t.Helper()
	const room = 128
	bufA := make([]byte, room+len(frame)+64)
	copy(bufA[room:], frame)
	bufB := append([]byte(nil), bufA...)
	pa := []packet.Packet{{Buf: bufA, Off: room, Len: len(frame)}}
	pb := &packet.Packet{Buf: bufB, Off: room, Len: len(frame)}
	va, oa, fastTaken := a.burstOne(s, &pa[0], 0)
	vb, ob := b.Process(s, pb, 0)
	if va != vb || oa != ob || pa[0].Off != pb.Off || pa[0].Len != pb.Len || !bytes.Equal(bufA, bufB) {
		t.Fatalf("fast path: verdict %v port %d off %d len %d, reference %v %d %d %d\n fast %x\n ref  %x",
			va, oa, pa[0].Off, pa[0].Len, vb, ob, pb.Off, pb.Len, bufA, bufB)
	}
	if !reflect.DeepEqual(a.C, b.C) || a.ipID != b.ipID {
		t.Fatalf("fast path counters %+v\nreference %+v", a.C, b.C)
	}
	fa, fb := a.Flows, b.Flows
	if fa.Entries != fb.Entries || fa.Hits != fb.Hits || fa.Misses != fb.Misses || fa.Evictions != fb.Evictions ||
		fa.Expired != fb.Expired || !slices.Equal(fa.buckets, fb.buckets) {
		t.Fatalf("fast path flow table differs from the reference")
	}
	return fastTaken
}

// withPartialChecksums returns a copy of s whose port receives partial
// checksums (PortSpec.PartialChecksums).
func withPartialChecksums(s *Snapshot) *Snapshot {
	c := *s
	c.Ports = append([]PortState(nil), s.Ports...)
	for i := range c.Ports {
		c.Ports[i].PartialChecksums = true
		c.partialPorts |= 1 << uint(i)
	}
	return &c
}

// FuzzFastPath holds Forwarder.fastPath to Process: each input frame is sent
// twice (the first time it may create its flow, the second hits it),
// with the clock moved by the fuzzer between the two, on a port with or
// without partial checksums.
func FuzzFastPath(f *testing.F) {
	tcp := func(vip string, port uint16, flags uint8) []byte {
		return testpkt.Packet{Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr(vip), Proto: ProtoTCP,
			SrcPort: 40000, DstPort: port, TCPFlags: flags, DF: true, TOS: 0xb8, Payload: []byte("hello")}.Build()
	}
	udp := testpkt.Packet{Src: netip.MustParseAddr("198.51.100.8"), Dst: netip.MustParseAddr("203.0.113.2"), Proto: ProtoUDP,
		SrcPort: 5353, DstPort: 53, PadTo: 60}
	f.Add(tcp("203.0.113.1", 80, TCPFlagACK), uint32(0), false)
	f.Add(tcp("203.0.113.3", 443, TCPFlagSYN), uint32(10), false)
	f.Add(tcp("203.0.113.3", 443, TCPFlagFIN|TCPFlagACK), uint32(20000), false)
	f.Add(udp.Build(), uint32(400000), false)
	big := udp
	big.Payload = make([]byte, 1472)
	f.Add(big.Build(), uint32(1), false)
	ttl := udp
	ttl.TTL = 1
	f.Add(ttl.Build(), uint32(1), false)
	opt := udp
	opt.Options = []byte{1, 1, 1, 0}
	f.Add(opt.Build(), uint32(1), false)
	vlan := udp
	vlan.VLAN = 7
	f.Add(vlan.Build(), uint32(1), false)
	own := udp
	own.Dst, own.DstPort = netip.MustParseAddr("192.0.2.10"), 7
	f.Add(own.Build(), uint32(1), false)
	for _, p := range []testpkt.Packet{udp, own} {
		p.PartialChecksum = true
		f.Add(p.Build(), uint32(1), true)
		f.Add(p.Build(), uint32(1), false)
	}
	partialTCP := testpkt.Packet{Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("203.0.113.1"), Proto: ProtoTCP,
		SrcPort: 40000, DstPort: 80, DF: true, Payload: []byte("hello"), PartialChecksum: true}
	f.Add(partialTCP.Build(), uint32(1), true)
	// IPv6, which the fast path leaves to Process.
	f.Add(testpkt.Packet{Src: netip.MustParseAddr("2001:db8::7"), Dst: netip.MustParseAddr("2001:db8:100::1"), Proto: ProtoTCP,
		SrcPort: 40000, DstPort: 80, Payload: []byte("hello")}.Build(), uint32(1), false)
	f.Add(testpkt.Packet{Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("ff02::1"), Proto: ProtoICMPv6, ICMPType: 134}.Build(), uint32(1), false)
	s := fastSnapshot(f)
	sp := withPartialChecksums(s)
	f.Fuzz(func(t *testing.T, frame []byte, dt uint32, partial bool) {
		s := s
		if partial {
			s = sp
		}
		a := NewForwarder(64, DefaultFlowTimeouts, 0)
		b := NewForwarder(64, DefaultFlowTimeouts, 0)
		a.Use(s)
		b.Use(s)
		runBoth(t, s, a, b, frame)
		a.Now, b.Now = dt, dt
		runBoth(t, s, a, b, frame)
	})
}

// TestFastPathFlows holds the fast path to Process over many flows, with
// flow table evictions, expiry and a snapshot swap that moves backends, on
// a port without and one with partial checksums (a third of the packets
// carry one).
func TestFastPathFlows(t *testing.T) {
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("partial=%v", partial), func(t *testing.T) { fastPathFlows(t, partial) })
	}
}

func fastPathFlows(t *testing.T, partial bool) {
	s := fastSnapshot(t)
	if partial {
		s = withPartialChecksums(s)
	}
	a := NewForwarder(512, DefaultFlowTimeouts, 7)
	b := NewForwarder(512, DefaultFlowTimeouts, 7)
	a.Use(s)
	b.Use(s)
	vips := []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"}
	r := rand.New(rand.NewSource(4))
	fast := 0
	for i := 0; i < 20000; i++ {
		if i == 10000 { // the ipip service loses a backend, the l2 one gains one
			spec := SnapshotSpec{Generation: 2, Ports: []PortSpec{{MAC: MAC{2, 0, 0, 0, 0, 0x10}, IP: netip.MustParseAddr("192.0.2.10"), MTU: 1500}}}
			for _, svc := range s.Services {
				ss := ServiceSpec{ID: svc.ID, Name: svc.Name, VIP: netip.AddrFrom4([4]byte{byte(svc.VIP >> 24), byte(svc.VIP >> 16), byte(svc.VIP >> 8), byte(svc.VIP)}), Proto: svc.Proto, Port: svc.Port, Mode: svc.Mode}
				for _, be := range svc.Backends {
					if be.Addr.String() == "10.1.0.3" {
						continue
					}
					ss.Backends = append(ss.Backends, BackendSpec{ID: be.ID, IP: be.Addr, Weight: 1, State: be.State, NextHop: MAC{2, 0, 0, 0, 0, 1}})
				}
				if svc.Name == "l2" {
					ss.Backends = append(ss.Backends, BackendSpec{ID: 9, IP: netip.MustParseAddr("192.0.2.20"), Weight: 1, NextHop: MAC{2, 0, 0, 0, 0, 2}})
				}
				spec.Services = append(spec.Services, ss)
			}
			spec.Ports[0].PartialChecksums = partial
			var err error
			if s, err = NewSnapshot(spec); err != nil {
				t.Fatal(err)
			}
			a.Use(s)
			b.Use(s)
		}
		v := r.Intn(3)
		p := testpkt.Packet{Src: netip.AddrFrom4([4]byte{198, 18, 0, byte(r.Intn(40))}), Dst: netip.MustParseAddr(vips[v]),
			SrcPort: uint16(1000 + r.Intn(4)), PadTo: 60, PartialChecksum: i%3 == 0}
		switch v {
		case 0:
			p.Proto, p.DstPort, p.TCPFlags = ProtoTCP, 80, []uint8{TCPFlagSYN, TCPFlagACK, TCPFlagFIN}[r.Intn(3)]
		case 1:
			p.Proto, p.DstPort = ProtoUDP, uint16(r.Intn(4))
		default:
			p.Proto, p.DstPort = ProtoTCP, 443
		}
		a.Now += uint32(r.Intn(5))
		if i%2500 == 0 {
			a.Now += 6000 // past the SYN timeout
		}
		b.Now = a.Now
		if runBoth(t, s, a, b, p.Build()) {
			fast++
		}
	}
	if fast < 5000 {
		t.Errorf("only %d of 20000 packets took the fast path", fast)
	}
	if a.Flows.Hits == 0 || a.Flows.Evictions == 0 || a.Flows.Expired == 0 || a.C.FlowRemapped == 0 ||
		(a.C.L4ChecksumsCompleted == 0) == partial {
		t.Errorf("the run did not reach every case: hits %d evictions %d expired %d remapped %d checksums completed %d",
			a.Flows.Hits, a.Flows.Evictions, a.Flows.Expired, a.C.FlowRemapped, a.C.L4ChecksumsCompleted)
	}
}

// TestLookupServiceMatchesSlow holds the one-probe LookupService to the
// two-probe reference over random service sets: VIPs with an all-ports
// service, with one to five single-port services, or both.
func TestLookupServiceMatchesSlow(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	for round := 0; round < 200; round++ {
		spec := SnapshotSpec{Ports: []PortSpec{{IP: netip.MustParseAddr("192.0.2.10")}}}
		seen := map[[3]int]bool{}
		for i := 0; i < 1+r.Intn(20); i++ {
			vip, proto, port := 1+r.Intn(3), []uint8{ProtoTCP, ProtoUDP}[r.Intn(2)], []uint16{0, 53, 80, 443, 8080, 9000}[r.Intn(6)]
			if seen[[3]int{vip, int(proto), int(port)}] {
				continue
			}
			seen[[3]int{vip, int(proto), int(port)}] = true
			spec.Services = append(spec.Services, ServiceSpec{ID: uint32(i), Name: fmt.Sprint(i),
				VIP: netip.AddrFrom4([4]byte{203, 0, 113, byte(vip)}), Proto: proto, Port: port, Mode: ModeL2,
				Backends: []BackendSpec{{ID: uint32(i), IP: netip.MustParseAddr("192.0.2.20"), Weight: 1, NextHop: MAC{2}}}})
		}
		s, err := NewSnapshot(spec)
		if err != nil {
			t.Fatal(err)
		}
		for vip := uint32(0xcb007100); vip <= 0xcb007104; vip++ {
			for _, proto := range []uint8{ProtoTCP, ProtoUDP, ProtoICMP} {
				for _, port := range []uint16{0, 1, 53, 80, 443, 8080, 9000} {
					if got, want := s.LookupService(vip, proto, port), s.lookupServiceSlow(vip, proto, port); got != want {
						t.Fatalf("LookupService(%#x, %d, %d) = %d, reference %d (services %+v)", vip, proto, port, got, want, spec.Services)
					}
				}
			}
		}
	}
}

// TestSlotHashSpreads: the flow table hash spreads structured flow sets
// (consecutive clients, ports, a few VIPs; only high address bits varying)
// over the buckets like a random function would.
func TestSlotHashSpreads(t *testing.T) {
	const buckets = 1 << 16
	for _, tc := range []struct {
		desc string
		key  func(i uint32) (src, dst, ports uint32)
	}{
		{"consecutive clients", func(i uint32) (uint32, uint32, uint32) { return 0xc6120000 + i, 0xcb007101 + i%3, 1024<<16 | 80 }},
		{"source ports", func(i uint32) (uint32, uint32, uint32) { return 0xc6120000 + i>>16, 0xcb007101, (i&0xffff)<<16 | 443 }},
		{"high address bits", func(i uint32) (uint32, uint32, uint32) { return i<<14 | i>>18, 0xcb007101, 1024<<16 | 53 }},
		{"destination ports", func(i uint32) (uint32, uint32, uint32) { return 0xc6120000 + i>>16, 0xcb007102, 5353<<16 | i&0xffff }},
	} {
		var count [buckets]uint8
		max := uint8(0)
		const n = 4 * buckets // 4 per bucket on average, all distinct
		for i := uint32(0); i < n; i++ {
			src, dst, ports := tc.key(i)
			b := slotHash(flowAddrs(src, dst), flowTag(ports, ProtoTCP), 0) % buckets
			count[b]++
			max = maxU8(max, count[b])
		}
		// Poisson(4): P(X >= 16) ~ 1e-5, so over 65536 buckets about one.
		if max > 17 {
			t.Errorf("%s: a bucket got %d flows, want about 4", tc.desc, max)
		}
	}
}

func maxU8(a, b uint8) uint8 {
	if a > b {
		return a
	}
	return b
}

// TestLookupServiceManyPorts: more single-port services on one VIP than a
// protoSlot counts in a byte still resolve, as does the all-ports service.
func TestLookupServiceManyPorts(t *testing.T) {
	spec := SnapshotSpec{Ports: []PortSpec{{IP: netip.MustParseAddr("192.0.2.10")}}}
	vip := netip.MustParseAddr("203.0.113.9")
	be := []BackendSpec{{ID: 1, IP: netip.MustParseAddr("192.0.2.20"), Weight: 1, NextHop: MAC{2}}}
	spec.Services = append(spec.Services, ServiceSpec{ID: 0, Name: "any", VIP: vip, Proto: ProtoUDP, Mode: ModeL2, Backends: be})
	for p := 1; p <= 258; p++ { // 258: a byte count would wrap to 2
		spec.Services = append(spec.Services, ServiceSpec{ID: uint32(p), Name: fmt.Sprint(p), VIP: vip, Proto: ProtoUDP,
			Port: uint16(p), Mode: ModeL2, Backends: be})
	}
	s, err := NewSnapshot(spec)
	if err != nil {
		t.Fatal(err)
	}
	for port := 0; port <= 270; port++ {
		want := 0
		if port >= 1 && port <= 258 {
			want = port
		}
		if got := s.LookupService(addrU32(vip), ProtoUDP, uint16(port)); got < 0 || s.Services[got].ID != uint32(want) {
			t.Fatalf("LookupService(port %d) = index %d, want the service with ID %d", port, got, want)
		}
	}
	if s.Services[0].owns {
		t.Errorf("the all-ports service owns its VIP despite 258 single-port services on it")
	}
}

// TestFastPathSingleServiceAdded: a flow of an all-ports service whose port
// gets a service of its own in a new snapshot must move to that service
// (Process remaps it); the fast path must not keep it on the old one.
func TestFastPathSingleServiceAdded(t *testing.T) {
	s1 := fastSnapshot(t)
	spec := SnapshotSpec{Generation: 2, Ports: []PortSpec{{MAC: MAC{2, 0, 0, 0, 0, 0x10}, IP: netip.MustParseAddr("192.0.2.10"), MTU: 1500}}}
	for _, svc := range s1.Services {
		ss := ServiceSpec{ID: svc.ID, Name: svc.Name, VIP: netip.AddrFrom4(svc.VIPBytes()), Proto: svc.Proto, Port: svc.Port, Mode: svc.Mode}
		for _, be := range svc.Backends {
			ss.Backends = append(ss.Backends, BackendSpec{ID: be.ID, IP: be.Addr, Weight: 1, State: be.State, NextHop: MAC{2, 0, 0, 0, 0, 1}})
		}
		spec.Services = append(spec.Services, ss)
	}
	spec.Services = append(spec.Services, ServiceSpec{ID: 9, Name: "dns", VIP: netip.MustParseAddr("203.0.113.2"), Proto: ProtoUDP,
		Port: 53, Mode: ModeL2, Backends: []BackendSpec{{ID: 9, IP: netip.MustParseAddr("192.0.2.99"), Weight: 1, NextHop: MAC{2, 0, 0, 0, 0, 9}}}})
	s2, err := NewSnapshot(spec)
	if err != nil {
		t.Fatal(err)
	}
	frame := testpkt.Packet{Src: netip.MustParseAddr("198.51.100.8"), Dst: netip.MustParseAddr("203.0.113.2"), Proto: ProtoUDP,
		SrcPort: 5353, DstPort: 53, PadTo: 60}.Build()
	a := NewForwarder(64, DefaultFlowTimeouts, 0)
	b := NewForwarder(64, DefaultFlowTimeouts, 0)
	a.Use(s1)
	b.Use(s1)
	runBoth(t, s1, a, b, frame) // creates the flow on the all-ports service
	if !runBoth(t, s1, a, b, frame) {
		t.Fatalf("second packet of the flow did not take the fast path")
	}
	a.Use(s2)
	b.Use(s2)
	if runBoth(t, s2, a, b, frame) {
		t.Errorf("fast path kept the flow on the all-ports service after port 53 got its own")
	}
	if got := a.C.Services[9].Packets; got != 1 {
		t.Errorf("service dns counted %d packets, want 1", got)
	}
	if !runBoth(t, s2, a, b, frame) {
		t.Errorf("the flow, now on service dns, did not take the fast path")
	}
}

// TestSameEgress: sameEgress, which compares four ports at a time, agrees
// with comparing them one by one, for every burst length, with a
// different port at every position and past the end.
func TestSameEgress(t *testing.T) {
	fill := func(b *rxBurst) {
		for i := range b.egress {
			b.egress[i] = 3
		}
	}
	for n := 1; n <= packet.BurstSize; n++ {
		var b rxBurst
		fill(&b)
		if !sameEgress(&b.egress, n) {
			t.Errorf("n=%d, all ports 3: got false, want true", n)
		}
		if n < packet.BurstSize {
			b.egress[packet.BurstSize-1] = 9
			if !sameEgress(&b.egress, n) {
				t.Errorf("n=%d, only a port past n differs: got false, want true", n)
			}
		}
		for d := 0; d < n; d++ {
			fill(&b)
			b.egress[d] = 4
			if got, want := sameEgress(&b.egress, n), n == 1; got != want {
				t.Errorf("n=%d, port %d differs: got %v, want %v", n, d, got, want)
			}
		}
	}
}

// TestFastPathServiceMovedVIPAndProto: a service keeps its ID when it is
// edited. Moved to a VIP that differs from the old one exactly where a
// flow's tag holds the protocol, and to the other protocol, its old flows
// must go to Process (which finds no service for them), not stay on the
// fast path: the fast path compares the address apart from the tag.
func TestFastPathServiceMovedVIPAndProto(t *testing.T) {
	mac := MAC{2, 0, 0, 0, 0, 1}
	vip := netip.MustParseAddr("203.0.113.2")
	b4 := vip.As4()
	b4[2] ^= ProtoTCP ^ ProtoUDP // bits 8..15 of the address, as the protocol in a tag
	moved := netip.AddrFrom4(b4)
	snap := func(gen uint64, vip netip.Addr, proto uint8) *Snapshot {
		s, err := NewSnapshot(SnapshotSpec{Generation: gen,
			Ports: []PortSpec{{MAC: MAC{2, 0, 0, 0, 0, 0x10}, IP: netip.MustParseAddr("192.0.2.10"), MTU: 1500}},
			Services: []ServiceSpec{{ID: 0, Name: "svc", VIP: vip, Proto: proto, Port: 80, Mode: ModeL2,
				Backends: []BackendSpec{{ID: 1, IP: netip.MustParseAddr("192.0.2.21"), Weight: 1, NextHop: mac}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1, s2 := snap(1, vip, ProtoTCP), snap(2, moved, ProtoUDP)
	frame := func(flags uint8) []byte {
		return testpkt.Packet{Src: netip.MustParseAddr("198.51.100.8"), Dst: vip, Proto: ProtoTCP,
			SrcPort: 40000, DstPort: 80, TCPFlags: flags}.Build()
	}
	a := NewForwarder(64, DefaultFlowTimeouts, 0)
	b := NewForwarder(64, DefaultFlowTimeouts, 0)
	a.Use(s1)
	b.Use(s1)
	runBoth(t, s1, a, b, frame(TCPFlagSYN))
	if !runBoth(t, s1, a, b, frame(TCPFlagACK)) {
		t.Fatalf("the established flow did not take the fast path")
	}
	a.Use(s2)
	b.Use(s2)
	if runBoth(t, s2, a, b, frame(TCPFlagACK)) {
		t.Errorf("the fast path kept a flow of %v/tcp on service svc after it moved to %v/udp", vip, moved)
	}
}
