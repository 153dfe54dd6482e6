package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/cmd/dsrlb/appliance"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/dpdk"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
)

// benchResult is the last stdout line of `dsrlb bench`.
type benchResult struct {
	// MppsTotal is packets received and handled per second, all workers,
	// over the measurement window (after the warm-up); TxMpps is what was
	// transmitted. MppsPerWorker splits MppsTotal by worker.
	MppsTotal     float64   `json:"mpps_total"`
	MppsPerWorker []float64 `json:"mpps_per_worker"`
	TxMpps        float64   `json:"tx_mpps"`
	// Gbps is received frame bytes (as DPDK counts them: no FCS, preamble
	// or gap) per second; GbpsWire adds the 24 bytes a frame costs on the
	// wire besides.
	Gbps     float64 `json:"gbps"`
	GbpsWire float64 `json:"gbps_wire"`
	// SamplesMpps are the per-second rates inside the window.
	SamplesMpps []float64 `json:"samples_mpps"`
	// MedianSampleMpps is the median of SamplesMpps.
	MedianSampleMpps float64 `json:"median_sample_mpps"`
	// Drops are the drops by reason inside the window.
	Drops         map[string]uint64 `json:"drops"`
	WindowSeconds float64           `json:"window_seconds"`
	WarmupSeconds float64           `json:"warmup_seconds"`
	Workers       int               `json:"workers"`
	// IOOnly: run with --io (no load balancing; see pipeline.Worker.IOOnly).
	IOOnly       bool         `json:"io_only,omitempty"`
	FlowCapacity int          `json:"flow_capacity"`
	Capture      benchCapture `json:"capture"`
	DataRoom     int          `json:"data_room"`
	// PoolMbufs is the mbufs of all the workers' pools together, each
	// worker's pool PoolMbufsPerWorker.
	PoolMbufs          uint32    `json:"pool_mbufs"`
	PoolMbufsPerWorker uint32    `json:"pool_mbufs_per_worker"`
	BusyRatio          []float64 `json:"busy_ratio"`
	// CPUShare is, per worker, the share of the window its lcore thread
	// was on a CPU (Linux schedstat): below 1 when other processes took
	// the CPU. MppsPerCPUSecond divides each worker's packets by its own
	// CPU time: the rate with the CPU to itself, a figure that holds on a
	// shared machine. Both are empty when the threads cannot be found.
	CPUShare         []float64 `json:"cpu_share,omitempty"`
	MppsPerCPUSecond []float64 `json:"mpps_per_cpu_second,omitempty"`
	// OtherThreadsCPU is the CPU time of dsrlb's threads other than the
	// workers (the main lcore, the Go runtime, this sampling loop) per
	// second of the window; HostOtherCPU that of everything else on the
	// host (all CPUs' busy time in /proc/stat less dsrlb's own). With
	// the CPUs, they say who took what the workers did not get.
	OtherThreadsCPU float64 `json:"other_threads_cpu"`
	HostOtherCPU    float64 `json:"host_other_cpu"`
	// PortRxNoMbuf counts rx bursts that failed for want of mbufs: it must
	// stay 0, or the pool was too small and the numbers are meaningless.
	PortRxNoMbuf uint64   `json:"port_rx_nombuf"`
	EALArgs      []string `json:"eal_args"`
	// Alternate is what --alternate measured (the rates above are then
	// those of the whole window, its phases mixed).
	Alternate *benchAlternate `json:"alternate,omitempty"`
	// Stats are the counters of the whole run (control.BuildStats).
	Stats v1.Stats `json:"stats"`
}

type benchCapture struct {
	Path     string `json:"path"`
	Packets  int    `json:"packets"`
	Bytes    int64  `json:"bytes"`
	Flows    int    `json:"flows"`
	MaxFrame int    `json:"max_frame"`
	// QueuePackets is how the capture was split over the workers' rx
	// queues; with QueueStride worker w polls queue w*QueueStride and
	// the queues in between replay one packet, never polled.
	QueuePackets []int `json:"queue_packets"`
	QueueStride  int   `json:"queue_stride,omitempty"`
	// Cycle is --cycle: every pass over the capture moved the client
	// ports by the pass number modulo Cycle (flowCycler), so that
	// Flows times Cycle distinct flows were seen (CycledFlows).
	Cycle       int `json:"cycle,omitempty"`
	CycledFlows int `json:"cycled_flows,omitempty"`
}

