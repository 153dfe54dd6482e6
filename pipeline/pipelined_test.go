package pipeline_test

import (
	"bytes"
	"math/rand"
	"net/netip"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// listPort receives a list of frames in bursts of random size (some empty),
// each into a buffer of its own, and records what is sent and freed.
type listPort struct {
	frames [][]byte
	next   int
	r      *rand.Rand
	sent   [][]byte
	freed  int
}

func (lp *listPort) RxBurst(q uint16, pkts []packet.Packet) int {
	n := min(len(pkts), lp.r.Intn(packet.BurstSize+1), len(lp.frames)-lp.next)
	for i := 0; i < n; i++ {
		lp.next++
		pkts[i] = rxPacket(lp.frames[lp.next-1], uintptr(lp.next))
	}
	return n
}

// rxPacket is a received copy of frame fr in a buffer of its own, with
// headroom in front and room behind, and handle h.
func rxPacket(fr []byte, h uintptr) packet.Packet {
	buf := make([]byte, headroom+len(fr)+64)
	copy(buf[headroom:], fr)
	return packet.Packet{Buf: buf, Off: headroom, Len: len(fr), Handle: h}
}

// runWorker runs w.Run in a goroutine; the returned function stops it and
// waits for Run to return.
func runWorker(w *Worker) (stop func()) {
	done := make(chan struct{})
	go func() { w.Run(); close(done) }()
	return func() { w.Stop(); <-done }
}

func (lp *listPort) TxBurst(q uint16, pkts []packet.Packet) int {
	for i := range pkts {
		lp.sent = append(lp.sent, append([]byte(nil), pkts[i].Data()...))
	}
	return len(pkts)
}

func (lp *listPort) Free(pkts []packet.Packet) { lp.freed += len(pkts) }

// TestWorkerMatchesProcess: the burst loop (classify one poll, process the
// next, the fast path, snapshot swaps between the two) sends exactly what
// Process sends, in the same order, and counts the same.
func TestWorkerMatchesProcess(t *testing.T) {
	s1 := testSnapshot(t)
	// s2 moves the l2 service to other backends, drops the gre one and
	// marks the port as receiving partial checksums.
	s2, err := NewSnapshot(SnapshotSpec{Generation: 2, Ports: []PortSpec{{MAC: portMAC, IP: portIP, MTU: 1500, PartialChecksums: true}},
		Services: []ServiceSpec{
			{ID: 0, Name: "l2", VIP: vipL2, Proto: ProtoTCP, Port: 80, Mode: ModeL2, Backends: []BackendSpec{
				{ID: 1, IP: netip.MustParseAddr("192.0.2.22"), Weight: 1, NextHop: MAC{2, 0, 0, 0, 0, 0x22}},
				{ID: 5, IP: netip.MustParseAddr("192.0.2.23"), Weight: 1, NextHop: MAC{2, 0, 0, 0, 0, 0x23}}}},
			{ID: 1, Name: "ipip", VIP: vipIPIP, Proto: ProtoUDP, Port: 0, Mode: ModeIPIP, Backends: []BackendSpec{
				{ID: 2, IP: netip.MustParseAddr("10.1.0.1"), Weight: 1, NextHop: gwMAC}}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(6))
	var frames [][]byte
	for i := 0; i < 6000; i++ {
		p := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.AddrFrom4([4]byte{198, 18, 0, byte(r.Intn(64))}),
			SrcPort: uint16(1000 + r.Intn(4)), DF: true, PadTo: 60, PartialChecksum: r.Intn(3) == 0}
		switch r.Intn(5) {
		case 0:
			p.Dst, p.Proto, p.DstPort = vipL2, ProtoTCP, 80
		case 1:
			p.Dst, p.Proto, p.DstPort = vipIPIP, ProtoUDP, uint16(r.Intn(3))
		case 2:
			p.Dst, p.Proto, p.DstPort = vipGRE, ProtoTCP, 443
		case 3: // kernel, drops, options
			p.Dst, p.Proto, p.ICMPType = vipGRE, ProtoICMP, 8
			if r.Intn(2) == 0 {
				p.Dst, p.Proto, p.DstPort, p.Options = vipIPIP, ProtoUDP, 7, []byte{1, 1, 1, 0}
			}
		default:
			p.Dst, p.Proto, p.DstPort, p.TTL = vipIPIP, ProtoUDP, 9, uint8(1+r.Intn(2))
		}
		frames = append(frames, p.Build())
	}

	var snap atomic.Pointer[Snapshot]
	snap.Store(s1)
	lp := &listPort{frames: frames, r: r}
	w := NewWorker([]WorkerPort{{NIC: lp}}, &snap, 1<<12, DefaultFlowTimeouts, 3)
	ref := NewForwarder(1<<12, DefaultFlowTimeouts, 3)
	var want [][]byte
	refDone := 0
	// The reference runs each packet when the worker has received it; it
	// uses the snapshot the worker will process it with: the one current
	// at the poll after the one that received it.
	for polls := 0; lp.next < len(frames) || refDone < len(frames); polls++ {
		if polls == 300 {
			snap.Store(s2)
		}
		before := lp.next
		w.Poll()
		// The packets received by the previous poll were processed now,
		// with this poll's clock (LRU eviction depends on it).
		ref.Now = w.Now
		if polls > 100000 {
			t.Fatal("worker does not drain")
		}
		for ; refDone < before; refDone++ {
			buf := make([]byte, headroom+len(frames[refDone])+64)
			copy(buf[headroom:], frames[refDone])
			p := &packet.Packet{Buf: buf, Off: headroom, Len: len(frames[refDone])}
			s := snap.Load()
			ref.Use(s)
			if v, _ := ref.Process(s, p, 0); v == VerdictTx {
				want = append(want, append([]byte(nil), p.Data()...))
			}
		}
		if lp.next == len(frames) && refDone == len(frames) {
			w.Poll() // an empty poll processes the last burst
			break
		}
	}
	if len(lp.sent) != len(want) {
		t.Fatalf("worker sent %d packets, Process %d", len(lp.sent), len(want))
	}
	for i := range want {
		if !bytes.Equal(lp.sent[i], want[i]) {
			t.Fatalf("packet %d differs:\n worker  %x\n Process %x", i, lp.sent[i], want[i])
		}
	}
	wc := w.Counters()
	if wc.RxPackets != ref.C.RxPackets || wc.Dropped() != ref.C.Dropped() || wc.ToKernel != ref.C.ToKernel ||
		wc.FlowHits != ref.Flows.Hits || wc.FlowMisses != ref.Flows.Misses || wc.IPOptions != ref.C.IPOptions ||
		wc.L4ChecksumsCompleted != ref.C.L4ChecksumsCompleted {
		t.Errorf("worker counters rx %d drop %d kernel %d hits %d misses %d options %d completed %d; Process %d %d %d %d %d %d %d",
			wc.RxPackets, wc.Dropped(), wc.ToKernel, wc.FlowHits, wc.FlowMisses, wc.IPOptions, wc.L4ChecksumsCompleted,
			ref.C.RxPackets, ref.C.Dropped(), ref.C.ToKernel, ref.Flows.Hits, ref.Flows.Misses, ref.C.IPOptions, ref.C.L4ChecksumsCompleted)
	}
	if wc.L4ChecksumsCompleted == 0 {
		t.Error("no checksum was completed: the run did not exercise partial checksums")
	}
	if int(wc.TxPackets)+lp.freed != len(frames) {
		t.Errorf("sent %d + freed %d != received %d", wc.TxPackets, lp.freed, len(frames))
	}
}

// countingSink is the transmit side of a test port used by a running
// worker: it counts what is sent (safe to read from the test) and frees
// nothing.
type countingSink struct{ sent atomic.Uint64 }

func (k *countingSink) TxBurst(q uint16, pkts []packet.Packet) int {
	k.sent.Add(uint64(len(pkts)))
	return len(pkts)
}

func (k *countingSink) Free(pkts []packet.Packet) {}

// endlessPort receives the same frame forever, 32 at a time.
type endlessPort struct {
	countingSink
	frame    []byte
	received atomic.Uint64
}

func (ep *endlessPort) RxBurst(q uint16, pkts []packet.Packet) int {
	for i := range pkts[:packet.BurstSize] {
		pkts[i] = rxPacket(ep.frame, 0)
	}
	ep.received.Add(packet.BurstSize)
	return packet.BurstSize
}

// TestWorkerStopFlushes: a worker stopped under load processes the burst it
// holds; every packet received is sent.
func TestWorkerStopFlushes(t *testing.T) {
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	ep := &endlessPort{frame: tcpTo(vipL2, 80, 1).Build()}
	w := NewWorker([]WorkerPort{{NIC: ep}}, &snap, 1<<10, DefaultFlowTimeouts, 0)
	stop := runWorker(w)
	time.Sleep(20 * time.Millisecond)
	stop()
	c := w.Counters()
	if c.RxPackets != ep.received.Load() || ep.sent.Load() != ep.received.Load() {
		t.Errorf("received %d, processed %d, sent %d", ep.received.Load(), c.RxPackets, ep.sent.Load())
	}
}

// stuckPort is an endlessPort whose tap blocks, until release is closed,
// in the round of the NIC's arm-th rx call after arm is set; that rx call
// closes stuck. Between the two the worker processes the burst it held: it
// writes its counters after stuck is closed, as a running worker does
// whatever its reader does.
type stuckPort struct {
	endlessPort
	arm            atomic.Int32
	stick          atomic.Bool
	stuck, release chan struct{}
}

func (sp *stuckPort) RxBurst(q uint16, pkts []packet.Packet) int {
	if sp.arm.Load() > 0 && sp.arm.Add(-1) == 0 {
		sp.stick.Store(true)
		close(sp.stuck)
	}
	return sp.endlessPort.RxBurst(q, pkts)
}

// stuckTap is the tap of a stuckPort: it receives nothing.
type stuckTap struct {
	sp *stuckPort
	countingSink
}

func (st *stuckTap) RxBurst(q uint16, pkts []packet.Packet) int {
	if st.sp.stick.CompareAndSwap(true, false) {
		<-st.sp.release
	}
	return 0
}

// TestWorkerCountersStuck: while a running worker is stuck in a driver
// call, Counters gives up waiting for it and returns the last copy it
// published, never reading the counters the worker writes (go test -race
// catches such a read); once the worker stops, Counters returns its final
// counts.
func TestWorkerCountersStuck(t *testing.T) {
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	sp := &stuckPort{endlessPort: endlessPort{frame: tcpTo(vipL2, 80, 1).Build()},
		stuck: make(chan struct{}), release: make(chan struct{})}
	w := NewWorker([]WorkerPort{{NIC: sp, Tap: &stuckTap{sp: sp}}}, &snap, 1<<10, DefaultFlowTimeouts, 0)
	stop := runWorker(w)
	defer func() {
		select {
		case <-sp.release:
		default:
			close(sp.release)
		}
		stop()
	}()

	var published Counters
	for published.RxPackets == 0 {
		published = w.Counters()
	}
	// Two whole rounds after the copy (one rx burst each), then stuck.
	sp.arm.Store(3)
	<-sp.stuck
	if got := w.Counters(); !reflect.DeepEqual(got, published) {
		t.Errorf("worker stuck: got rx %d, polls %d; want the last published copy: rx %d, polls %d",
			got.RxPackets, got.Polls, published.RxPackets, published.Polls)
	}

	close(sp.release)
	stop()
	final := w.Counters()
	if final.RxPackets != sp.received.Load() || final.Polls <= published.Polls+2 {
		t.Errorf("stopped: got rx %d, polls %d; want rx %d (received), polls > %d",
			final.RxPackets, final.Polls, sp.received.Load(), published.Polls+2)
	}
}

// TestWorkerIOOnly: a measuring worker sends every frame back unchanged, in
// order, and counts it received and sent, with no flow or service state.
func TestWorkerIOOnly(t *testing.T) {
	frames := mixFrames(300)
	lp := &listPort{frames: frames, r: rand.New(rand.NewSource(5))}
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	w := NewWorker([]WorkerPort{{NIC: lp}}, &snap, 1024, DefaultFlowTimeouts, 0)
	w.IOOnly = true
	for lp.next < len(frames) {
		w.Poll()
	}
	if len(lp.sent) != len(frames) {
		t.Fatalf("sent %d frames, want %d", len(lp.sent), len(frames))
	}
	var bytesIn uint64
	for i, fr := range frames {
		if !bytes.Equal(lp.sent[i], fr) {
			t.Fatalf("frame %d changed:\n got %x\nwant %x", i, lp.sent[i], fr)
		}
		bytesIn += uint64(len(fr))
	}
	c := w.Counters()
	if c.RxPackets != uint64(len(frames)) || c.TxPackets != c.RxPackets || c.RxBytes != bytesIn ||
		c.FlowEntries != 0 || c.Dropped() != 0 || lp.freed != 0 {
		t.Errorf("counters rx %d tx %d bytes %d flows %d drops %d freed %d; want %d, %d, %d, 0, 0, 0",
			c.RxPackets, c.TxPackets, c.RxBytes, c.FlowEntries, c.Dropped(), lp.freed, len(frames), len(frames), bytesIn)
	}
}

// gatedPort receives nothing until open is set, then its frames once each;
// it counts what is sent. Safe for the worker goroutine and the test.
type gatedPort struct {
	open   atomic.Bool
	frames [][]byte
	next   int // worker goroutine only
	countingSink
}

func (g *gatedPort) RxBurst(q uint16, pkts []packet.Packet) int {
	if !g.open.Load() {
		return 0
	}
	n := min(len(pkts), len(g.frames)-g.next)
	for i := range n {
		g.next++
		pkts[i] = rxPacket(g.frames[g.next-1], uintptr(g.next))
	}
	return n
}

// TestWorkerIdleSleep: with IdleSleep an idle worker sleeps instead of
// spinning, and forwards traffic as soon as it comes back.
func TestWorkerIdleSleep(t *testing.T) {
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	g := &gatedPort{frames: mixFrames(64)}
	w := NewWorker([]WorkerPort{{NIC: g}}, &snap, 1024, DefaultFlowTimeouts, 0)
	w.IdleSleep = 200 * time.Microsecond
	defer runWorker(w)()

	time.Sleep(200 * time.Millisecond)
	c := w.Counters()
	// 200 ms of sleeps of at least 200 µs: at most about 1000 sleeps and
	// 512 polls before each; a spinning worker polls millions of times.
	if c.IdleSleeps == 0 || c.Polls > 2000*IdlePollsForTest {
		t.Errorf("idle for 200ms: %d polls, %d sleeps; want a sleeping worker", c.Polls, c.IdleSleeps)
	}
	g.open.Store(true)
	start := time.Now()
	for g.sent.Load() < uint64(len(g.frames)) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("sent %d of %d frames 2s after traffic came back", g.sent.Load(), len(g.frames))
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("idle: %d polls, %d sleeps in 200ms; %d frames forwarded %v after traffic came back",
		c.Polls, c.IdleSleeps, len(g.frames), time.Since(start))
}
