package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// queuePort receives the frames queued with push, once each, and records
// what is sent; safe for a running worker and the test.
type queuePort struct {
	mu     sync.Mutex
	frames [][]byte
	sent   [][]byte
	rx     atomic.Uint64
}

func (q *queuePort) push(frames ...[]byte) {
	q.mu.Lock()
	q.frames = append(q.frames, frames...)
	q.mu.Unlock()
}

func (q *queuePort) RxBurst(_ uint16, pkts []packet.Packet) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(pkts), len(q.frames))
	for i := range n {
		pkts[i] = rxPacket(q.frames[i], 0)
	}
	q.frames = q.frames[n:]
	q.rx.Add(uint64(n))
	return n
}

func (q *queuePort) TxBurst(_ uint16, pkts []packet.Packet) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range pkts {
		q.sent = append(q.sent, append([]byte(nil), pkts[i].Data()...))
	}
	return len(pkts)
}

func (q *queuePort) Free([]packet.Packet) {}

// takeSent waits until n frames were sent since the last call and returns
// them.
func (q *queuePort) takeSent(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		if len(q.sent) >= n {
			out := q.sent
			q.sent = nil
			q.mu.Unlock()
			return out
		}
		q.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("worker sent fewer than %d packets", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// envelope is what tells the backend of a rewritten frame: the MACs and,
// for L3 modes, the outer addresses and protocol.
func envelope(frame []byte) string {
	s := fmt.Sprintf("dst %x src %x", frame[0:6], frame[6:12])
	if len(frame) >= 34 && frame[23] != ProtoTCP && frame[23] != ProtoUDP {
		s += fmt.Sprintf(" outer %v > %v proto %d", netip.AddrFrom4([4]byte(frame[26:30])), netip.AddrFrom4([4]byte(frame[30:34])), frame[23])
	}
	return s
}

// traceSnapshot has an l2 TCP service and an ipip UDP service of eight
// backends each; drained drains the first four of each.
func traceSnapshot(t *testing.T, gen uint64, drained bool) *Snapshot {
	t.Helper()
	var l2, ipip []BackendSpec
	for i := range 8 {
		st := BackendActive
		if drained && i < 4 {
			st = BackendDrain
		}
		l2 = append(l2, BackendSpec{ID: uint32(i), IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(21 + i)}), Weight: 1,
			State: st, NextHop: MAC{2, 0, 0, 0, 0, byte(0x21 + i)}})
		ipip = append(ipip, BackendSpec{ID: uint32(8 + i), IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + i)}), Weight: uint32(1 + i%3),
			State: st, NextHop: gwMAC})
	}
	s, err := NewSnapshot(SnapshotSpec{Generation: gen, Ports: []PortSpec{{MAC: portMAC, IP: portIP, MTU: 1500}},
		Services: []ServiceSpec{
			{ID: 0, Name: "l2", VIP: vipL2, Proto: ProtoTCP, Port: 80, Mode: ModeL2, Backends: l2},
			{ID: 1, Name: "ipip", VIP: vipIPIP, Proto: ProtoUDP, Port: 0, Mode: ModeIPIP, Backends: ipip},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTraceAgreesWithWorker: for 1000 random 5-tuples, Trace names the
// service, backend and envelope that a running worker then gives each
// packet: new flows by Maglev; after half the backends are drained, the
// established flows by the entry the worker's table holds (LookupFlow,
// answered by the running worker), which Maglev alone would often get
// wrong.
func TestTraceAgreesWithWorker(t *testing.T) {
	const seed = 7
	s1 := traceSnapshot(t, 1, false)
	var snap atomic.Pointer[Snapshot]
	snap.Store(s1)
	q := &queuePort{}
	// Timeouts longer than the test: a loaded machine takes seconds over
	// the 1000 lookups, and an expired entry is a new flow.
	tmo := FlowTimeouts{TCPSyn: time.Hour, TCPEstablished: time.Hour, TCPClosing: time.Hour, UDP: time.Hour}
	w := NewWorker([]WorkerPort{{NIC: q}}, &snap, 1<<14, tmo, seed)
	defer runWorker(w)()

	r := rand.New(rand.NewSource(17))
	type flow struct {
		key   FlowKey
		frame func(flags uint8) []byte
	}
	flows := make([]flow, 1000)
	seen := map[FlowKey]bool{}
	for i := range flows {
		var p testpkt.Packet
		for {
			p = testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, DF: true, PadTo: 60,
				Src:     netip.AddrFrom4([4]byte{198, 18, byte(r.Intn(256)), byte(r.Intn(256))}),
				SrcPort: uint16(1024 + r.Intn(60000)), Dst: vipL2, Proto: ProtoTCP, DstPort: 80}
			if r.Intn(2) == 0 {
				p.Dst, p.Proto, p.DstPort = vipIPIP, ProtoUDP, uint16(1+r.Intn(65535))
			}
			a, b := p.Src.As4(), p.Dst.As4()
			k := FlowKey{Src: binary.BigEndian.Uint32(a[:]), Dst: binary.BigEndian.Uint32(b[:]), SrcPort: p.SrcPort, DstPort: p.DstPort, Proto: p.Proto}
			if !seen[k] {
				seen[k] = true
				flows[i].key = k
				break
			}
		}
		flows[i].frame = func(flags uint8) []byte { p.TCPFlags = flags; return p.Build() }
	}

	// check traces every flow (with what the running worker's table
	// holds), sends it through the worker and compares.
	check := func(phase string, s *Snapshot, flags uint8) (byFlow, maglevWouldDiffer int) {
		traces := make([]Trace, len(flows))
		frames := make([][]byte, len(flows))
		for i, f := range flows {
			held, ok := w.LookupFlow(TraceKey{V4: f.key})
			if !ok {
				t.Fatalf("%s: the running worker did not answer LookupFlow", phase)
			}
			frames[i] = f.frame(flags)
			traces[i] = s.Trace(frames[i], 0, seed, held)
			if traces[i].ByFlow {
				byFlow++
				if alone := s.Trace(frames[i], 0, seed, FlowProbe{}); alone.Backend != traces[i].Backend {
					maglevWouldDiffer++
				}
			}
		}
		q.push(frames...)
		sent := q.takeSent(t, len(flows))
		if len(sent) != len(flows) {
			t.Fatalf("%s: worker sent %d, want %d", phase, len(sent), len(flows))
		}
		for i, tr := range traces {
			if tr.Verdict != VerdictTx || tr.Service < 0 || tr.Backend < 0 {
				t.Fatalf("%s flow %d: trace %+v, want a forwarded packet with a service and backend", phase, i, tr)
			}
			svc := &s.Services[tr.Service]
			if wantSvc := map[uint8]string{ProtoTCP: "l2", ProtoUDP: "ipip"}[flows[i].key.Proto]; svc.Name != wantSvc {
				t.Errorf("%s flow %d: service %s, want %s", phase, i, svc.Name, wantSvc)
			}
			if got, want := envelope(sent[i]), envelope(tr.Frame); got != want {
				t.Errorf("%s flow %d (%s backend %v, by flow %v): worker sent %s, trace says %s",
					phase, i, svc.Name, svc.Backends[tr.Backend].Addr, tr.ByFlow, got, want)
			}
			inner := frames[i][14 : 14+int(binary.BigEndian.Uint16(frames[i][16:]))] // the IP packet, no padding
			if len(sent[i]) != len(tr.Frame) || !bytes.HasSuffix(sent[i], inner) || !bytes.HasSuffix(tr.Frame, inner) {
				t.Errorf("%s flow %d: the inner packet differs", phase, i)
			}
			if !tr.ByFlow {
				if tr.MaglevBackend != tr.Backend || tr.MaglevSlot != tr.MaglevHash%uint32(len(svc.Table)) {
					t.Errorf("%s flow %d: a new flow on backend %d, Maglev slot %d holds %d", phase, i, tr.Backend, tr.MaglevSlot, tr.MaglevBackend)
				}
			}
		}
		return byFlow, maglevWouldDiffer
	}

	if n, _ := check("new flows", s1, TCPFlagSYN); n != 0 {
		t.Errorf("new flows: %d traced as held by the flow table, want 0", n)
	}
	if n, _ := check("established", s1, TCPFlagACK); n != len(flows) {
		t.Errorf("established: %d traced by the flow table, want %d", n, len(flows))
	}
	s2 := traceSnapshot(t, 2, true)
	snap.Store(s2)
	n, differ := check("half drained", s2, TCPFlagACK)
	if n != len(flows) || differ < 100 {
		t.Errorf("half drained: %d by the flow table (want %d), %d of them elsewhere by Maglev alone (want many)", n, len(flows), differ)
	}
	t.Logf("1000 flows: trace agrees with the worker; after draining, %d established flows stay on a backend Maglev alone would not pick", differ)
}

// TestTraceDrops: a packet the data plane drops traces to its reason; one
// for the kernel to VerdictKernel.
func TestTraceDrops(t *testing.T) {
	s := testSnapshot(t)
	for _, tc := range []struct {
		desc string
		p    testpkt.Packet
		v    Verdict
		r    DropReason
	}{
		{"ttl 1 in ipip", testpkt.Packet{Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP, SrcPort: 1, DstPort: 53, TTL: 1}, VerdictDrop, DropTTL},
		{"no service on the port", tcpTo(vipL2, 81, 1000), VerdictDrop, DropNoService},
		{"to the port's address", tcpTo(portIP, 22, 1000), VerdictKernel, DropNone},
		{"fragment", testpkt.Packet{Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP, SrcPort: 1, DstPort: 53, MoreFrags: true}, VerdictDrop, DropFragment},
	} {
		tr := s.Trace(tc.p.Build(), 0, 0, FlowProbe{})
		if tr.Verdict != tc.v || tr.Drop != tc.r {
			t.Errorf("%s: verdict %d reason %v, want %d %v", tc.desc, tr.Verdict, tr.Drop, tc.v, tc.r)
		}
	}
	big := tcpTo(vipGRE, 443, 1000)
	big.Payload = make([]byte, 1460)
	if tr := s.Trace(big.Build(), 0, 0, FlowProbe{}); tr.Verdict != VerdictTx || !tr.FragNeeded || tr.Service != 2 {
		t.Errorf("1500-byte DF packet to gre: %+v, want fragmentation needed", tr)
	}
}

// TestTraceIPv6: IPv6 clients, and backends of both families in one
// service, trace as a running worker forwards them: new flows by Maglev,
// then by the entries the worker holds (LookupFlow of an IPv6 flow).
func TestTraceIPv6(t *testing.T) {
	const seed = 3
	var mixed, v4in6 []BackendSpec
	for i := range 3 {
		mixed = append(mixed, BackendSpec{ID: uint32(i), IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + i)}), Weight: 1, NextHop: gwMAC},
			BackendSpec{ID: uint32(3 + i), IP: netip.MustParseAddr(fmt.Sprintf("2001:db8:0:2::%d", 1+i)), Weight: 1, NextHop: gwMAC})
		v4in6 = append(v4in6, BackendSpec{ID: uint32(6 + i), IP: netip.MustParseAddr(fmt.Sprintf("2001:db8:0:3::%d", 1+i)), Weight: 1, NextHop: gwMAC})
	}
	vip6 := netip.MustParseAddr("2001:db8:100::8")
	s, err := NewSnapshot(SnapshotSpec{Generation: 1, Ports: []PortSpec{{MAC: portMAC, IP: portIP, IP6: portIP6, MTU: 1500}},
		Services: []ServiceSpec{
			{ID: 0, Name: "mixed", VIP: vip6, Proto: ProtoTCP, Port: 443, Mode: ModeIPIP, Backends: mixed},
			{ID: 1, Name: "v4in6", VIP: vipGRE, Proto: ProtoTCP, Port: 443, Mode: ModeGRE, Backends: v4in6},
		}})
	if err != nil {
		t.Fatal(err)
	}
	var snap atomic.Pointer[Snapshot]
	snap.Store(s)
	q := &queuePort{}
	tmo := FlowTimeouts{TCPSyn: time.Hour, TCPEstablished: time.Hour, TCPClosing: time.Hour, UDP: time.Hour}
	w := NewWorker([]WorkerPort{{NIC: q}}, &snap, 1<<12, tmo, seed)
	defer runWorker(w)()

	r := rand.New(rand.NewSource(5))
	pkts := make([]testpkt.Packet, 300)
	for i := range pkts {
		p := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Proto: ProtoTCP, SrcPort: uint16(1024 + i), DstPort: 443, DF: true,
			Src: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 14: byte(r.Intn(256)), 15: byte(r.Intn(256))}), Dst: vip6}
		if i%3 == 0 {
			p.Src, p.Dst = netip.AddrFrom4([4]byte{198, 18, byte(r.Intn(256)), byte(r.Intn(256))}), vipGRE
		}
		pkts[i] = p
	}
	for _, phase := range []struct {
		flags  uint8
		byFlow bool
	}{{TCPFlagSYN, false}, {TCPFlagACK, true}} {
		frames := make([][]byte, len(pkts))
		traces := make([]Trace, len(pkts))
		families := map[string]int{}
		for i := range pkts {
			pkts[i].TCPFlags = phase.flags
			frames[i] = pkts[i].Build()
			k, ok := TraceKeyOf(frames[i])
			if !ok || k.Is6 != pkts[i].Src.Is6() {
				t.Fatalf("flow %d: TraceKeyOf = %+v, %v", i, k, ok)
			}
			held, ok := w.LookupFlow(k)
			if !ok {
				t.Fatal("the running worker did not answer")
			}
			traces[i] = s.Trace(frames[i], 0, seed, held)
			if tr := traces[i]; tr.Verdict != VerdictTx || tr.Backend < 0 || tr.ByFlow != phase.byFlow {
				t.Fatalf("flow %d (flags %#x): %+v, want forwarded, by flow table %v", i, phase.flags, tr, phase.byFlow)
			}
			families[s.Services[traces[i].Service].Name+" to "+map[bool]string{true: "v6", false: "v4"}[s.Services[traces[i].Service].Backends[traces[i].Backend].Addr.Is6()]]++
		}
		q.push(frames...)
		sent := q.takeSent(t, len(frames))
		for i, tr := range traces {
			if got, want := outerDst(sent[i]), outerDst(tr.Frame); !bytes.Equal(got, want) || len(sent[i]) != len(tr.Frame) ||
				!bytes.Equal(sent[i][:14], tr.Frame[:14]) {
				t.Errorf("flags %#x flow %d: worker sent to %x (%d bytes), trace says %x (%d bytes)", phase.flags, i, got, len(sent[i]), want, len(tr.Frame))
			}
		}
		if len(families) != 3 {
			t.Errorf("flows went %v: want v6 clients to v4 and v6 backends, v4 clients to v6 ones", families)
		}
	}
}
