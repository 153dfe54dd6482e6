package pipeline_test

import (
	"net/netip"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// flowWays is the flow table's ways per bucket: a table of this capacity
// is one bucket.
const flowWays = 4

// floodSnap is flowSnap's service (IPv4 VIP vipIPIP, TCP 80, n IPIP
// backends) beside an IPv6 one (vip6IP, TCP 443, n IPv6 backends), with
// the worker's new-flow rate and each service's limit of new flows.
func floodSnap(t testing.TB, gen uint64, n int, rate, svcLimit uint32) *Snapshot {
	t.Helper()
	var bs, bs6 []BackendSpec
	for i := 1; i <= n; i++ {
		bs = append(bs, BackendSpec{ID: uint32(i), IP: netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), Weight: 1, NextHop: gwMAC})
		bs6 = append(bs6, BackendSpec{ID: uint32(100 + i), IP: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}),
			Weight: 1, NextHop: gwMAC})
	}
	s, err := NewSnapshot(SnapshotSpec{Generation: gen, Ports: []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6}},
		NewFlowsPerSecond: rate,
		Services: []ServiceSpec{
			{ID: 0, Name: "v4", VIP: vipIPIP, Proto: ProtoTCP, Port: 80, Mode: ModeIPIP, Backends: bs, NewFlowsPerSecond: svcLimit},
			{ID: 1, Name: "v6", VIP: vip6IP, Proto: ProtoTCP, Port: 443, Mode: ModeIPIP, Backends: bs6, NewFlowsPerSecond: svcLimit},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// floodPkt is client i's TCP segment with flags to the IPv4 or the IPv6
// service of floodSnap.
func floodPkt(v6 bool, i int, flags uint8) []byte {
	p := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}),
		Dst: vipIPIP, Proto: ProtoTCP, SrcPort: uint16(20000 + i), DstPort: 80, TCPFlags: flags}
	if v6 {
		p.Src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xc0, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		p.Dst, p.DstPort = vip6IP, 443
	}
	return p.Build()
}

// send processes frame and returns the verdict, the drop reason and the
// backend the packet went to (its outer destination), "" when dropped.
func send(t *testing.T, f *Forwarder, s *Snapshot, frame []byte) (Verdict, DropReason, string) {
	t.Helper()
	f.Use(s)
	p := newPacket(frame)
	drops := f.C.Drops
	v, _ := f.Process(s, p, 0)
	r := DropNone
	for i := range drops {
		if f.C.Drops[i] != drops[i] {
			r = DropReason(i)
		}
	}
	if v != VerdictTx {
		return v, r, ""
	}
	out := p.Data()[EthernetMinSize:]
	if IPv4(out).Version() == 4 {
		return v, r, netip.AddrFrom4(IPv4(out).Dst()).String()
	}
	return v, r, netip.AddrFrom16([16]byte(out[24:40])).String()
}

// TestFloodTableFull fills a one-bucket table with established flows, then
// floods it with SYNs from new sources: every SYN is forwarded without an
// entry (stateless, table full), no established flow loses its entry, and
// after a backend is added each keeps its backend.
func TestFloodTableFull(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "ipv4", true: "ipv6"}[v6]
		t.Run(name, func(t *testing.T) {
			f := NewForwarder(flowWays, DefaultFlowTimeouts, 0) // one bucket
			s := floodSnap(t, 1, 4, 0, 0)
			f.Now = 1000
			before := make([]string, flowWays)
			for i := range before {
				send(t, f, s, floodPkt(v6, i, TCPFlagSYN))
				_, _, before[i] = send(t, f, s, floodPkt(v6, i, TCPFlagACK))
			}
			const flood = 200
			for i := 0; i < flood; i++ {
				f.Now++
				if v, r, be := send(t, f, s, floodPkt(v6, 1000+i, TCPFlagSYN)); v != VerdictTx || be == "" {
					t.Fatalf("flood SYN %d: verdict %v %v, want forwarded", i, v, r)
				}
			}
			if f.C.FlowStateless != flood || f.Flows.Full != flood || f.Flows.Evictions != 0 {
				t.Errorf("stateless %d, table full %d, evictions %d; want %d, %d, 0",
					f.C.FlowStateless, f.Flows.Full, f.Flows.Evictions, flood, flood)
			}
			grown := floodSnap(t, 2, 5, 0, 0)
			hits := f.Flows.Hits
			for i, want := range before {
				if _, _, got := send(t, f, grown, floodPkt(v6, i, TCPFlagACK)); got != want {
					t.Errorf("established flow %d went to %s after a backend was added, want %s", i, got, want)
				}
			}
			if got := f.Flows.Hits - hits; got != flowWays {
				t.Errorf("%d flow table hits for the established flows, want %d", got, flowWays)
			}
		})
	}
}