// cmdBench runs the full data plane (appliance.StartDataplane) over a capture replayed
// forever: the first config port's device becomes a net_pcap port whose rx
// queues replay the capture from memory (infinite_rx) and whose tx drops
// (net_pcap without tx args frees what it is sent: a null sink). With N
// workers the capture is split by flow into N files, one rx queue each,
// as RSS would. After a warm-up the worker counters are sampled over the
// window; the last stdout line is a benchResult.
func cmdBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (YAML)")
	capPath := fs.String("pcap", "", "capture to replay")
	seconds := fs.Float64("seconds", 5, "measurement window in seconds (after the warm-up)")
	warmup := fs.Float64("warmup", 1, "warm-up seconds before the window")
	workers := fs.Int("workers", 0, "worker lcores (0: the config's dataplane.workers, else 1)")
	dataRoom := fs.Int("data-room", 0, "mbuf data room incl. headroom (0: fit the largest frame, at least 256+headroom)")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the measurement window to this file (go tool pprof; also usable for PGO)")
	flowCap := fs.Int("flow-capacity", 0, "flow table entries per worker (0: the config's flows.capacity)")
	ioOnly := fs.Bool("io", false, "forward every packet back out unchanged, without the load balancer (the cost of dsrlb's burst loop and DPDK binding alone, as dpdk-testpmd's io mode)")
	cycle := fs.Int("cycle", 0, "rewrite each replayed packet's client port by the number of its pass over the capture modulo N, so that the capture's flows are seen as N times as many (1: the same rewrite, the capture's own flows; 0: no rewrite)")
	alternate := fs.Float64("alternate", 0, "with 2 or more workers: seconds per phase of all the workers together, then worker 0 alone, together, worker 1 alone... over the window; reports one worker against all (0: off)")
	queueStride := fs.Int("queue-stride", 1, "with 2 or more workers: worker w polls rx queue w*N, the queues in between replay one packet and are never polled (net_pcap's adjacent queues share cache lines: see appliance.DataplaneOptions.QueueStride)")
	lcores := fs.String("lcores", "", "EAL --lcores mapping (default: -l 0..N, or a shared mapping when lcores outnumber CPUs)")
	newLog := logFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLog()
	if *cfgPath == "" || *capPath == "" || *seconds <= 0 || *warmup < 0 || *cycle < 0 || *cycle > 65535 || *alternate < 0 || *queueStride < 1 || *queueStride > 8 {
		fmt.Fprintln(os.Stderr, "dsrlb bench: --config and --pcap are required, --seconds > 0, --cycle 0 to 65535, --alternate >= 0, --queue-stride 1 to 8")
		return 2
	}
	cfg, err := control.LoadFile(*cfgPath)
	if err != nil {
		return fail(log, err)
	}
	store, err := control.NewStore(cfg, control.StoreOptions{Log: log})
	if err != nil {
		return fail(log, err)
	}
	t := store.Typed() // read-only
	flows := t.FlowCap
	if *flowCap > 0 {
		flows = *flowCap
	}
	nw := *workers
	if nw == 0 {
		nw = max(t.Workers, 1)
	}
	if *alternate > 0 && (nw < 2 || *alternate*float64(2*nw) > *seconds) {
		fmt.Fprintln(os.Stderr, "dsrlb bench: --alternate needs 2 or more workers and a window of at least one cycle (2 x workers x phase seconds)")
		return 2
	}
	pkts, err := pcap.ReadFile(*capPath)
	if err != nil {
		return fail(log, err)
	}
	if len(pkts) == 0 {
		return fail(log, errors.New("bench: empty capture"))
	}
	capInfo := benchCapture{Path: *capPath, Packets: len(pkts), Flows: countFlows(pkts), Cycle: *cycle}
	if *cycle > 0 {
		capInfo.CycledFlows = cycledFlows(pkts, uint16(*cycle))
	}
	for _, p := range pkts {
		capInfo.Bytes += int64(len(p))
		capInfo.MaxFrame = max(capInfo.MaxFrame, len(p))
	}

	// One rx_pcap per worker: net_pcap makes one rx queue of each.
	files := []string{*capPath}
	capInfo.QueuePackets = []int{len(pkts)}
	if nw > 1 {
		dir, err := os.MkdirTemp("", "dsrlb-bench-")
		if err != nil {
			return fail(log, err)
		}
		defer os.RemoveAll(dir)
		files, capInfo.QueuePackets, err = splitByFlow(pkts, nw, dir)
		if err != nil {
			return fail(log, err)
		}
		if *queueStride > 1 {
			files, err = spaceQueues(files, *queueStride, pkts[0], dir)
			if err != nil {
				return fail(log, err)
			}
			capInfo.QueueStride = *queueStride
		}
	}
	// What net_pcap keeps in rings, one per queue (spacers: one packet).
	ringPackets := capInfo.QueuePackets
	if capInfo.QueueStride > 1 {
		ringPackets = slices.Repeat([]int{1}, len(files))
		for w, n := range capInfo.QueuePackets {
			ringPackets[w*capInfo.QueueStride] = n
		}
	}
	room := *dataRoom
	if room == 0 {
		room = dpdk.Headroom + max(256, (capInfo.MaxFrame+127)/128*128)
	}
	if room > 65535 || room < dpdk.Headroom+capInfo.MaxFrame {
		return fail(log, fmt.Errorf("bench: data room %d cannot hold %d-byte frames after the %d-byte headroom",
			room, capInfo.MaxFrame, dpdk.Headroom))
	}
	pkts = nil // the PMD keeps its own copy in mbufs
	// infinite_rx holds each queue's part of the capture in mbufs of the
	// pool of the worker polling it (every worker has its own, the same
	// size: the largest part); every pool also needs bursts in flight and
	// per-lcore mempool caches.
	poolN := uint32(slices.Max(capInfo.QueuePackets)) + 4096 + 8192

	dev := "net_pcap_bench0"
	for _, f := range files {
		dev += ",rx_pcap=" + f
	}
	dev += ",infinite_rx=1"
	ports := make([]appliance.Port, len(t.Ports))
	for i, p := range t.Ports {
		ports[i] = appliance.Port{Name: p.Name, Device: p.Device, MTU: p.MTU, MAC: p.MAC}
	}
	ports[0].Device = dev

	var wrapRx func(pi, w int, nic packet.Port) packet.Port
	if *cycle > 0 {
		wrapRx = func(pi, w int, nic packet.Port) packet.Port {
			if pi != 0 { // only the first port replays the capture
				return nic
			}
			return newFlowCycler(nic, capInfo.QueuePackets[w], uint16(*cycle))
		}
	}
	// --alternate holds a worker by its queue of the replaying port.
	var hold []*pausableRx
	var idleSleep time.Duration
	if *alternate > 0 {
		hold = make([]*pausableRx, nw)
		for w := range hold {
			hold[w] = &pausableRx{}
		}
		idleSleep = time.Millisecond // a held worker sleeps
		inner := wrapRx
		wrapRx = func(pi, w int, nic packet.Port) packet.Port {
			if inner != nil {
				nic = inner(pi, w, nic)
			}
			if pi != 0 {
				return nic
			}
			hold[w].Port = nic
			return hold[w]
		}
	}
	eal := appliance.BenchEALArgs(t.EALArgs, *lcores, nw, poolN, room, ringPackets)
	dp, err := appliance.StartDataplane(appliance.DataplaneOptions{
		EALArgs: eal, Workers: nw, Ports: ports, Snap: store.Snapshots(),
		FlowCap: flows, Timeouts: t.Timeouts, Seed: t.Seed,
		PoolMbufs: poolN, DataRoom: uint16(room), Log: log, Ready: store.SetPortMACs, IOOnly: *ioOnly,
		WrapRx: wrapRx, IdleSleep: idleSleep, QueueStride: capInfo.QueueStride,
	})
	if err != nil {
		return fail(log, err)
	}
	time.Sleep(time.Duration(*warmup * float64(time.Second)))
	threads := lcoreThreads(dp.Lcores())
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			dp.Stop()
			return fail(log, err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			dp.Stop()
			return fail(log, err)
		}
	}
	run0, proc0, host0 := threadRunTimes(threads), processRunTime(), hostBusyTime()
	c0, t0 := dp.Counters(), time.Now()
	var samples []float64
	prev, tprev := c0, t0
	end := t0.Add(time.Duration(*seconds * float64(time.Second)))
	var alt *benchAlternate
	if *alternate > 0 {
		a := runAlternate(dp.Counters, hold, time.Duration(*alternate*float64(time.Second)), end.Sub(t0))
		alt = &a
		prev, tprev = dp.Counters(), time.Now()
	}
	for alt == nil {
		next := tprev.Add(time.Second)
		if next.After(end) {
			next = end
		}
		time.Sleep(time.Until(next))
		c, now := dp.Counters(), time.Now()
		if d := now.Sub(tprev).Seconds(); d > 0.2 {
			samples = append(samples, float64(sumRx(c)-sumRx(prev))/d/1e6)
		}
		prev, tprev = c, now
		if !now.Before(end) {
			break
		}
	}
	c1, t1 := prev, tprev
	run1, proc1, host1 := threadRunTimes(threads), processRunTime(), hostBusyTime()
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	var nombuf uint64
	if st, err := dp.PortStats(0); err == nil {
		nombuf = st.RxNoMbuf
	}
	dp.Stop()

	win := t1.Sub(t0).Seconds()
	res := benchResult{WindowSeconds: win, WarmupSeconds: *warmup, Workers: nw, IOOnly: *ioOnly, FlowCapacity: flows, Capture: capInfo,
		DataRoom: room, PoolMbufs: poolN * uint32(nw), PoolMbufsPerWorker: poolN, PortRxNoMbuf: nombuf, EALArgs: eal, SamplesMpps: samples,
		Drops: map[string]uint64{}, Alternate: alt}
	var rx, tx, bytes uint64
	for i := range c1 {
		r := c1[i].RxPackets - c0[i].RxPackets
		rx += r
		tx += c1[i].TxPackets - c0[i].TxPackets
		bytes += c1[i].RxBytes - c0[i].RxBytes
		res.MppsPerWorker = append(res.MppsPerWorker, round3(float64(r)/win/1e6))
		busy := 0.0
		if p := c1[i].Polls - c0[i].Polls; p > 0 {
			busy = float64(c1[i].BusyPolls-c0[i].BusyPolls) / float64(p)
		}
		res.BusyRatio = append(res.BusyRatio, round3(busy))
		if len(threads) == len(c1) && run0[i] > 0 && run1[i] > run0[i] {
			cpu := float64(run1[i]-run0[i]) / 1e9
			res.CPUShare = append(res.CPUShare, round3(cpu/win))
			res.MppsPerCPUSecond = append(res.MppsPerCPUSecond, round3(float64(r)/cpu/1e6))
		}
		for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
			res.Drops[r.String()] += c1[i].Drops[r] - c0[i].Drops[r]
		}
	}
	var workersCPU uint64
	for i := range run1 {
		if i < len(run0) && run1[i] > run0[i] {
			workersCPU += run1[i] - run0[i]
		}
	}
	if proc1 > proc0+workersCPU {
		res.OtherThreadsCPU = round3(float64(proc1-proc0-workersCPU) / 1e9 / win)
	}
	if host1 > host0+(proc1-proc0) {
		res.HostOtherCPU = round3(float64(host1-host0-(proc1-proc0)) / 1e9 / win)
	}
	res.MppsTotal = round3(float64(rx) / win / 1e6)
	res.TxMpps = round3(float64(tx) / win / 1e6)
	res.Gbps = round3(float64(bytes) * 8 / win / 1e9)
	res.GbpsWire = round3(float64(bytes+24*rx) * 8 / win / 1e9)
	for i := range res.SamplesMpps {
		res.SamplesMpps[i] = round3(res.SamplesMpps[i])
	}
	res.MedianSampleMpps = median(res.SamplesMpps)
	res.Stats = control.BuildStats(store.Snapshots().Load(), dp.Counters())
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	if nombuf > 0 {
		log.Warn().Uint64("rx_nombuf", nombuf).Msg("the mbuf pool ran dry: raise the pool size")
	}
	return 0
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

