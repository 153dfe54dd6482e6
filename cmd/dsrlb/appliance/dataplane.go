package appliance

import (
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/dpdk"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Port is one NIC port for StartDataplane to bring up.
type Port struct {
	Name   string
	Device string // DPDK devargs or PCI address
	MTU    int
	MAC    pipeline.MAC // zero: keep the device's
	// Tap, when set, is the kernel interface name of this port's
	// exception-path tap (net_tap); "" means no kernel side (replay, bench).
	Tap string
	// TxOnly ports get no rx queues (a bench sink).
	TxOnly bool
	// WholeFrames gives the port's rx queues buffers that hold a 64 KB
	// frame whole, as net_af_packet ports get (afPacketDevice): replay's
	// pcap reader, whose capture may hold a host's TSO super-frames.
	WholeFrames bool
}

// DataplaneOptions configure StartDataplane.
type DataplaneOptions struct {
	EALArgs  []string
	Workers  int
	Ports    []Port
	Snap     *atomic.Pointer[pipeline.Snapshot]
	FlowCap  int
	Timeouts pipeline.FlowTimeouts
	Seed     uint32
	// PoolMbufs is the size of each worker's mbuf pool; 0 computes one
	// from the ports and queues (poolMbufs for one worker). Every worker
	// has a pool of its own, which its rx queues (of the NICs, the taps
	// and the probe port) and its allocator take mbufs from: a worker's
	// mbufs are written by that worker only. Two workers sharing one pool
	// forwarded 10-20 % less than with a pool each (docs/performance.md).
	PoolMbufs uint32
	// DataRoom is the mbuf data room; 0 means 2048 + headroom.
	DataRoom uint16
	Log      zerolog.Logger
	// IdleSleep is pipeline.Worker.IdleSleep (dataplane.idle_sleep).
	IdleSleep time.Duration
	// IOOnly makes the workers plain forwarders (pipeline.Worker.IOOnly):
	// `dsrlb bench --io` only.
	IOOnly bool
	// WrapRx, if set, wraps what worker w receives from port pi (its
	// queue w there): `dsrlb bench --cycle` only, which rewrites every
	// received packet before the worker sees it.
	WrapRx func(pi, w int, nic packet.Port) packet.Port
	// QueueStride, when above 1, makes worker w poll queue w*QueueStride
	// of every port, tap and the probe port; the queues in between are
	// configured (their rx taking mbufs from the pool of the worker
	// before them) and never polled. `dsrlb bench --queue-stride` only:
	// net_pcap keeps its rx queues' state in one array of 4,240-byte
	// structs, so that the packet counters of queue w+1, written every
	// burst, share a cache line with the ring pointer of queue w, read
	// every packet; two workers on adjacent queues then slow each other
	// down, as two workers on a real NIC's queues do not.
	QueueStride int
	// Ready, if set, is called with the ports' MACs after the ports start
	// and before any worker runs (to publish a snapshot that has them).
	Ready func(macs []pipeline.MAC)
	// Probe, if set, is where the health probes through the VIP get their
	// port (see ProbeOptions); nil: no probe port (replay, bench).
	Probe *ProbeOptions
}

// ProbeOptions set up the probe port: a tap named Tap (ProbeTapName)
// created in the probe namespace, which Enter switches the calling (main
// lcore) thread into (kernel.ProbeNS.Enter).
type ProbeOptions struct {
	Tap   string
	Enter func() (leave func() error, err error)
}

// ProbeTapName is the probe port's kernel interface in the probe
// namespace.
const ProbeTapName = "dsr-probe"

// probeTapMAC is the probe tap's MAC: the probe namespace's only link,
// private to the appliance; the workers give it to every answer they
// hand over (pipeline.Worker.SetProbe).
var probeTapMAC = pipeline.MAC{0x02, 0x64, 0x73, 0x72, 0x00, 0x01}

// Dataplane is the running DPDK side: ports, taps and worker lcores.
type Dataplane struct {
	nics    []*dpdk.Port
	devices []string // device string of each NIC
	taps    []*dpdk.Port
	probe   *dpdk.Port // nil without a probe port
	workers []*pipeline.Worker
	lcores  []uint
	pools   []*dpdk.Mempool // one per worker
	log     zerolog.Logger
	stopped bool
	prefix  string // EAL --file-prefix, for removing its runtime directory

	// kernelRx feeds the rx queues of net_af_packet ports (afpacket.go);
	// allocs give each worker buffers from pool to segment into.
	kernelRx *dpdk.Mempool
	allocs   []*dpdk.Allocator
	names    []string // of the ports, for logs
	// superframes reports super-frames dropped as gso_superframe, once
	// per port (watchSuperframes).
	superframes superframeLog
}

// lcoreMap returns the EAL lcore arguments for one main lcore and workers
// worker lcores on ncpu CPUs: "-l 0,1,...,workers" (lcore i on CPU i) when
// they fit, otherwise an --lcores mapping that puts worker i on CPU
// i mod ncpu and lets the main lcore, which mostly sleeps, float over all
// CPUs. The second case shares CPUs between busy-polling workers and is
// for small test machines; an appliance gives each worker its own core.
func lcoreMap(workers, ncpu int) []string {
	if workers+1 <= ncpu {
		l := "0"
		for i := 1; i <= workers; i++ {
			l += fmt.Sprintf(",%d", i)
		}
		return []string{"-l", l}
	}
	m := []string{fmt.Sprintf("0@(0-%d)", ncpu-1)}
	for i := 1; i <= workers; i++ {
		m = append(m, fmt.Sprintf("%d@%d", i, i%ncpu))
	}
	return []string{"--lcores", strings.Join(m, ",")}
}

func filePrefix(args []string) string {
	for i, a := range args {
		if a == "--file-prefix" && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--file-prefix="); ok {
			return v
		}
	}
	return ""
}

