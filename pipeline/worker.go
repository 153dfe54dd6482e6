package pipeline

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// WorkerPort is one NIC port as a worker sees it: the queue it owns on the
// NIC and, optionally, the kernel tap port of the same link and the queue it
// owns there.
type WorkerPort struct {
	NIC      packet.Port
	Queue    uint16
	Tap      packet.Port // nil: kernel-bound packets are counted and freed (replay)
	TapQueue uint16
}

// Worker is the burst loop of one lcore: it polls each of its ports' queues,
// runs Process on every packet and sends the verdicts in bursts.
type Worker struct {
	Forwarder
	ports []WorkerPort
	snap  *atomic.Pointer[Snapshot]
	start time.Time

	// IdleSleep, when positive, makes Run sleep this long between polls
	// once idlePolls polls in a row received nothing, until one receives
	// something (control's dataplane.idle_sleep). Set it before Run.
	IdleSleep time.Duration

	// IOOnly makes the worker a plain forwarder for measurements: every
	// NIC burst goes back out of the port it came in on, untouched (like
	// dpdk-testpmd's io mode), counted in RxPackets, RxBytes and
	// TxPackets only; tap queues are not polled. Set it before Run; never
	// on a live appliance.
	IOOnly bool

	// probe is the port of the health probes through the VIP and the
	// queue this worker owns there (SetProbe); nil without one.
	probe      packet.Port
	probeQueue uint16
	probeMAC   MAC
	probeOut   [packet.BurstSize]packet.Packet

	rx   [packet.BurstSize]packet.Packet   // tap bursts
	tx   [][packet.BurstSize]packet.Packet // per egress port
	txN  []int
	kern [packet.BurstSize]packet.Packet
	drop [packet.BurstSize]packet.Packet
	// segs holds the segments of one super-frame (segment).
	segs [maxSegments]packet.Packet

	// nic holds two rx bursts per NIC port (see Poll).
	nic []nicBursts
	// Per burst being processed: each packet's verdict (its egress port
	// is in the burst, rxBurst.egress).
	verdict [packet.BurstSize]Verdict
	// clockTick counts polls between clock reads.
	clockTick uint32

	stop    atomic.Bool
	running atomic.Bool // set and cleared by Run under readMu
	pubReq  atomic.Uint64
	pubSeq  atomic.Uint64
	pub     Counters // written by the worker only while pubReq != pubSeq
	// readMu serialises the readers (Counters) and Run's start and end;
	// Poll never takes it.
	readMu sync.Mutex
	// last is the copy the last reader received while Run was active,
	// under readMu.
	last Counters
	// flowReq is a LookupFlow waiting for the running worker, nil when
	// none: one atomic load per round.
	flowReq atomic.Pointer[flowRequest]

	// capArm is the capture ring control armed (ArmCapture), loaded once
	// per round into capRing; capAck is the ring the worker last saw,
	// stored when it changes (CaptureIdle).
	capArm  atomic.Pointer[CaptureRing]
	capAck  atomic.Pointer[CaptureRing]
	capRing *CaptureRing
	// capSlot[i] is the record (plus one) of packet i of the burst being
	// processed, 0 for none; capPending the records it reserved.
	capSlot    [packet.BurstSize]uint32
	capPending uint64
}

// rxBurst is one received NIC burst, what classify learnt of it and,
// once processed, each packet's egress port. One struct, so that fastPath
// reaches all three from one pointer.
type rxBurst struct {
	pkts [packet.BurstSize]packet.Packet
	fp   [packet.BurstSize]fastPkt
	// egress is 8-byte aligned (fastPkt is), as sameEgress needs.
	egress [packet.BurstSize]uint16
	n      int
	hinted uint32
}

// nicBursts are a NIC port's two bursts: the one being received and the
// one received in the previous poll, waiting to be processed.
type nicBursts struct {
	b    [2]rxBurst
	next uint8 // index of the burst the next rx fills
}

// NewWorker returns a worker over ports, reading snapshots from snap.
func NewWorker(ports []WorkerPort, snap *atomic.Pointer[Snapshot], flowCapacity int, t FlowTimeouts, seed uint32) *Worker {
	return &Worker{
		Forwarder: *NewForwarder(flowCapacity, t, seed),
		ports:     ports,
		snap:      snap,
		start:     time.Now(),
		tx:        make([][packet.BurstSize]packet.Packet, len(ports)),
		txN:       isolatedSlice[int](len(ports)), // written per packet
		nic:       make([]nicBursts, len(ports)),
	}
}

