package pipeline_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// flowSnap builds a one-service snapshot over backends 10.9.0.1..n with the
// given states (missing: active) and weights (missing: 1).
func flowSnap(t testing.TB, gen uint64, n int, states map[int]BackendState, skip map[int]bool) *Snapshot {
	t.Helper()
	var bs []BackendSpec
	for i := 1; i <= n; i++ {
		if skip[i] {
			continue
		}
		bs = append(bs, BackendSpec{ID: uint32(i), IP: netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), Weight: 1,
			State: states[i], NextHop: gwMAC})
	}
	s, err := NewSnapshot(SnapshotSpec{Generation: gen, Ports: []PortSpec{{MAC: portMAC, IP: portIP}},
		Services: []ServiceSpec{{ID: 0, Name: "svc", VIP: vipIPIP, Proto: ProtoTCP, Port: 80, Mode: ModeIPIP, Backends: bs}}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sendFlows sends one packet of each of n flows and returns the backend
// (outer destination) each went to.
func sendFlows(t *testing.T, f *Forwarder, s *Snapshot, n int, flags uint8) []string {
	t.Helper()
	f.Use(s)
	out := make([]string, n)
	for i := 0; i < n; i++ {
		pk := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}),
			Dst: vipIPIP, Proto: ProtoTCP, SrcPort: uint16(20000 + i), DstPort: 80, TCPFlags: flags}
		p := newPacket(pk.Build())
		if v, _ := f.Process(s, p, 0); v != VerdictTx {
			out[i] = "dropped"
			continue
		}
		out[i] = netip.AddrFrom4(IPv4(p.Data()[14:]).Dst()).String()
	}
	return out
}

func TestFlowRules(t *testing.T) {
	const flows = 4000
	base := flowSnap(t, 1, 4, nil, nil)
	for _, tc := range []struct {
		desc  string
		next  *Snapshot
		check func(t *testing.T, before, after []string)
	}{
		{"adding a backend moves no flow", flowSnap(t, 2, 5, nil, nil), func(t *testing.T, before, after []string) {
			for i := range before {
				if before[i] != after[i] {
					t.Fatalf("flow %d moved %s -> %s", i, before[i], after[i])
				}
			}
		}},
		{"draining keeps old flows", flowSnap(t, 2, 4, map[int]BackendState{2: BackendDrain}, nil), func(t *testing.T, before, after []string) {
			for i := range before {
				if before[i] != after[i] {
					t.Fatalf("flow %d moved %s -> %s", i, before[i], after[i])
				}
			}
		}},
		{"a failed backend's flows move at once, the others stay", flowSnap(t, 2, 4, map[int]BackendState{3: BackendDown}, nil), func(t *testing.T, before, after []string) {
			moved := 0
			for i := range before {
				switch {
				case before[i] == "10.9.0.3" && after[i] == "10.9.0.3":
					t.Fatalf("flow %d still on the failed backend", i)
				case before[i] == "10.9.0.3":
					moved++
				case before[i] != after[i]:
					t.Fatalf("flow %d on a healthy backend moved %s -> %s", i, before[i], after[i])
				}
			}
			if moved == 0 {
				t.Fatal("no flow was on the failed backend")
			}
		}},
		{"a removed backend's flows move at once", flowSnap(t, 2, 4, nil, map[int]bool{1: true}), func(t *testing.T, before, after []string) {
			for i := range before {
				if after[i] == "10.9.0.1" {
					t.Fatalf("flow %d still goes to the removed backend", i)
				}
				if before[i] != "10.9.0.1" && before[i] != after[i] {
					t.Fatalf("flow %d moved %s -> %s", i, before[i], after[i])
				}
			}
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := NewForwarder(1<<16, DefaultFlowTimeouts, 0)
			before := sendFlows(t, f, base, flows, TCPFlagACK)
			after := sendFlows(t, f, tc.next, flows, TCPFlagACK)
			tc.check(t, before, after)
		})
	}
}