// ealArgs completes the configured EAL arguments: a per-process file prefix
// and, unless -l, -c or --lcores is given, lcores for one main plus one per
// worker (lcoreMap).
func ealArgs(args []string, workers int) []string {
	out := append([]string(nil), args...)
	joined := " " + strings.Join(args, " ") + " "
	if !strings.Contains(joined, "--file-prefix") {
		out = append(out, "--file-prefix", fmt.Sprintf("dsrlb-%d", os.Getpid()))
	}
	if !strings.Contains(joined, " -l ") && !strings.Contains(joined, " -c ") && !strings.Contains(joined, "--lcores") {
		out = append(out, lcoreMap(workers, runtime.NumCPU())...)
	}
	if !strings.Contains(joined, "--log-level") {
		out = append(out, "--log-level", "*:warning")
	}
	return out
}

// poolCache is the per-lcore cache of the mbuf pool.
const poolCache = 256

// poolMbufs returns how many mbufs the pool of StartDataplane needs for
// ports served by workers worker lcores. Every rx and tx descriptor of
// every queue of every device (a NIC port and its tap) may hold an mbuf;
// each worker has up to two rx bursts per NIC port waiting (Worker.Poll
// pipelines them) and one tap burst in flight; each lcore's mempool cache
// (the workers' and the main lcore's) holds up to 1.5 times poolCache. A
// quarter more covers drivers that keep a few extra (descriptor counts
// rounded up to a device's alignment). The size depends on the
// configuration only, never on the traffic: replay streams captures of any
// size through it.
func poolMbufs(ports []Port, workers int) uint32 {
	w := uint32(workers)
	var rxQueues, txQueues, nics, taps uint32
	for _, p := range ports {
		nics++
		txQueues += w
		if !p.TxOnly {
			rxQueues += w
		}
		if p.Tap != "" {
			taps++
			rxQueues += w
			txQueues += w
		}
	}
	need := rxQueues*dpdk.DefaultRxDesc + txQueues*dpdk.DefaultTxDesc +
		w*(2*nics+taps)*packet.BurstSize + (w+1)*poolCache*3/2
	return need + need/4
}

