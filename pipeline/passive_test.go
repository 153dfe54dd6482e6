package pipeline_test

import (
	"math/rand"
	"net/netip"
	"sync/atomic"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// synTo is a TCP segment of flow i of flowSnap's service with the given
// flags.
func synTo(i int, flags uint8) testpkt.Packet {
	return testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}),
		Dst: vipIPIP, Proto: ProtoTCP, SrcPort: uint16(20000 + i), DstPort: 80, TCPFlags: flags}
}

// passiveSums returns the SynRetransmits and UnansweredFlows of backends
// 1..4 of flowSnap, and their NewFlows.
func passiveSums(c *Counters) (retx, unanswered, newFlows [5]uint64) {
	for id := uint32(1); id <= 4; id++ {
		b := c.Backend(id)
		retx[id], unanswered[id], newFlows[id] = b.SynRetransmits, b.UnansweredFlows, b.NewFlows
	}
	return
}

// TestSynRetransmitsCounted: a SYN sent again on a flow that saw no ACK
// counts against the flow's backend, and the flow counts as unanswered
// once, at the service's SynRetries; a flow whose client sent its ACK is
// answered and a SYN on it counts nothing.
func TestSynRetransmitsCounted(t *testing.T) {
	const flows = 400
	s := flowSnap(t, 1, 4, nil, nil)
	f := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
	first := sendFlows(t, f, s, flows, TCPFlagSYN)
	for round := 1; round <= 3; round++ {
		again := sendFlows(t, f, s, flows, TCPFlagSYN)
		for i := range first {
			if again[i] != first[i] {
				t.Fatalf("round %d: flow %d's SYN went to %s, first to %s", round, i, again[i], first[i])
			}
		}
		retx, unanswered, newFlows := passiveSums(&f.C)
		for id := 1; id <= 4; id++ {
			if newFlows[id] == 0 {
				t.Fatalf("backend %d got no flow", id)
			}
			wantUnanswered := uint64(0)
			if round >= DefaultSynRetries {
				wantUnanswered = newFlows[id]
			}
			if retx[id] != uint64(round)*newFlows[id] || unanswered[id] != wantUnanswered {
				t.Errorf("round %d, backend %d (%d flows): got %d SYNs again, %d unanswered; want %d, %d",
					round, id, newFlows[id], retx[id], unanswered[id], uint64(round)*newFlows[id], wantUnanswered)
			}
		}
	}

	// Answered flows: SYN, ACK, then a SYN on the same 5-tuple.
	g := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
	sendFlows(t, g, s, flows, TCPFlagSYN)
	sendFlows(t, g, s, flows, TCPFlagACK)
	sendFlows(t, g, s, flows, TCPFlagSYN)
	sendFlows(t, g, s, flows, TCPFlagSYN)
	if retx, unanswered, _ := passiveSums(&g.C); retx != [5]uint64{} || unanswered != [5]uint64{} {
		t.Errorf("answered flows: got SYNs again %v, unanswered %v; want none", retx, unanswered)
	}
}