// TestFloodEvictsOnlySynEntries: a new flow evicts the least recently used
// entry that saw only SYNs, never an established one.
func TestFloodEvictsOnlySynEntries(t *testing.T) {
	f := NewForwarder(flowWays, DefaultFlowTimeouts, 0)
	s := floodSnap(t, 1, 4, 0, 0)
	f.Now = 1000
	// Flows 0 and 1 established (0 the least recently used of all),
	// 2 and 3 only SYNs.
	send(t, f, s, floodPkt(false, 0, TCPFlagSYN))
	send(t, f, s, floodPkt(false, 0, TCPFlagACK))
	f.Now++
	for _, i := range []int{2, 3} {
		send(t, f, s, floodPkt(false, i, TCPFlagSYN))
		f.Now++
	}
	send(t, f, s, floodPkt(false, 1, TCPFlagSYN))
	send(t, f, s, floodPkt(false, 1, TCPFlagACK))
	f.Now++
	send(t, f, s, floodPkt(false, 9, TCPFlagSYN))
	if f.Flows.Evictions != 1 || f.Flows.Full != 0 || f.C.FlowStateless != 0 {
		t.Fatalf("evictions %d, full %d, stateless %d; want 1, 0, 0", f.Flows.Evictions, f.Flows.Full, f.C.FlowStateless)
	}
	for _, tc := range []struct {
		flow int
		kept bool
	}{{0, true}, {1, true}, {2, false}, {3, true}, {9, true}} {
		k := keyOf(tc.flow)
		if got := f.Flows.HasFlowForTest(&k, 0); got != tc.kept {
			t.Errorf("flow %d has an entry: %v, want %v", tc.flow, got, tc.kept)
		}
	}
}

// keyOf returns the flow key of floodPkt's IPv4 flow i.
func keyOf(i int) FlowKey {
	return FlowKey{Src: 172<<24 | 16<<16 | uint32(i), Dst: IPv4(floodPkt(false, 0, 0)[EthernetMinSize:]).DstU32(),
		SrcPort: uint16(20000 + i), DstPort: 80, Proto: ProtoTCP}
}

// TestFloodRate: above the worker's new-flow rate new flows are forwarded
// without an entry; the bucket refills with the clock.
func TestFloodRate(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "ipv4", true: "ipv6"}[v6]
		t.Run(name, func(t *testing.T) {
			f := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
			s := floodSnap(t, 1, 4, 100, 0)
			f.Now = 5000
			next := 0
			burst := func(n int) {
				for i := 0; i < n; i++ {
					if v, r, _ := send(t, f, s, floodPkt(v6, next, TCPFlagSYN)); v != VerdictTx {
						t.Fatalf("flow %d: %v %v, want forwarded", next, v, r)
					}
					next++
				}
			}
			burst(150) // one second's worth get entries
			if f.Flows.Entries != 100 || f.C.FlowStateless != 50 {
				t.Errorf("entries %d, stateless %d; want 100, 50", f.Flows.Entries, f.C.FlowStateless)
			}
			f.Now += 200 // 20 more
			burst(30)
			if f.Flows.Entries != 120 || f.C.FlowStateless != 60 {
				t.Errorf("after 200 ms: entries %d, stateless %d; want 120, 60", f.Flows.Entries, f.C.FlowStateless)
			}
			if f.Flows.Full != 0 {
				t.Errorf("table full %d, want 0", f.Flows.Full)
			}
			// An established flow keeps its entry whatever the rate.
			hits := f.Flows.Hits
			send(t, f, s, floodPkt(v6, 0, TCPFlagACK))
			if f.Flows.Hits != hits+1 {
				t.Error("flow 0 lost its entry")
			}
		})
	}
}