// BenchEALArgs returns the EAL arguments of a benchmark whose first port
// replays captures from memory (net_pcap infinite_rx, one capture of
// queuePackets[q] packets per rx queue) with a pool of poolN mbufs of data
// room room per worker: memory for the pools and for infinite_rx's rings
// (ealMemoryArgs: with --no-huge, unless -m or --socket-mem is given), the
// --lcores mapping if one is given, then what every start adds (ealArgs).
func BenchEALArgs(args []string, lcores string, workers int, poolN uint32, room int, queuePackets []int) []string {
	// infinite_rx keeps each queue's packets in a ring.
	var rings uint64
	for _, n := range queuePackets {
		rings += ringBytes(n)
	}
	out := ealMemoryArgs(args, uint64(workers)*mbufPoolMB(poolN, uint16(room))+toMB(rings))
	if lcores != "" {
		out = append(append([]string(nil), out...), "--lcores", lcores)
	}
	return ealArgs(out, workers)
}

// Memory of the EAL with --no-huge (lib/eal, DPDK 22.11): 64 MB unless -m or
// --socket-mem says otherwise (MEMSIZE_IF_NO_HUGE_PAGE), in 4 KB pages.
const (
	ealNoHugeDefaultMB = 64
	ealNoHugePage      = 4096
)

// mbufPoolMB returns the EAL memory, in MB rounded up, that a pool of n
// mbufs of dataRoom bytes (headroom included) takes in 4 KB pages: each
// object is the data room plus struct rte_mbuf (128 bytes) and the
// mempool's object header (64); the mempool places no object across a page
// boundary (objects must be IOVA-contiguous), so a 2176-byte data room
// takes a whole page, a 384-byte one a seventh of a page. The pool's ring
// adds ringBytes(n).
func mbufPoolMB(n uint32, dataRoom uint16) uint64 {
	obj := uint64(dataRoom) + 128 + 64
	var b uint64
	if perPage := ealNoHugePage / obj; perPage > 0 {
		b = (uint64(n) + perPage - 1) / perPage * ealNoHugePage
	} else {
		b = uint64(n) * ((obj + ealNoHugePage - 1) / ealNoHugePage * ealNoHugePage)
	}
	return toMB(b + ringBytes(int(n)))
}

// ringBytes returns the size of an rte_ring that holds n pointers: the
// next power of two above n, 8 bytes each.
func ringBytes(n int) uint64 {
	return 8 << bits.Len64(uint64(n))
}

// toMB returns b bytes in MB, rounded up.
func toMB(b uint64) uint64 { return (b + 1<<20 - 1) >> 20 }

// ealMemoryArgs returns args with "-m MB" appended when they run the EAL
// without hugepages (--no-huge) and set neither -m nor --socket-mem: MB is
// the EAL's own 64 MB (itself, the ports' queues and rings) plus poolMB.
// With hugepages the EAL grows its memory as needed and gets no -m.
func ealMemoryArgs(args []string, poolMB uint64) []string {
	noHuge := false
	for _, a := range args {
		switch {
		case a == "--no-huge":
			noHuge = true
		case a == "--socket-mem" || strings.HasPrefix(a, "--socket-mem="),
			strings.HasPrefix(a, "-m"): // -m N, -mN (EAL has no other option starting -m)
			return args
		}
	}
	if !noHuge {
		return args
	}
	return append(append([]string(nil), args...), "-m", fmt.Sprint(ealNoHugeDefaultMB+poolMB))
}