func sumRx(cs []pipeline.Counters) uint64 {
	var n uint64
	for i := range cs {
		n += cs[i].RxPackets
	}
	return n
}

// benchFlow is the 5-tuple of an IPv4 (v4) or IPv6 (v6, is6) frame.
type benchFlow struct {
	v4  pipeline.FlowKey
	v6  pipeline.FlowKey6
	is6 bool
}

// hash is the flow hash of f's family.
func (f *benchFlow) hash(seed uint32) uint32 {
	if f.is6 {
		return f.v6.Hash(seed)
	}
	return f.v4.Hash(seed)
}

// flowOf returns the 5-tuple of an untagged IPv4 TCP/UDP frame, or of an
// untagged IPv6 one whose upper layer follows the fixed header.
func flowOf(p []byte) (benchFlow, bool) {
	if len(p) >= 14+40+4 && binary.BigEndian.Uint16(p[12:]) == pipeline.EtherTypeIPv6 {
		ip := pipeline.IPv6(p[14:])
		l4 := pipeline.Ports(ip[40:])
		return benchFlow{v6: pipeline.FlowKey6{Src: ip.Src(), Dst: ip.Dst(), SrcPort: l4.Src(), DstPort: l4.Dst(), Proto: ip.NextHeader()}, is6: true}, true
	}
	if len(p) < 14+20+4 || binary.BigEndian.Uint16(p[12:]) != pipeline.EtherTypeIPv4 {
		return benchFlow{}, false
	}
	ip := pipeline.IPv4(p[14:])
	ihl := ip.HeaderLen()
	if ihl < 20 || len(ip) < ihl+4 {
		return benchFlow{}, false
	}
	l4 := pipeline.Ports(ip[ihl:])
	return benchFlow{v4: pipeline.FlowKey{Src: ip.SrcU32(), Dst: ip.DstU32(), SrcPort: l4.Src(), DstPort: l4.Dst(), Proto: ip.Protocol()}}, true
}