func TestDrainedBackendTakesNoNewFlows(t *testing.T) {
	f := NewForwarder(1<<16, DefaultFlowTimeouts, 0)
	drained := flowSnap(t, 1, 4, map[int]BackendState{2: BackendDrain}, nil)
	for i, b := range sendFlows(t, f, drained, 4000, TCPFlagSYN) {
		if b == "10.9.0.2" {
			t.Fatalf("new flow %d went to the drained backend", i)
		}
	}
	if f.C.Backends[2].NewFlows != 0 {
		t.Errorf("drained backend counted %d new flows", f.C.Backends[2].NewFlows)
	}
}

func TestFlowTableCounters(t *testing.T) {
	f := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
	s := flowSnap(t, 1, 4, nil, nil)
	sendFlows(t, f, s, 100, TCPFlagSYN)
	sendFlows(t, f, s, 100, TCPFlagACK)
	if f.Flows.Misses != 100 || f.Flows.Hits != 100 || f.Flows.Entries != 100 {
		t.Errorf("misses %d hits %d entries %d, want 100 each", f.Flows.Misses, f.Flows.Hits, f.Flows.Entries)
	}
}

func TestFlowTableEvictsLRU(t *testing.T) {
	ft := NewFlowTable(4, DefaultFlowTimeouts) // one bucket of 4 ways
	keys := make([]FlowKey, 5)
	for i := range keys {
		keys[i] = FlowKey{Src: uint32(i + 1), Dst: 9, SrcPort: 1, DstPort: 80, Proto: ProtoTCP}
	}
	for i := 0; i < 4; i++ {
		ft.Insert(&keys[i], 0, uint32(i), 0, uint32(i))
	}
	// Touch key 0 so key 1 is the least recently used.
	if ft.Lookup(&keys[0], 0, 10) == nil {
		t.Fatal("key 0 missing")
	}
	ft.Touch(ft.Lookup(&keys[0], 0, 10), TCPFlagACK, 10)
	ft.Insert(&keys[4], 0, 11, 0, 4)
	if ft.Evictions != 1 || ft.Lookup(&keys[1], 0, 12) != nil || ft.Lookup(&keys[0], 0, 12) == nil {
		t.Errorf("evictions %d; want key 1 evicted and key 0 kept", ft.Evictions)
	}
}

func TestFlowTimeouts(t *testing.T) {
	to := FlowTimeouts{TCPSyn: time.Second, TCPEstablished: 100 * time.Second, TCPClosing: 2 * time.Second, UDP: 30 * time.Second}
	for _, tc := range []struct {
		desc            string
		flags           []uint8
		aliveAt, deadAt uint32 // ms after the last packet
	}{
		{"SYN only", []uint8{TCPFlagSYN}, 900, 1100},
		{"established", []uint8{TCPFlagSYN, TCPFlagACK}, 99000, 101000},
		{"after FIN", []uint8{TCPFlagSYN, TCPFlagACK, TCPFlagFIN | TCPFlagACK}, 1900, 2100},
		{"after RST", []uint8{TCPFlagSYN, TCPFlagACK, TCPFlagRST}, 1900, 2100},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ft := NewFlowTable(1024, to)
			k := FlowKey{Src: 1, Dst: 2, SrcPort: 3, DstPort: 80, Proto: ProtoTCP}
			now := uint32(1000)
			for _, fl := range tc.flags {
				e := ft.Lookup(&k, 7, now)
				if e == nil {
					e = ft.Insert(&k, 7, now, 0, 1)
				}
				ft.Touch(e, fl, now)
			}
			if ft.Lookup(&k, 7, now+tc.aliveAt) == nil {
				t.Errorf("expired before %d ms", tc.aliveAt)
			}
			if ft.Lookup(&k, 7, now+tc.deadAt) != nil {
				t.Errorf("alive at %d ms", tc.deadAt)
			}
		})
	}
}

func ExampleFlowTable() {
	ft := NewFlowTable(1<<10, DefaultFlowTimeouts)
	fmt.Println(ft.Capacity())
	// Output: 1024
}