// Poll runs one round over every port: one rx burst per NIC queue and per
// tap queue. It returns how many packets it received.
//
// NIC bursts are software-pipelined over two polls: a burst is received
// and classified (classify issues the prefetches of its flow table
// buckets) in one poll and processed in the next, after the following
// burst was received, so that the flow table's cache misses complete while
// the previous burst is processed instead of stalling the lookups. A poll
// that receives nothing processes the waiting burst at once, so a packet
// waits at most one poll, and only under load; Run processes what waits
// when it stops.
func (w *Worker) Poll() int {
	s := w.snap.Load()
	w.Use(s)
	if c := w.capArm.Load(); c != w.capRing {
		w.capRing = c
		w.capAck.Store(c)
	}
	// The clock has millisecond resolution; reading it costs tens of
	// nanoseconds, so it is read every clockEvery polls (a poll lasts at
	// most a few microseconds).
	if w.clockTick == 0 {
		w.Now = uint32(time.Since(w.start) / time.Millisecond)
		w.clockTick = clockEvery
	}
	w.clockTick--
	total := 0
	if w.probe != nil && w.clockTick == 0 {
		total += w.pollProbe(s)
	}
	for pi := range w.ports {
		wp := &w.ports[pi]
		nb := &w.nic[pi]
		in := &nb.b[nb.next]
		n := wp.NIC.RxBurst(wp.Queue, in.pkts[:])
		total += n
		if w.IOOnly {
			w.ioOnly(wp, in.pkts[:n])
			continue
		}
		in.n = n
		if n > 0 {
			in.hinted = w.classify(in.pkts[:n], &in.fp)
		}
		if old := &nb.b[nb.next^1]; old.n > 0 {
			w.burst(s, wp, pi, old)
		}
		nb.next ^= 1
		if wp.Tap != nil {
			m := wp.Tap.RxBurst(wp.TapQueue, w.rx[:])
			if m > 0 {
				total += m
				w.C.FromKernel += uint64(m)
				sent := wp.NIC.TxBurst(wp.Queue, w.rx[:m])
				w.countTx(w.rx[:sent])
				if sent < m {
					w.C.Drops[DropTxFull] += uint64(m - sent)
					wp.NIC.Free(w.rx[sent:m])
				}
			}
		}
	}
	w.C.Polls++
	if total > 0 {
		w.C.BusyPolls++
	}
	w.syncFlowCounters()
	if w.pubReq.Load() != w.pubSeq.Load() {
		w.publish()
	}
	if r := w.flowReq.Load(); r != nil {
		w.answerFlowRequest(r)
	}
	return total
}

// ioOnly sends pkts back out unchanged (see IOOnly).
func (w *Worker) ioOnly(wp *WorkerPort, pkts []packet.Packet) {
	w.C.RxPackets += uint64(len(pkts))
	for i := range pkts {
		w.C.RxBytes += uint64(pkts[i].Len)
	}
	sent := wp.NIC.TxBurst(wp.Queue, pkts)
	w.C.TxPackets += uint64(sent)
	if sent < len(pkts) {
		w.C.Drops[DropTxFull] += uint64(len(pkts) - sent)
		wp.NIC.Free(pkts[sent:])
	}
}

// idlePolls is how many empty polls in a row let Run sleep (IdleSleep): a
// few tens of microseconds of polling, so that a gap inside a burst of
// traffic does not put the worker to sleep.
const idlePolls = 512

// clockEvery is how many polls share one reading of the clock.
const clockEvery = 16

// publishWait is how long Counters waits for a running worker to publish
// before it returns the last copy: a round lasts microseconds, so only a
// worker stuck in a driver call misses it.
const publishWait = time.Second

// awaitWorker waits until done reports true or publishWait passed,
// sleeping between looks: a reader that spun instead
// (runtime.Gosched returns at once when no other goroutine waits) would
// hold a CPU that a worker needs to answer, on a machine with no CPU to
// spare (workers sharing CPUs with the main lcore) for a whole scheduler
// time slice.
func awaitWorker(done func() bool) {
	deadline := time.Now().Add(publishWait)
	for !done() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Microsecond)
	}
}

// flush processes the bursts still waiting (see Poll).
func (w *Worker) flush() {
	s := w.snap.Load()
	w.Use(s)
	for pi := range w.ports {
		for k := range w.nic[pi].b {
			if b := &w.nic[pi].b[k]; b.n > 0 {
				w.burst(s, &w.ports[pi], pi, b)
			}
		}
	}
}