// TestNewFlowLimit: a service's new flows over its limit are dropped and
// counted for it; segments without SYN are not held to the limit.
func TestNewFlowLimit(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "ipv4", true: "ipv6"}[v6]
		t.Run(name, func(t *testing.T) {
			f := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
			s := floodSnap(t, 1, 4, 0, 5)
			svc := uint32(map[bool]int{false: 0, true: 1}[v6])
			f.Now = 5000
			var tx, dropped int
			for i := 0; i < 8; i++ {
				switch v, r, _ := send(t, f, s, floodPkt(v6, i, TCPFlagSYN)); {
				case v == VerdictTx:
					tx++
				case r == DropNewFlowLimit:
					dropped++
				default:
					t.Fatalf("flow %d: %v %v", i, v, r)
				}
			}
			if tx != 5 || dropped != 3 {
				t.Errorf("%d forwarded, %d dropped; want 5, 3", tx, dropped)
			}
			if got := f.C.Services[svc].NewFlowLimited; got != 3 {
				t.Errorf("service new_flow_limited %d, want 3", got)
			}
			if got := f.C.Drops[DropNewFlowLimit]; got != 3 {
				t.Errorf("drops new_flow_limit %d, want 3", got)
			}
			if v, r, _ := send(t, f, s, floodPkt(v6, 7, TCPFlagACK)); v != VerdictTx {
				t.Errorf("ACK of a flow without entry over the limit: %v %v, want forwarded", v, r)
			}
			if DropNewFlowLimit.String() != "new_flow_limit" {
				t.Errorf("name %q", DropNewFlowLimit.String())
			}
		})
	}
}

// TestFloodZeroAllocs: the stateless paths (over the rate, table full)
// and the per-service drop allocate nothing.
func TestFloodZeroAllocs(t *testing.T) {
	for _, tc := range []struct {
		desc           string
		rate, svcLimit uint32
		capacity       int
	}{
		{"over the rate", 1, 0, 1 << 12},
		{"table full", 0, 0, flowWays},
		{"service limit", 0, 1, 1 << 12},
	} {
		for _, v6 := range []bool{false, true} {
			s := floodSnap(t, 1, 4, tc.rate, tc.svcLimit)
			f := NewForwarder(tc.capacity, DefaultFlowTimeouts, 0)
			f.Use(s)
			f.Now = 5000
			// Fill the table (or spend the tokens) with established flows.
			for i := 0; i < flowWays; i++ {
				for _, fl := range []uint8{TCPFlagSYN, TCPFlagACK} {
					p := newPacket(floodPkt(v6, i, fl))
					f.Process(s, p, 0)
				}
			}
			frames := make([][]byte, 64)
			for i := range frames {
				frames[i] = floodPkt(v6, 1000+i, TCPFlagSYN)
			}
			p := newPacket(frames[0])
			n := 0
			allocs := testing.AllocsPerRun(1000, func() {
				fr := frames[n%len(frames)]
				n++
				copy(p.Buf[headroom:], fr)
				p.Off, p.Len = headroom, len(fr)
				f.Process(s, p, 0)
			})
			if allocs != 0 {
				t.Errorf("%s (v6 %v): %v allocs per packet, want 0", tc.desc, v6, allocs)
			}
			if f.C.FlowStateless == 0 && f.C.Drops[DropNewFlowLimit] == 0 {
				t.Errorf("%s (v6 %v): nothing stateless nor dropped", tc.desc, v6)
			}
		}
	}
}

// TestFloodLimitsFromStart: a worker's clock starts at 0, and its first
// second gets the whole of each rate (the buckets start full), not none.
func TestFloodLimitsFromStart(t *testing.T) {
	f := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
	s := floodSnap(t, 1, 4, 100, 5)
	var tx, limited int
	for i := 0; i < 150; i++ {
		switch v, r, _ := send(t, f, s, floodPkt(false, i, TCPFlagSYN)); {
		case v == VerdictTx:
			tx++
		case r == DropNewFlowLimit:
			limited++
		default:
			t.Fatalf("flow %d: %v %v", i, v, r)
		}
	}
	if tx != 5 || limited != 145 || f.Flows.Entries != 5 {
		t.Errorf("at clock %d: %d forwarded (%d entries), %d over the service's limit; want 5 (5), 145", f.Now, tx, f.Flows.Entries, limited)
	}
	f2 := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
	s2 := floodSnap(t, 1, 4, 100, 0)
	for i := 0; i < 150; i++ {
		send(t, f2, s2, floodPkt(false, i, TCPFlagSYN))
	}
	if f2.Flows.Entries != 100 || f2.C.FlowStateless != 50 {
		t.Errorf("at clock %d: entries %d, stateless %d; want 100, 50", f2.Now, f2.Flows.Entries, f2.C.FlowStateless)
	}
}