// TestSynRetriesPerService: ServiceSpec.SynRetries sets when a flow counts
// as unanswered.
func TestSynRetriesPerService(t *testing.T) {
	bs := []BackendSpec{{ID: 1, IP: netip.AddrFrom4([4]byte{10, 9, 0, 1}), Weight: 1, NextHop: gwMAC}}
	s, err := NewSnapshot(SnapshotSpec{Ports: []PortSpec{{MAC: portMAC, IP: portIP}},
		Services: []ServiceSpec{{ID: 0, Name: "svc", VIP: vipIPIP, Proto: ProtoTCP, Port: 80, Mode: ModeIPIP, Backends: bs, SynRetries: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
	sendFlows(t, f, s, 10, TCPFlagSYN)
	sendFlows(t, f, s, 10, TCPFlagSYN)
	if b := f.C.Backend(1); b.SynRetransmits != 10 || b.UnansweredFlows != 10 {
		t.Errorf("syn_retries 1, one SYN again per flow: got %d SYNs again, %d unanswered; want 10, 10", b.SynRetransmits, b.UnansweredFlows)
	}
	sendFlows(t, f, s, 10, TCPFlagSYN)
	if b := f.C.Backend(1); b.SynRetransmits != 20 || b.UnansweredFlows != 10 {
		t.Errorf("a flow counts as unanswered once: got %d SYNs again, %d unanswered; want 20, 10", b.SynRetransmits, b.UnansweredFlows)
	}
}

// TestHeldBackend: a backend held down by passive detection takes no new
// flows and keeps its established ones; a flow whose client sends its SYN
// again gets another backend, which it then keeps.
func TestHeldBackend(t *testing.T) {
	const flows = 4000
	base := flowSnap(t, 1, 4, nil, nil)
	f := NewForwarder(1<<16, DefaultFlowTimeouts, 0)
	// Even flows are established, odd ones only sent their SYN.
	first := sendFlows(t, f, base, flows, TCPFlagSYN)
	for i := 0; i < flows; i += 2 {
		pk := synTo(i, TCPFlagACK)
		if v, _ := f.Process(base, newPacket(pk.Build()), 0); v != VerdictTx {
			t.Fatalf("flow %d: ACK verdict %v", i, v)
		}
	}
	held := flowSnap(t, 2, 4, map[int]BackendState{3: BackendHeld}, nil)
	newOnes := make([]string, flows)
	f.Use(held)
	for i := 0; i < flows; i++ {
		flags := uint8(TCPFlagACK)
		if i%2 == 1 {
			flags = TCPFlagSYN
		}
		pk := synTo(i, flags)
		p := newPacket(pk.Build())
		if v, _ := f.Process(held, p, 0); v != VerdictTx {
			t.Fatalf("flow %d: verdict %v", i, v)
		}
		newOnes[i] = netip.AddrFrom4(IPv4(p.Data()[14:]).Dst()).String()
	}
	moved := 0
	for i := range first {
		switch {
		case i%2 == 0 && newOnes[i] != first[i]:
			t.Fatalf("established flow %d moved %s -> %s", i, first[i], newOnes[i])
		case i%2 == 1 && newOnes[i] == "10.9.0.3":
			t.Fatalf("flow %d's SYN sent again still went to the held backend", i)
		case i%2 == 1 && first[i] == "10.9.0.3":
			moved++
		case i%2 == 1 && newOnes[i] != first[i]:
			t.Fatalf("unanswered flow %d on an active backend moved %s -> %s", i, first[i], newOnes[i])
		}
	}
	if moved == 0 {
		t.Fatal("no unanswered flow was on the held backend")
	}
	if got := f.C.FlowRemapped; got != uint64(moved) {
		t.Errorf("flows remapped: got %d, want %d", got, moved)
	}
	// New flows avoid the held backend; a moved flow stays where it went.
	for i, b := range sendFlows(t, f, held, flows+2000, TCPFlagSYN)[flows:] {
		if b == "10.9.0.3" {
			t.Fatalf("new flow %d went to the held backend", flows+i)
		}
	}
	again := sendFlows(t, f, held, flows, TCPFlagACK)
	for i := 1; i < flows; i += 2 {
		if again[i] != newOnes[i] {
			t.Fatalf("flow %d moved again %s -> %s", i, newOnes[i], again[i])
		}
	}
	if b := f.C.Backend(3); b.SynRetransmits != uint64(moved) || b.UnansweredFlows != 0 {
		t.Errorf("held backend: got %d SYNs again, %d unanswered; want %d, 0", b.SynRetransmits, b.UnansweredFlows, moved)
	}
}

// TestWorkerCountsSynRetransmits: the burst loop, whose fast path takes
// flow table hits, counts SYNs sent again exactly as Process does.
func TestWorkerCountsSynRetransmits(t *testing.T) {
	s := flowSnap(t, 1, 4, nil, nil)
	r := rand.New(rand.NewSource(15))
	var frames [][]byte
	const flows = 300
	// Rounds of every flow: SYN, then SYN again (unanswered) or ACK and
	// data (answered), then once more the same.
	for round := 0; round < 4; round++ {
		for i := 0; i < flows; i++ {
			flags := uint8(TCPFlagSYN)
			if round > 0 && i%3 == 0 {
				flags = TCPFlagACK
			}
			pk := synTo(i, flags)
			frames = append(frames, pk.Build())
		}
	}
	var snap atomic.Pointer[Snapshot]
	snap.Store(s)
	lp := &listPort{frames: frames, r: r}
	w := NewWorker([]WorkerPort{{NIC: lp}}, &snap, 1<<12, DefaultFlowTimeouts, 0)
	for polls := 0; lp.next < len(frames); polls++ {
		if polls > 100000 {
			t.Fatal("worker does not drain")
		}
		w.Poll()
	}
	w.Poll() // an empty poll processes the last burst
	ref := NewForwarder(1<<12, DefaultFlowTimeouts, 0)
	ref.Use(s)
	for _, fr := range frames {
		ref.Process(s, newPacket(fr), 0)
	}
	wc := w.Counters()
	var total uint64
	for id := uint32(1); id <= 4; id++ {
		got, want := wc.Backend(id), ref.C.Backend(id)
		if got != want {
			t.Errorf("backend %d: worker %+v, Process %+v", id, got, want)
		}
		total += got.UnansweredFlows
	}
	// Flows i%3 != 0 sent their SYN 4 times: 3 again, unanswered.
	if want := uint64(flows - (flows+2)/3); total != want {
		t.Errorf("unanswered flows: got %d, want %d", total, want)
	}
	if wc.FlowHits == 0 {
		t.Error("no flow table hit: the fast path was not exercised")
	}
}

func TestSynRetransmitZeroAllocs(t *testing.T) {
	s := flowSnap(t, 1, 4, nil, nil)
	held := flowSnap(t, 2, 4, map[int]BackendState{1: BackendHeld, 2: BackendHeld, 3: BackendHeld}, nil)
	for _, snap := range []*Snapshot{s, held} {
		f := NewForwarder(1024, DefaultFlowTimeouts, 0)
		f.Use(snap)
		pk := synTo(1, TCPFlagSYN)
		frame := pk.Build()
		p := newPacket(frame)
		f.Process(snap, p, 0)
		allocs := testing.AllocsPerRun(1000, func() {
			copy(p.Buf[headroom:], frame)
			p.Off, p.Len = headroom, len(frame)
			f.Process(snap, p, 0)
		})
		if allocs != 0 {
			t.Errorf("generation %d: %v allocs per SYN sent again, want 0", snap.Generation, allocs)
		}
		if f.C.Backend(1).SynRetransmits+f.C.Backend(2).SynRetransmits+f.C.Backend(3).SynRetransmits+f.C.Backend(4).SynRetransmits == 0 {
			t.Errorf("generation %d: no SYN counted as sent again", snap.Generation)
		}
	}
}

// TestSynRetransmitsCounted6: SYNs sent again on IPv6 flows count against
// their backend like IPv4 ones; an ACK answers the flow.
func TestSynRetransmitsCounted6(t *testing.T) {
	s := testSnapshot6(t)
	f := NewForwarder(1024, DefaultFlowTimeouts, 0)
	f.Use(s)
	send := func(sport uint16, flags uint8) {
		pk := tcp6To(vip6Mix, 443, sport)
		pk.TCPFlags, pk.Payload = flags, nil
		if v, _ := f.Process(s, newPacket(pk.Build()), 0); v != VerdictTx {
			t.Fatalf("flow %d: verdict %v; drops %v", sport, v, f.C.Drops)
		}
	}
	for sport := uint16(1000); sport < 1100; sport++ {
		send(sport, TCPFlagSYN)
		if sport%2 == 0 {
			send(sport, TCPFlagACK) // answered
		}
		send(sport, TCPFlagSYN)
		send(sport, TCPFlagSYN)
	}
	var retx, unanswered uint64
	for _, id := range []uint32{7, 8} {
		b := f.C.Backend(id)
		retx += b.SynRetransmits
		unanswered += b.UnansweredFlows
	}
	if retx != 100 || unanswered != 50 {
		t.Errorf("SYNs sent again %d, unanswered flows %d; want 100 and 50 (50 unanswered flows, each SYN twice again)", retx, unanswered)
	}
}