// StartDataplane initialises the EAL, attaches and starts every port (and
// its tap), and launches one worker per worker lcore. Worker w polls rx
// queue w of every port and of every tap (queue w*QueueStride with a
// stride).
func StartDataplane(o DataplaneOptions) (*Dataplane, error) {
	if o.Workers < 1 {
		o.Workers = 1
	}
	// Each busy worker lcore holds a Go P: leave room for the runtime, the
	// control plane and the goroutine that launches them (dpdk.Launch).
	if runtime.GOMAXPROCS(0) < o.Workers+2 {
		runtime.GOMAXPROCS(o.Workers + 2)
	}
	stride := max(o.QueueStride, 1)
	nq := uint16((o.Workers-1)*stride + 1)
	if o.PoolMbufs == 0 {
		o.PoolMbufs = poolMbufs(o.Ports, 1)
		if o.Probe != nil {
			// An rx and a tx queue per worker, as a tap's.
			n := uint32(dpdk.DefaultRxDesc + dpdk.DefaultTxDesc + packet.BurstSize)
			o.PoolMbufs += n + n/4
		}
	}
	if o.DataRoom == 0 {
		o.DataRoom = dpdk.DefaultDataRoom
	}
	poolMB := uint64(o.Workers) * mbufPoolMB(o.PoolMbufs, o.DataRoom)
	args := ealMemoryArgs(ealArgs(o.EALArgs, o.Workers), poolMB)
	o.Log.Info().Str("event", "eal_init").Strs("args", args).Int("pools", o.Workers).Uint32("pool_mbufs", o.PoolMbufs).Msg("starting DPDK")
	if err := dpdk.Init(args); err != nil {
		return nil, err
	}
	d := &Dataplane{log: o.Log, prefix: filePrefix(args)}
	d.lcores = dpdk.WorkerLcores()
	if len(d.lcores) < o.Workers {
		return nil, fmt.Errorf("EAL has %d worker lcores, want %d (check -l in dataplane.eal_args)", len(d.lcores), o.Workers)
	}
	d.lcores = d.lcores[:o.Workers]
	for w := range o.Workers {
		pool, err := dpdk.NewPktMbufPool(fmt.Sprintf("dsrlb_w%d", w), o.PoolMbufs, poolCache, o.DataRoom, dpdk.SocketAny)
		if err != nil {
			return nil, fmt.Errorf("%w (without hugepages the %d pools take %d MB of EAL memory: check -m in dataplane.eal_args)", err, o.Workers, poolMB)
		}
		d.pools = append(d.pools, pool)
	}
	// Rx queue q takes mbufs from queuePools[q % len]: worker w's pool
	// for its queue and those after it (QueueStride).
	queuePools := d.pools
	if stride > 1 {
		queuePools = make([]*dpdk.Mempool, nq)
		for q := range queuePools {
			queuePools[q] = d.pools[q/stride]
		}
	}
	d.newKernelRxPool(o.Ports, nq)
	for i, p := range o.Ports {
		dev, room := p.rxDevice()
		rxPools := queuePools
		switch {
		case room == 0 || p.TxOnly:
		case d.kernelRx != nil:
			rxPools = []*dpdk.Mempool{d.kernelRx}
		default: // the driver's own ring, whatever it is
			dev = p.Device
		}
		nic, err := d.openPort(dev, p.TxOnly, nq, p.MTU, rxPools)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("port %s (%s): %w", p.Name, dev, err)
		}
		d.nics = append(d.nics, nic)
		d.devices = append(d.devices, dev)
		d.names = append(d.names, p.Name)
		var tap *dpdk.Port
		if p.Tap != "" {
			mac, err := portMAC(nic, p)
			if err != nil {
				d.close()
				return nil, err
			}
			dev := fmt.Sprintf("net_tap%d,iface=%s,mac=%s", i, p.Tap, mac.String())
			tap, err = d.openPort(dev, false, nq, p.MTU, queuePools)
			if err != nil {
				d.close()
				return nil, fmt.Errorf("port %s: tap %s: %w", p.Name, p.Tap, err)
			}
		}
		d.taps = append(d.taps, tap)
	}
	if o.Probe != nil {
		dev := fmt.Sprintf("net_tap%d,iface=%s,mac=%s", len(o.Ports), o.Probe.Tap, probeTapMAC.String())
		err := dpdk.OnMainIn(o.Probe.Enter, func() (err error) {
			d.probe, err = d.openPort(dev, false, nq, 0, queuePools)
			return err
		})
		if err != nil {
			// Forwarding does not depend on it: health probes through
			// the VIP then fail, saying why (health.via).
			o.Log.Error().Err(err).Str("event", "probe_port_failed").Str("tap", o.Probe.Tap).
				Msg("no probe port: health checks through the VIP (health.via: vip) fail until dsrlb restarts with it")
			d.probe = nil
		}
	}
	for w := 0; w < o.Workers; w++ {
		q := uint16(w * stride)
		var wps []pipeline.WorkerPort
		for i, nic := range d.nics {
			wp := pipeline.WorkerPort{NIC: nic, Queue: q}
			if o.Ports[i].TxOnly {
				wp.NIC = txOnly{nic}
			} else if o.WrapRx != nil {
				wp.NIC = o.WrapRx(i, w, nic)
			}
			if d.taps[i] != nil {
				wp.Tap, wp.TapQueue = d.taps[i], q
			}
			wps = append(wps, wp)
		}
		wk := pipeline.NewWorker(wps, o.Snap, o.FlowCap, o.Timeouts, o.Seed)
		wk.IOOnly = o.IOOnly
		wk.IdleSleep = o.IdleSleep
		if d.probe != nil {
			wk.SetProbe(d.probe, q, probeTapMAC)
		}
		a, err := d.pools[w].NewAllocator()
		if err != nil {
			d.close()
			return nil, err
		}
		d.allocs = append(d.allocs, a)
		wk.SetAllocator(a)
		d.workers = append(d.workers, wk)
	}
	d.drainRx(nq)
	if o.Ready != nil {
		o.Ready(d.portMACs(o.Ports))
	}
	for i, w := range d.workers {
		if err := dpdk.Launch(d.lcores[i], w.Run); err != nil {
			d.Stop()
			return nil, err
		}
	}
	d.superframes.start(d)
	o.Log.Info().Str("event", "dataplane_started").Int("workers", o.Workers).Int("ports", len(d.nics)).Msg("data plane running")
	return d, nil
}