// burst processes rx burst b of port pi, classified earlier: runs of
// packets through the fast path, Process for each packet that stops a run;
// then one tx burst per egress port, one to the kernel and one free of
// the drops. When every packet goes out of the same port (the common case
// of a one-armed appliance) the received array is sent as it is; otherwise
// packets are copied into per-destination arrays in order. A TCP
// super-frame is cut into segments (segment) after the packets before it
// were sent, so that order is kept. What classify recorded does not depend
// on the snapshot, so a snapshot change between the two polls changes
// nothing here.
func (w *Worker) burst(s *Snapshot, wp *WorkerPort, pi int, b *rxBurst) {
	n := b.n
	b.n = 0
	pkts := b.pkts[:n]
	if w.capRing != nil {
		w.captureIn(pkts)
	}
	fast := b.hinted // what fastPath may take
	if s.partialChecksums(pi) {
		fast &^= offloaded(pkts, fast, s.Ports[pi].MTU)
	}
	var taken uint32
	done := 0 // packets before done are sent (segment)
	for i := 0; i < n; {
		next := i
		if fast&(1<<(uint(i)&(packet.BurstSize-1))) != 0 { // else fastPath would stop at i
			var t uint32
			t, next = w.fastPath(s, b, n, fast, i)
			taken |= t
			if next >= n {
				break
			}
		}
		v, out := w.processHinted(s, &pkts[next], pi, b.fp[next].hash, b.hinted&(1<<uint(next)) != 0)
		w.verdict[next], b.egress[next] = v, uint16(out)
		if v == verdictSegment {
			w.release(wp, pkts, &b.egress, done, next, taken)
			w.segment(s, wp, pi, &pkts[next])
			done = next + 1
		}
		i = next + 1
	}
	if n > 0 && taken == uint32(1<<uint(n)-1) {
		if one := b.egress[0]; sameEgress(&b.egress, n) {
			op := &w.ports[one]
			if w.capRing != nil {
				w.captureOut(pkts, 0, n, taken)
				w.capturePublish()
			}
			sent := op.NIC.TxBurst(op.Queue, pkts)
			w.countTx(pkts[:sent])
			if sent < n {
				w.C.Drops[DropTxFull] += uint64(n - sent)
				op.NIC.Free(pkts[sent:])
			}
			return
		}
	}
	w.release(wp, pkts, &b.egress, done, n, taken)
	if w.capRing != nil {
		w.capturePublish()
	}
}

// sameEgress reports whether the first n ports of egress (n <= 32,
// 8-byte aligned) are all the same, comparing four at a time: the first
// port repeated in the four 16-bit lanes of a word is the same whatever
// the byte order.
func sameEgress(egress *[packet.BurstSize]uint16, n int) bool {
	n = min(n, packet.BurstSize)
	rep := uint64(egress[0]) * 0x0001_0001_0001_0001
	words := (*[packet.BurstSize / 4]uint64)(unsafe.Pointer(egress))
	if n == packet.BurstSize { // a full burst, the common case under load: no loop
		return (words[0]^rep)|(words[1]^rep)|(words[2]^rep)|(words[3]^rep)|
			(words[4]^rep)|(words[5]^rep)|(words[6]^rep)|(words[7]^rep) == 0
	}
	var diff uint64
	i := 0
	for ; i+4 <= n; i += 4 {
		diff |= words[i/4] ^ rep
	}
	for ; i < n; i++ {
		diff |= uint64(egress[i]) ^ rep&0xffff
	}
	return diff == 0
}

// release sends packets lo..hi-1 of a burst by their verdict (taken: the
// fast path's, VerdictTx): in order into one tx burst per egress port, one
// to the kernel and one free of the drops.
func (w *Worker) release(wp *WorkerPort, pkts []packet.Packet, egress *[packet.BurstSize]uint16, lo, hi int, taken uint32) {
	if w.capRing != nil {
		w.captureOut(pkts, lo, hi, taken)
	}
	nk, nd := 0, 0
	for i := lo; i < hi; i++ {
		p := &pkts[i]
		v := w.verdict[i]
		if taken&(1<<uint(i)) != 0 {
			v = VerdictTx
		}
		switch v {
		case VerdictTx:
			out := int(egress[i])
			w.tx[out][w.txN[out]] = *p
			w.txN[out]++
		case VerdictKernel:
			w.kern[nk] = *p
			nk++
		case VerdictProbe:
			w.toProbe(wp, p)
		default:
			w.drop[nd] = *p
			nd++
		}
	}
	w.sendQueued(wp, nk, nd)
}

