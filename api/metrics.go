package api

import (
	"net/http"
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
)

// Metric descriptions. Counters stay per lcore in the fast path; collector
// sums them on each scrape.
var (
	mServicePackets  = desc("service_packets_total", "Packets received for the service.", "service")
	mServiceBytes    = desc("service_bytes_total", "Bytes received for the service.", "service")
	mServiceNoBE     = desc("service_no_backend_drops_total", "Packets of the service dropped because no backend took new flows.", "service")
	mBackendPackets  = desc("backend_packets_total", "Packets forwarded to the backend.", "service", "backend")
	mBackendBytes    = desc("backend_bytes_total", "Bytes forwarded to the backend.", "service", "backend")
	mBackendNewFlows = desc("backend_new_flows_total", "Flows Maglev assigned to the backend.", "service", "backend")
	mDrops           = desc("drops_total", "Dropped packets by reason.", "reason")
	mRxPackets       = desc("rx_packets_total", "Packets received from the NICs.")
	mRxBytes         = desc("rx_bytes_total", "Bytes received from the NICs.")
	mTxPackets       = desc("tx_packets_total", "Packets sent out of the NICs.")
	mTxBytes         = desc("tx_bytes_total", "Bytes sent out of the NICs.")
	mToKernel        = desc("to_kernel_packets_total", "Packets handed to the kernel (tap).")
	mFromKernel      = desc("from_kernel_packets_total", "Packets the kernel sent out through the tap.")
	mFragNeeded      = desc("frag_needed_sent_total", "ICMP fragmentation-needed replies generated.")
	mICMPForwarded   = desc("icmp_errors_forwarded_total", "ICMP errors sent to the backend owning the flow.")
	mL4Completed     = desc("l4_checksums_completed_total", "TCP and UDP checksums completed on ports that read a kernel's frames (partial checksums).")
	mGSOSegmented    = desc("gso_superframes_segmented_total", "TCP super-frames (longer than the port MTU, from a peer's TSO/GSO/GRO) cut into segments.")
	mGSOSegments     = desc("gso_segments_total", "Segments made of TCP super-frames.")
	mFlowEntries     = desc("flow_entries", "Flow table entries in use.")
	mFlowHits        = desc("flow_hits_total", "Flow table hits.")
	mFlowMisses      = desc("flow_misses_total", "Flow table misses.")
	mFlowEvictions   = desc("flow_evictions_total", "Flow table entries evicted to make room.")
	mFlowExpired     = desc("flow_expired_total", "Flow table entries expired.")
	mFlowRemapped    = desc("flow_remapped_total", "Flows moved because their backend went down or left.")
	mWorkerPolls     = desc("worker_polls_total", "Poll rounds of the worker.", "worker")
	mWorkerBusy      = desc("worker_busy_polls_total", "Poll rounds of the worker that found packets.", "worker")
	mWorkerSleeps    = desc("worker_idle_sleeps_total", "Sleeps of the idle worker (dataplane.idle_sleep).", "worker")
	mWorkerRatio     = desc("worker_busy_ratio", "Busy polls / polls of the worker since it started.", "worker")
	mGeneration      = desc("snapshot_generation", "Generation of the published forwarding snapshot.")
	mChanges         = desc("config_changes_total", "Config changes by result (accepted, rejected).", "result")
	mBackendUp       = desc("backend_up", "1 while the backend takes flows in the published snapshot (enabled, healthy, next hop resolved).", "service", "backend")
	mVIPAnnounced    = desc("vip_announced", "1 while the VIP is to be announced over BGP.", "vip")
	mBGPEstablished  = desc("bgp_session_established", "1 while the BGP session with the peer is established.", "peer")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("dsrlb_"+name, help, labels, nil)
}

// collector is the prometheus.Collector of the data plane and the store.
type collector struct{ s *Server }