// rxDevice returns the device string to attach for p and the mbuf data
// room its rx queues need (0: the default pool's), see afPacketDevice.
func (p Port) rxDevice() (string, uint16) {
	dev, room := afPacketDevice(p.Device)
	if room == 0 && p.WholeFrames {
		room = 0xffff
	}
	return dev, room
}

// newKernelRxPool creates d.kernelRx if a port needs it (rxDevice):
// one pool for the rx queues of every such port, with the largest data
// room they need. Without the memory for it, it logs why and leaves those
// ports their driver's ring: super-frames then arrive cut and are dropped
// (gso_superframe).
func (d *Dataplane) newKernelRxPool(ports []Port, nq uint16) {
	var room uint16
	queues := 0
	for _, p := range ports {
		if _, r := p.rxDevice(); r > 0 && !p.TxOnly {
			room = max(room, r)
			queues += int(nq)
		}
	}
	if queues == 0 {
		return
	}
	pool, err := newKernelRxPool(queues, room)
	if err != nil {
		d.log.Warn().Err(err).Str("event", "kernel_rx_pool_failed").Uint64("bytes", kernelRxPoolBytes(queues, room)).
			Msg("no memory for the 64 KB rx buffers of the af_packet ports (give the EAL more, -m): they keep the driver's ring, " +
				"and TCP super-frames of peers with TSO/GSO are dropped as gso_superframe")
		return
	}
	d.kernelRx = pool
}

// openPort attaches dev and configures nq queues each way, rx queue q
// taking its mbufs from pools[q % len(pools)].
func (d *Dataplane) openPort(dev string, txOnly bool, nq uint16, mtu int, pools []*dpdk.Mempool) (*dpdk.Port, error) {
	id, err := dpdk.AttachPort(dev)
	if err != nil {
		return nil, err
	}
	nrx := nq
	if txOnly {
		nrx = 0
	}
	p, err := dpdk.Configure(id, nrx, nq, dpdk.PortConfig{Pools: pools})
	if err != nil {
		return nil, err
	}
	if mtu > 0 {
		// Virtual devices may not support MTU changes; the snapshot's MTU
		// is what the fast path enforces.
		_ = id.SetMTU(uint16(mtu))
	}
	if err := id.Start(); err != nil {
		return nil, err
	}
	_ = id.SetPromiscuous(true)
	return p, nil
}

// drainRx frees whatever af_packet NIC queues received before the workers
// start (other devices, like a replayed pcap, keep their packets).
// DPDK 22.11's net_af_packet opens its socket for every protocol before
// binding it to its interface, so frames of other interfaces (loopback
// included) can sit in its ring from the first milliseconds.
func (d *Dataplane) drainRx(nq uint16) {
	var pkts [packet.BurstSize]packet.Packet
	for i, nic := range d.nics {
		if nic.NbRx() == 0 || !strings.HasPrefix(d.devices[i], "net_af_packet") {
			continue
		}
		for q := uint16(0); q < nq; q++ {
			for n := 0; n < 1024; n++ {
				m := nic.RxBurst(q, pkts[:])
				if m == 0 {
					break
				}
				nic.Free(pkts[:m])
				d.log.Debug().Int("port", i).Int("packets", m).Str("event", "rx_drained").Msg("dropped frames received before start")
			}
		}
	}
}