// sendQueued sends what the tx arrays hold, the first nk packets of the
// kernel array, and frees the first nd of the drop array.
func (w *Worker) sendQueued(wp *WorkerPort, nk, nd int) {
	for o := range w.ports {
		w.flushTx(o)
	}
	if nk > 0 {
		w.toKernel(wp, nk)
	}
	if nd > 0 {
		wp.NIC.Free(w.drop[:nd])
	}
}

// segment cuts TCP super-frame p, received on port pi (process described
// it in w.seg), into segments in buffers from the allocator, runs each
// through process as a received packet and sends them in order, then
// frees p. Without buffers for every segment it drops p (no_buffer).
func (w *Worker) segment(s *Snapshot, wp *WorkerPort, pi int, p *packet.Packet) {
	segs := w.segs[:w.seg.n]
	got := 0
	for got < len(segs) {
		k := w.alloc.Alloc(segs[got:min(len(segs), got+packet.BurstSize)])
		got += k
		if k == 0 {
			break
		}
	}
	if got < len(segs) || !w.cut(p, segs) {
		w.C.Drops[DropNoBuffer]++
		w.drop[0] = *p
		wp.NIC.Free(w.drop[:1])
		wp.NIC.Free(segs[:got])
		return
	}
	w.C.GSOSegmented++
	w.C.GSOSegments += uint64(len(segs))
	nk, nd := 0, 0
	for i := range segs {
		q := &segs[i]
		v, out, r := w.process(s, q, pi, 0, false)
		switch v {
		case VerdictTx:
			if w.txN[out] == packet.BurstSize {
				w.flushTx(out)
			}
			w.tx[out][w.txN[out]] = *q
			w.txN[out]++
			continue
		case VerdictKernel:
			w.C.ToKernel++
			if nk == packet.BurstSize {
				w.toKernel(wp, nk)
				nk = 0
			}
			w.kern[nk] = *q
			nk++
			continue
		case VerdictProbe:
			w.toProbe(wp, q)
			continue
		case verdictSegment: // a segment is never longer than the MTU
			r = DropSuperframe
		}
		w.C.Drops[r]++
		if nd == packet.BurstSize {
			wp.NIC.Free(w.drop[:nd])
			nd = 0
		}
		w.drop[nd] = *q
		nd++
	}
	if nd == packet.BurstSize {
		wp.NIC.Free(w.drop[:nd])
		nd = 0
	}
	w.drop[nd] = *p // the super-frame itself, freed uncounted
	w.sendQueued(wp, nk, nd+1)
}

func (w *Worker) flushTx(o int) {
	n := w.txN[o]
	if n == 0 {
		return
	}
	wp := &w.ports[o]
	sent := wp.NIC.TxBurst(wp.Queue, w.tx[o][:n])
	w.countTx(w.tx[o][:sent])
	if sent < n {
		w.C.Drops[DropTxFull] += uint64(n - sent)
		wp.NIC.Free(w.tx[o][sent:n])
	}
	w.txN[o] = 0
}

func (w *Worker) countTx(pkts []packet.Packet) {
	var bytes int
	w.C.TxPackets += uint64(len(pkts))
	// Eight per round through a pointer, so that a round costs one add
	// and one branch besides the eight loads. In bounds: round r reads
	// pkts[8r : 8r+8] and there are len(pkts)/8 rounds.
	p := unsafe.Pointer(unsafe.SliceData(pkts))
	for r := len(pkts) / 8; r > 0; r-- {
		q := (*[8]packet.Packet)(p)
		bytes += q[0].Len + q[1].Len + q[2].Len + q[3].Len + q[4].Len + q[5].Len + q[6].Len + q[7].Len
		p = unsafe.Add(p, unsafe.Sizeof(*q))
	}
	for i := len(pkts) &^ 7; i < len(pkts); i++ {
		bytes += pkts[i].Len
	}
	w.C.TxBytes += uint64(bytes)
}

func (w *Worker) toKernel(wp *WorkerPort, n int) {
	if wp.Tap == nil {
		wp.NIC.Free(w.kern[:n])
		return
	}
	sent := wp.Tap.TxBurst(wp.TapQueue, w.kern[:n])
	if sent < n {
		w.C.ToKernel -= uint64(n - sent)
		w.C.Drops[DropNoKernel] += uint64(n - sent)
		wp.Tap.Free(w.kern[sent:n])
	}
}

// SetProbe gives the worker the port of the health probes through the
// VIP (probe.go), its queue there and the port's MAC, which the answers it
// hands over get as destination. Call it before Run.
func (w *Worker) SetProbe(p packet.Port, queue uint16, mac MAC) {
	w.probe, w.probeQueue, w.probeMAC = p, queue, mac
}