func countFlows(pkts [][]byte) int {
	seen := make(map[benchFlow]struct{}, len(pkts))
	for _, p := range pkts {
		if k, ok := flowOf(p); ok {
			seen[k] = struct{}{}
		}
	}
	return len(seen)
}

// splitByFlow writes pkts into n capture files in dir, every packet of a
// flow into the same file (chosen by a hash of its 5-tuple, as RSS would
// pick a queue), keeping their order.
func splitByFlow(pkts [][]byte, n int, dir string) ([]string, []int, error) {
	parts := make([][][]byte, n)
	for _, p := range pkts {
		q := 0
		if k, ok := flowOf(p); ok {
			q = int(k.hash(0x5eed) % uint32(n))
		}
		parts[q] = append(parts[q], p)
	}
	files := make([]string, n)
	counts := make([]int, n)
	for q := range parts {
		if len(parts[q]) == 0 {
			return nil, nil, fmt.Errorf("bench: rx queue %d would get no packets", q)
		}
		files[q] = filepath.Join(dir, fmt.Sprintf("q%d.pcap", q))
		counts[q] = len(parts[q])
		if err := pcap.WriteFile(files[q], parts[q]); err != nil {
			return nil, nil, err
		}
	}
	return files, counts, nil
}

// spaceQueues returns files with stride-1 spacer queues after each but
// the last: a capture of the one frame spacer, written once in dir.
func spaceQueues(files []string, stride int, spacer []byte, dir string) ([]string, error) {
	path := filepath.Join(dir, "spacer.pcap")
	if err := pcap.WriteFile(path, [][]byte{spacer}); err != nil {
		return nil, err
	}
	var out []string
	for i, f := range files {
		out = append(out, f)
		if i < len(files)-1 {
			out = append(out, slices.Repeat([]string{path}, stride-1)...)
		}
	}
	return out, nil
}

