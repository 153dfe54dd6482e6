package pipeline_test

import (
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// mixFrames returns n frames of n distinct flows spread round-robin over
// the three services of testSnapshot (l2 TCP/80, ipip UDP all ports, gre
// TCP/443), 64 bytes on the wire, like `dsrlb gen`.
func mixFrames(n int) [][]byte {
	frames := make([][]byte, n)
	for i := range frames {
		p := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)}),
			SrcPort: uint16(1024 + i>>17), DF: true, PadTo: 60}
		switch i % 3 {
		case 0:
			p.Dst, p.Proto, p.DstPort = vipL2, ProtoTCP, 80
		case 1:
			p.Dst, p.Proto, p.DstPort = vipIPIP, ProtoUDP, uint16(1+i*7919%65535)
		default:
			p.Dst, p.Proto, p.DstPort = vipGRE, ProtoTCP, 443
		}
		frames[i] = p.Build()
	}
	return frames
}

// threadCPU returns the calling thread's CPU time in nanoseconds
// (CLOCK_THREAD_CPUTIME_ID). The machines these benchmarks run on are
// shared; CPU time, unlike wall time, does not count the time other
// processes held the CPU.
func threadCPU() int64 {
	var ts syscall.Timespec
	const clockThreadCPUTimeID = 3
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// cpuTimer reports the CPU time per unit of the timed loop as "cpu-ns/<unit>".
// The benchmark goroutine is locked to its thread meanwhile.
func cpuTimer(b *testing.B) func(units int, unit string) {
	runtime.LockOSThread()
	t0 := threadCPU()
	return func(units int, unit string) {
		d := threadCPU() - t0
		runtime.UnlockOSThread()
		b.ReportMetric(float64(d)/float64(units), "cpu-ns/"+unit)
	}
}

// BenchmarkProcessMix is Process over a realistic many-flow mix: 64k
// established flows (the table is warmed first) in a flow table of the
// default capacity, so flow lookups miss the CPU caches as they do in the
// data plane; one packet per op.
func BenchmarkProcessMix(b *testing.B) {
	for _, flows := range []int{64, 1024, 65536} {
		b.Run(map[int]string{64: "flows=64", 1024: "flows=1k", 65536: "flows=64k"}[flows], func(b *testing.B) {
			s := testSnapshot(b)
			capacity := DefaultFlowCapacity
			if flows == 64 {
				capacity = 256 // everything in L1: the cost of the code alone
			}
			f := NewForwarder(capacity, DefaultFlowTimeouts, 0)
			f.Use(s)
			frames := mixFrames(flows)
			p := newPacket(make([]byte, 1514))
			mask := len(frames) - 1 // a power of two: no division per op
			run := func(i int) {
				fr := frames[i&mask]
				copy(p.Buf[headroom:], fr)
				p.Off, p.Len = headroom, len(fr)
				if v, _ := f.Process(s, p, 0); v != VerdictTx {
					b.Fatalf("packet %d: verdict %v", i, v)
				}
			}
			for i := range frames {
				run(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			done := cpuTimer(b)
			for i := 0; i < b.N; i++ {
				run(i)
			}
			done(b.N, "op")
		})
	}
}

// benchPort is a Port that receives a capture in a loop, copying each frame
// into a buffer as a DPDK PMD copies into fresh mbufs, and takes whatever is
// sent. Consecutive bursts use different buffers: the worker holds a burst
// across one poll.
type benchPort struct {
	frames [][]byte
	next   int
	bufs   [2 * packet.BurstSize][]byte
	half   int
	sent   uint64
}

func newBenchPort(frames [][]byte) *benchPort {
	bp := &benchPort{frames: frames}
	for i := range bp.bufs {
		bp.bufs[i] = make([]byte, 2048)
	}
	return bp
}

func (bp *benchPort) RxBurst(q uint16, pkts []packet.Packet) int {
	n := min(len(pkts), packet.BurstSize)
	for i := 0; i < n; i++ {
		fr := bp.frames[bp.next]
		bp.next++
		if bp.next == len(bp.frames) {
			bp.next = 0
		}
		buf := bp.bufs[bp.half*packet.BurstSize+i]
		copy(buf[headroom:], fr)
		pkts[i] = packet.Packet{Buf: buf, Off: headroom, Len: len(fr), Handle: uintptr(i + 1)}
	}
	bp.half ^= 1
	return n
}

func (bp *benchPort) TxBurst(q uint16, pkts []packet.Packet) int {
	bp.sent += uint64(len(pkts))
	return len(pkts)
}
func (bp *benchPort) Free(pkts []packet.Packet) {}

// BenchmarkWorkerPoll is the whole burst loop (Worker.Poll: rx, Prefetch,
// Process, tx) without DPDK, over the 64k-flow mix; ns/pkt is the number
// to compare with the data plane's per-packet budget.
func BenchmarkWorkerPoll(b *testing.B) {
	for _, flows := range []int{1024, 65536, 1 << 20} {
		name := map[int]string{1024: "flows=1k", 65536: "flows=64k", 1 << 20: "flows=1M"}[flows]
		b.Run(name, func(b *testing.B) {
			s := testSnapshot(b)
			var snap atomic.Pointer[Snapshot]
			snap.Store(s)
			bp := newBenchPort(mixFrames(flows))
			w := NewWorker([]WorkerPort{{NIC: bp}}, &snap, DefaultFlowCapacity, DefaultFlowTimeouts, 0)
			for i := 0; i < flows/packet.BurstSize+1; i++ {
				w.Poll()
			}
			b.ReportAllocs()
			b.ResetTimer()
			done := cpuTimer(b)
			for i := 0; i < b.N; i++ {
				w.Poll()
			}
			done(b.N*packet.BurstSize, "pkt")
			b.StopTimer()
			c := w.Counters()
			if c.TxPackets != c.RxPackets {
				b.Fatalf("rx %d tx %d: %v", c.RxPackets, c.TxPackets, c.Drops)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*packet.BurstSize), "ns/pkt")
			b.ReportMetric(float64(b.N*packet.BurstSize)/b.Elapsed().Seconds()/1e6, "Mpps")
		})
	}
}

// BenchmarkWorkerPollMode is Worker.Poll with every packet in one mode, 1k
// flows: the per-mode cost of the burst loop and fast path.
func BenchmarkWorkerPollMode(b *testing.B) {
	for mode, vip := range map[string]netip.Addr{"l2": vipL2, "ipip": vipIPIP, "gre": vipGRE} {
		b.Run(mode, func(b *testing.B) {
			frames := make([][]byte, 1024)
			for i := range frames {
				p := tcpTo(vip, map[string]uint16{"l2": 80, "ipip": 53, "gre": 443}[mode], uint16(i))
				if mode == "ipip" {
					p.Proto = ProtoUDP
				}
				frames[i] = p.Build()
			}
			var snap atomic.Pointer[Snapshot]
			snap.Store(testSnapshot(b))
			w := NewWorker([]WorkerPort{{NIC: newBenchPort(frames)}}, &snap, DefaultFlowCapacity, DefaultFlowTimeouts, 0)
			for i := 0; i < len(frames)/packet.BurstSize+1; i++ {
				w.Poll()
			}
			b.ReportAllocs()
			b.ResetTimer()
			done := cpuTimer(b)
			for i := 0; i < b.N; i++ {
				w.Poll()
			}
			done(b.N*packet.BurstSize, "pkt")
		})
	}
}

// TestWorkerPollZeroAllocs proves the burst loop (Prefetch, fast path,
// Process, tx) allocates nothing per packet.
func TestWorkerPollZeroAllocs(t *testing.T) {
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	w := NewWorker([]WorkerPort{{NIC: newBenchPort(mixFrames(4096))}}, &snap, 1<<16, DefaultFlowTimeouts, 0)
	w.Poll()
	if allocs := testing.AllocsPerRun(1000, func() { w.Poll() }); allocs != 0 {
		t.Errorf("%v allocs per burst, want 0", allocs)
	}
}

// heldClockWorkers are the warmed workers of BenchmarkWorkerPollHeldClock
// by flow count, set up once per process so that the benchmark's repeated
// runs (b.N 1, then more) share one warm-up.
var heldClockWorkers = map[int]*heldClockWorker{}

type heldClockWorker struct {
	w   *Worker
	now uint32
	pkt int // packets polled so far, for the clock
}

// poll runs n polls, advancing the clock 1 ms every 10,000 packets (the
// worker receiving 10 Mpps).
func (h *heldClockWorker) poll(n int) {
	for range n {
		h.pkt += packet.BurstSize
		if h.pkt >= 10000 {
			h.pkt -= 10000
			h.now++
		}
		h.w.PollAtForTest(h.now)
	}
}

// BenchmarkWorkerPollHeldClock is Worker.Poll over the mix of 64k and 1M
// flows in a 4M-entry table (as `make bench` sizes it for 1M flows), after
// 1.5 passes over the flows, with the worker's clock held and advanced as
// if it received 10 Mpps: what the flow table writes (FlowTable.Touch)
// then depends on the packets only, not on how fast the run goes. Under
// callgrind, where the real clock runs some fifty times slower than the
// packets, this is how docs/performance.md counts the flow table's cache
// misses per packet (the difference of two runs, -test.benchtime 1x and
// 20001x: 20,000 polls).
func BenchmarkWorkerPollHeldClock(b *testing.B) {
	for _, flows := range []int{65536, 1 << 20} {
		b.Run(map[int]string{65536: "flows=64k", 1 << 20: "flows=1M"}[flows], func(b *testing.B) {
			h := heldClockWorkers[flows]
			if h == nil {
				var snap atomic.Pointer[Snapshot]
				snap.Store(testSnapshot(b))
				h = &heldClockWorker{now: 1000,
					w: NewWorker([]WorkerPort{{NIC: newBenchPort(mixFrames(flows))}}, &snap, 4<<20, DefaultFlowTimeouts, 0)}
				h.poll(3 * flows / 2 / packet.BurstSize)
				heldClockWorkers[flows] = h
			}
			b.ReportAllocs()
			b.ResetTimer()
			done := cpuTimer(b)
			h.poll(b.N)
			done(b.N*packet.BurstSize, "pkt")
		})
	}
}