// txOnly is a port polled for nothing: a sink without rx queues.
type txOnly struct{ *dpdk.Port }

func (txOnly) RxBurst(uint16, []packet.Packet) int { return 0 }

// portMAC returns the MAC that port p answers to: its configured override,
// else the device's own.
func portMAC(nic *dpdk.Port, p Port) (pipeline.MAC, error) {
	if !p.MAC.IsZero() {
		return p.MAC, nil
	}
	return nic.MAC()
}

// portMACs returns the NIC ports' MACs (portMAC); a zero MAC where the
// device cannot tell.
func (d *Dataplane) portMACs(ports []Port) []pipeline.MAC {
	out := make([]pipeline.MAC, len(d.nics))
	for i, n := range d.nics {
		if m, err := portMAC(n, ports[i]); err == nil {
			out[i] = m
		}
	}
	return out
}

// HasProbe reports whether the probe port is up (DataplaneOptions.Probe).
func (d *Dataplane) HasProbe() bool { return d.probe != nil }

// Lcores returns the worker lcores, worker i on Lcores()[i].
func (d *Dataplane) Lcores() []uint { return d.lcores }

// PortStats returns the device counters of NIC port i (in the order of
// DataplaneOptions.Ports).
func (d *Dataplane) PortStats(i int) (dpdk.Stats, error) { return d.nics[i].Stats() }

// Counters returns each worker's counters.
func (d *Dataplane) Counters() []pipeline.Counters {
	out := make([]pipeline.Counters, len(d.workers))
	for i, w := range d.workers {
		out[i] = w.Counters()
	}
	return out
}

// LookupFlow asks each worker, between two of its bursts, what its flow
// table holds for k (for trace).
func (d *Dataplane) LookupFlow(k pipeline.TraceKey) []control.FlowAnswer {
	out := make([]control.FlowAnswer, len(d.workers))
	for i, w := range d.workers {
		out[i].Probe, out[i].Answered = w.LookupFlow(k)
	}
	return out
}

// Workers returns the number of worker lcores (control.CaptureTarget).
func (d *Dataplane) Workers() int { return len(d.workers) }

// ArmCapture arms worker i with capture ring r, or disarms it (nil).
func (d *Dataplane) ArmCapture(i int, r *pipeline.CaptureRing) { d.workers[i].ArmCapture(r) }

// CaptureIdle reports whether worker i no longer uses r.
func (d *Dataplane) CaptureIdle(i int, r *pipeline.CaptureRing) bool {
	return d.workers[i].CaptureIdle(r)
}

// Stop stops the workers, waits for their lcores and closes the ports (a
// net_pcap port flushes its output file when stopped).
func (d *Dataplane) Stop() {
	if d.stopped {
		return
	}
	d.stopped = true
	d.superframes.stop()
	for _, w := range d.workers {
		w.Stop()
	}
	if err := dpdk.WaitAll(); err != nil {
		d.log.Error().Err(err).Str("event", "worker_failed").Msg("worker lcore failed")
	}
	d.superframes.check(d) // what the workers counted last
	d.close()
	if err := dpdk.Cleanup(); err != nil {
		d.log.Warn().Err(err).Str("event", "eal_cleanup").Msg("EAL cleanup failed")
	}
	if d.prefix != "" {
		// The EAL leaves its runtime directory behind; it is ours alone.
		_ = os.RemoveAll(filepath.Join("/var/run/dpdk", d.prefix))
	}
}

func (d *Dataplane) close() {
	for _, ps := range [][]*dpdk.Port{d.nics, d.taps, {d.probe}} {
		for _, p := range ps {
			if p != nil {
				_ = p.Stop()
				_ = p.Close()
			}
		}
	}
	for _, a := range d.allocs {
		a.Close()
	}
}