// median returns the median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// lcoreThreads returns the thread ids of the EAL worker lcores (threads
// named rte-worker-<lcore>), in the order of lcores, or nil if one is
// missing.
func lcoreThreads(lcores []uint) []int {
	byName := map[string]int{}
	tasks, _ := filepath.Glob("/proc/self/task/*")
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(t, "comm"))
		if err != nil {
			continue
		}
		var tid int
		fmt.Sscan(filepath.Base(t), &tid)
		byName[strings.TrimSpace(string(b))] = tid
	}
	var out []int
	for _, l := range lcores {
		tid, ok := byName[fmt.Sprintf("rte-worker-%d", l)]
		if !ok {
			return nil
		}
		out = append(out, tid)
	}
	return out
}

// threadRunTimes returns each thread's time on a CPU so far, in
// nanoseconds (first field of /proc/self/task/<tid>/schedstat); 0 where it
// cannot be read.
func threadRunTimes(tids []int) []uint64 {
	out := make([]uint64, len(tids))
	for i, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
		if err == nil {
			fmt.Sscan(string(b), &out[i])
		}
	}
	return out
}

// processRunTime returns the time on a CPU so far of all of this
// process's threads, in nanoseconds (threadRunTimes of every task).
func processRunTime() uint64 {
	tasks, _ := filepath.Glob("/proc/self/task/*")
	tids := make([]int, 0, len(tasks))
	for _, t := range tasks {
		var tid int
		if _, err := fmt.Sscan(filepath.Base(t), &tid); err == nil {
			tids = append(tids, tid)
		}
	}
	var sum uint64
	for _, r := range threadRunTimes(tids) {
		sum += r
	}
	return sum
}

// hostBusyTime returns the time all CPUs spent busy so far (the first line
// of /proc/stat less idle and iowait, steal included: a hypervisor's
// other guests), in nanoseconds; 0 if unreadable.
func hostBusyTime() uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		var n uint64
		fmt.Sscan(v, &n)
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy * 1e9 / 100 // USER_HZ
}
