package pipeline

import (
	"net/netip"
	"testing"

	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// TestReusedTupleIsNewFlow: a client may open a new connection on the
// 4-tuple of one it has just ended (its port is free at once when the
// server closed first), while the ended flow is still in the table. Its SYN
// is a new flow that Maglev places, so a drained backend gets none, and the
// fast path leaves such a SYN to process. A retransmitted SYN of a flow not
// ended, and the packets of established flows, stay on their backend.
func TestReusedTupleIsNewFlow(t *testing.T) {
	const n = 400
	const drained = "10.9.0.2"
	portMAC, gwMAC := MAC{2, 0, 0, 0, 0, 0x10}, MAC{2, 0, 0, 0, 0, 1}
	vip := netip.MustParseAddr("203.0.113.2")
	snap := func(gen uint64, drain bool) *Snapshot {
		var bs []BackendSpec
		for i := 1; i <= 4; i++ {
			st := BackendActive
			if drain && i == 2 {
				st = BackendDrain
			}
			bs = append(bs, BackendSpec{ID: uint32(i), IP: netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), Weight: 1, State: st, NextHop: gwMAC})
		}
		s, err := NewSnapshot(SnapshotSpec{Generation: gen, Ports: []PortSpec{{MAC: portMAC, IP: netip.MustParseAddr("192.0.2.10"), MTU: 1500}},
			Services: []ServiceSpec{{ID: 0, Name: "svc", VIP: vip, Proto: ProtoTCP, Port: 80, Mode: ModeIPIP, Backends: bs}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	f := NewForwarder(1<<14, DefaultFlowTimeouts, 0)
	// send runs one packet of flow i as the worker does (Prefetch, the
	// fast path, else Process) and returns its backend and whether the
	// fast path took it.
	send := func(s *Snapshot, i int, flags uint8) (string, bool) {
		t.Helper()
		f.Use(s)
		frame := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}),
			Dst: vip, Proto: ProtoTCP, SrcPort: uint16(20000 + i), DstPort: 80, TCPFlags: flags}.Build()
		buf := make([]byte, 128+len(frame)+64)
		copy(buf[128:], frame)
		pkts := []packet.Packet{{Buf: buf, Off: 128, Len: len(frame)}}
		if _, ok := f.fastPathOne(s, &pkts[0]); ok {
			return netip.AddrFrom4(IPv4(pkts[0].Data()[EthernetMinSize:]).Dst()).String(), true
		}
		if v, _ := f.Process(s, &pkts[0], 0); v != VerdictTx {
			t.Fatalf("flow %d flags %#x: verdict %v", i, flags, v)
		}
		return netip.AddrFrom4(IPv4(pkts[0].Data()[EthernetMinSize:]).Dst()).String(), false
	}

	s1, s2 := snap(1, false), snap(2, true)
	// Flows 0..n-1 end (FIN), n..2n-1 are established, 2n..3n-1 only sent
	// a SYN, all before the drain.
	ended, estab, syn := map[int]bool{}, map[int]bool{}, map[int]bool{}
	for i := 0; i < 3*n; i++ {
		flags := []uint8{TCPFlagSYN, TCPFlagACK, TCPFlagFIN | TCPFlagACK}
		switch i / n {
		case 1:
			flags = flags[:2]
		case 2:
			flags = flags[:1]
		}
		var b string
		for _, fl := range flags {
			b, _ = send(s1, i, fl)
		}
		if b == drained {
			map[int]map[int]bool{0: ended, 1: estab, 2: syn}[i/n][i] = true
		}
	}
	if len(ended) == 0 || len(estab) == 0 || len(syn) == 0 {
		t.Fatalf("flows on %s: %d ended, %d established, %d SYN only; want some of each", drained, len(ended), len(estab), len(syn))
	}
	newFlows := f.C.Backends[2].NewFlows
	for i := range ended {
		b, fast := send(s2, i, TCPFlagSYN)
		if b == drained || fast {
			t.Fatalf("ended flow %d: new SYN on its 4-tuple went to %s (fast path %v), want another backend by process", i, b, fast)
		}
		if b2, _ := send(s2, i, TCPFlagACK); b2 != b {
			t.Fatalf("reused flow %d: SYN to %s, then ACK to %s", i, b, b2)
		}
	}
	for i := range estab {
		if b, _ := send(s2, i, TCPFlagACK); b != drained {
			t.Fatalf("established flow %d left the drained backend for %s", i, b)
		}
	}
	for i := range syn {
		if b, _ := send(s2, i, TCPFlagSYN); b != drained {
			t.Fatalf("retransmitted SYN of flow %d left the drained backend for %s", i, b)
		}
	}
	if d := f.C.Backends[2].NewFlows - newFlows; d != 0 {
		t.Errorf("drained backend counted %d new flows", d)
	}
}