// Describe sends every metric description.
func (m collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mServicePackets, mServiceBytes, mServiceNoBE, mBackendPackets, mBackendBytes,
		mBackendNewFlows, mDrops, mRxPackets, mRxBytes, mTxPackets, mTxBytes, mToKernel, mFromKernel, mFragNeeded,
		mICMPForwarded, mL4Completed, mGSOSegmented, mGSOSegments, mFlowEntries, mFlowHits, mFlowMisses, mFlowEvictions, mFlowExpired, mFlowRemapped,
		mWorkerPolls, mWorkerBusy, mWorkerRatio, mGeneration, mChanges} {
		ch <- d
	}
}

// Collect reads the workers' counters once and sends every metric.
func (m collector) Collect(ch chan<- prometheus.Metric) {
	per, sum := m.s.counters()
	snap := m.s.opts.Store.Snapshots().Load()
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		emit(d, prometheus.CounterValue, float64(v), labels...)
	}
	announced := map[netip.Addr]bool{}
	for _, svc := range snap.Services {
		sc := at(sum.Services, svc.ID)
		counter(mServicePackets, sc.Packets, svc.Name)
		counter(mServiceBytes, sc.Bytes, svc.Name)
		counter(mServiceNoBE, sc.NoBackend, svc.Name)
		for _, b := range svc.Backends {
			bc, ip := at(sum.Backends, b.ID), b.Addr.String()
			counter(mBackendPackets, bc.Packets, svc.Name, ip)
			counter(mBackendBytes, bc.Bytes, svc.Name, ip)
			counter(mBackendNewFlows, bc.NewFlows, svc.Name, ip)
			emit(mBackendUp, prometheus.GaugeValue, boolGauge(b.State != pipeline.BackendDown), svc.Name, ip)
		}
		if m.s.opts.Announcer != nil {
			vip := netip.AddrFrom4(svc.VIPBytes())
			ok, _ := m.s.opts.Announcer.Status(vip)
			announced[vip] = ok
		}
	}
	for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
		counter(mDrops, sum.Drops[r], r.String())
	}
	counter(mRxPackets, sum.RxPackets)
	counter(mRxBytes, sum.RxBytes)
	counter(mTxPackets, sum.TxPackets)
	counter(mTxBytes, sum.TxBytes)
	counter(mToKernel, sum.ToKernel)
	counter(mFromKernel, sum.FromKernel)
	counter(mFragNeeded, sum.FragNeededSent)
	counter(mICMPForwarded, sum.ICMPErrorsForwarded)
	counter(mL4Completed, sum.L4ChecksumsCompleted)
	counter(mGSOSegmented, sum.GSOSegmented)
	counter(mGSOSegments, sum.GSOSegments)
	emit(mFlowEntries, prometheus.GaugeValue, float64(sum.FlowEntries))
	counter(mFlowHits, sum.FlowHits)
	counter(mFlowMisses, sum.FlowMisses)
	counter(mFlowEvictions, sum.FlowEvictions)
	counter(mFlowExpired, sum.FlowExpired)
	counter(mFlowRemapped, sum.FlowRemapped)
	for i := range per {
		w := strconv.Itoa(i)
		counter(mWorkerPolls, per[i].Polls, w)
		counter(mWorkerBusy, per[i].BusyPolls, w)
		counter(mWorkerSleeps, per[i].IdleSleeps, w)
		emit(mWorkerRatio, prometheus.GaugeValue, control.BusyRatio(&per[i]), w)
	}
	for vip, ok := range announced {
		emit(mVIPAnnounced, prometheus.GaugeValue, boolGauge(ok), vip.String())
	}
	if m.s.opts.BGP != nil {
		for _, p := range m.s.opts.BGP.BGPPeers() {
			emit(mBGPEstablished, prometheus.GaugeValue, boolGauge(p.State == "established"), p.Address)
		}
	}
	emit(mGeneration, prometheus.GaugeValue, float64(snap.Generation))
	acc, rej := m.s.opts.Store.Changes()
	counter(mChanges, acc, "accepted")
	counter(mChanges, rej, "rejected")
}

// newRegistry returns a private registry with s's collector and the Go and
// process collectors.
func newRegistry(s *Server) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collector{s}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

func metricsHandler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{Registry: r})
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