// pollProbe receives one burst from the probe port and sends each probe
// to its backend (toProbed). It returns how many packets it received.
func (w *Worker) pollProbe(s *Snapshot) int {
	n := w.probe.RxBurst(w.probeQueue, w.rx[:])
	nd := 0
	for i := range w.rx[:n] {
		p := &w.rx[i]
		v, out, r := w.toProbed(s, p)
		if v == VerdictTx {
			if w.txN[out] == packet.BurstSize {
				w.flushTx(out)
			}
			w.tx[out][w.txN[out]] = *p
			w.txN[out]++
			continue
		}
		w.C.Drops[r]++
		w.drop[nd] = *p
		nd++
	}
	for o := range w.ports {
		w.flushTx(o)
	}
	if nd > 0 {
		w.probe.Free(w.drop[:nd])
	}
	return n
}

// toProbe sends p, a backend's answer to a probe received on wp, to the
// probe port addressed to its MAC; without a probe port it is dropped as
// no_kernel_port. One packet at a time: answers to probes are few.
func (w *Worker) toProbe(wp *WorkerPort, p *packet.Packet) {
	if w.probe == nil {
		w.C.Drops[DropNoKernel]++
		w.probeOut[0] = *p
		wp.NIC.Free(w.probeOut[:1])
		return
	}
	if p.Off >= 0 && p.Off+6 <= len(p.Buf) {
		copy(p.Buf[p.Off:p.Off+6], w.probeMAC[:])
	}
	w.probeOut[0] = *p
	if w.probe.TxBurst(w.probeQueue, w.probeOut[:1]) == 0 {
		w.C.Drops[DropNoKernel]++
		w.probe.Free(w.probeOut[:1])
	}
}

func (w *Worker) syncFlowCounters() {
	ft := w.Flows
	w.C.FlowEntries = ft.Entries
	w.C.FlowHits = ft.Hits
	w.C.FlowMisses = ft.Misses
	w.C.FlowEvictions = ft.Evictions
	w.C.FlowExpired = ft.Expired
	w.C.FlowTableFull = ft.Full
}

// publish copies the private counters for a reader waiting in Counters.
// Only call it while pubReq != pubSeq: then no reader is copying pub.
func (w *Worker) publish() {
	w.C.CopyTo(&w.pub)
	w.pubSeq.Store(w.pubReq.Load())
}

// Run polls until Stop is called. It is the body of a worker lcore.
func (w *Worker) Run() {
	w.readMu.Lock()
	w.running.Store(true)
	w.readMu.Unlock()
	idle := 0
	for !w.stop.Load() {
		if w.Poll() > 0 || w.IdleSleep <= 0 {
			idle = 0
			continue
		}
		if idle++; idle >= idlePolls {
			w.C.IdleSleeps++
			idleSleep(w.IdleSleep)
		}
	}
	w.flush()
	w.syncFlowCounters()
	// Answer a reader waiting in Counters or LookupFlow; later readers
	// read w.C and the table.
	if w.pubReq.Load() != w.pubSeq.Load() {
		w.publish()
	}
	if r := w.flowReq.Load(); r != nil {
		w.answerFlowRequest(r)
	}
	w.readMu.Lock()
	w.running.Store(false)
	w.readMu.Unlock()
}

// SetAllocator gives the worker the buffers it cuts TCP super-frames into
// (see packet.Allocator and Counters.GSOSegmented); without one they are
// dropped as gso_superframe. Call it before Run.
func (w *Worker) SetAllocator(a packet.Allocator) { w.alloc = a }

// Stop asks Run to return after the current round.
func (w *Worker) Stop() { w.stop.Store(true) }

// Counters returns a copy of the worker's counters. While Run is active it
// asks the worker to publish at the end of its current round and waits for
// it (no lock on the fast path: one atomic load per round); if the worker
// does not answer within publishWait (a round stuck in a driver) it returns
// the last copy a reader received instead, possibly stale: the private
// counters MUST NOT be read while Run is active. Otherwise (before and after
// Run, or when the caller drives Poll itself) it reads the private counters.
func (w *Worker) Counters() Counters {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	var c Counters
	if !w.running.Load() {
		// Run is not active, and cannot start while readMu is held.
		w.syncFlowCounters()
		w.C.CopyTo(&c)
		return c
	}
	req := w.pubReq.Add(1)
	awaitWorker(func() bool { return w.pubSeq.Load() >= req })
	if w.pubSeq.Load() >= req {
		w.pub.CopyTo(&w.last)
	}
	w.last.CopyTo(&c)
	return c
}
