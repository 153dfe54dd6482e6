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

// Metric descriptions. Counters stay per lcore in the fast path; the
// collector sums them on each scrape. The data plane's counters are
// described by control's counters tables, one desc per row with a metric;
// the rest are below.
var (
	totalDescs   = descs(control.TotalCounters)
	workerDescs  = descs(control.WorkerCounters, "worker")
	serviceDescs = descs(control.ServiceCounters, "service")
	backendDescs = descs(control.BackendCounters, "service", "backend")

	mDrops          = desc("drops_total", "Dropped packets by reason.", "reason")
	mWorkerRatio    = desc("worker_busy_ratio", "Busy polls / polls of the worker since it started.", "worker")
	mGeneration     = desc("snapshot_generation", "Generation of the published forwarding snapshot.")
	mChanges        = desc("config_changes_total", "Config changes by result (accepted, rejected).", "result")
	mBackendUp      = desc("backend_up", "1 unless the backend is down in the published snapshot (disabled, failed its health check, next hop unresolved): a draining backend, or one passive detection holds (dsrlb_backend_passive_held), keeps its established flows and counts as up.", "service", "backend")
	mVIPAnnounced   = desc("vip_announced", "1 while the VIP is to be announced over BGP.", "vip")
	mBGPEstablished = desc("bgp_session_established", "1 while the BGP session with the peer is established.", "peer")
	mBackendHeld    = desc("backend_passive_held", "1 while passive detection holds the backend down (no new flows, established ones kept).", "service", "backend")

	// otherDescs are the descriptions not made from a counters table.
	otherDescs = []*prometheus.Desc{mDrops, mWorkerRatio, mGeneration, mChanges, mBackendUp, mVIPAnnounced, mBGPEstablished, mBackendHeld}
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("dsrlb_"+name, help, labels, nil)
}

// descs returns the description of each row of a counters table, nil for
// a row without a metric.
func descs[C, J any](rows []control.Counter[C, J], labels ...string) []*prometheus.Desc {
	ds := make([]*prometheus.Desc, len(rows))
	for i, r := range rows {
		if r.Metric != "" {
			ds[i] = desc(r.Metric, r.Help, labels...)
		}
	}
	return ds
}

// emitRows sends the metric of each row of a counters table with one (nil
// for rows without a metric), read from c.
func emitRows[C, J any](ch chan<- prometheus.Metric, rows []control.Counter[C, J], ds []*prometheus.Desc, c *C, labels ...string) {
	for i, r := range rows {
		if ds[i] == nil {
			continue
		}
		t := prometheus.CounterValue
		if r.Kind == control.KindGauge {
			t = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(ds[i], t, float64(r.Read(c)), labels...)
	}
}

// collector is the prometheus.Collector of the data plane and the store.
type collector struct{ s *Server }

// Describe sends every metric description.
func (m collector) Describe(ch chan<- *prometheus.Desc) {
	for _, set := range [][]*prometheus.Desc{totalDescs, workerDescs, serviceDescs, backendDescs, otherDescs} {
		for _, d := range set {
			if d != nil {
				ch <- d
			}
		}
	}
}

// Collect reads the workers' counters once and sends every metric.
func (m collector) Collect(ch chan<- prometheus.Metric) {
	per, sum := m.s.counters()
	snap := m.s.opts.Store.Snapshots().Load()
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	announced := map[netip.Addr]bool{}
	for _, svc := range snap.Services {
		sc := sum.Service(svc.ID)
		emitRows(ch, control.ServiceCounters, serviceDescs, &sc, svc.Name)
		for _, b := range svc.Backends {
			bc, ip := sum.Backend(b.ID), b.Addr.String()
			emitRows(ch, control.BackendCounters, backendDescs, &bc, svc.Name, ip)
			emit(mBackendUp, prometheus.GaugeValue, boolGauge(b.State != pipeline.BackendDown), svc.Name, ip)
			emit(mBackendHeld, prometheus.GaugeValue, boolGauge(b.State == pipeline.BackendHeld), svc.Name, ip)
		}
		if m.s.opts.Announcer != nil {
			vip := svc.VIPAddr
			ok, _ := m.s.opts.Announcer.Status(vip)
			announced[vip] = ok
		}
	}
	for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
		emit(mDrops, prometheus.CounterValue, float64(sum.Drops[r]), r.String())
	}
	emitRows(ch, control.TotalCounters, totalDescs, &sum)
	for i := range per {
		w := strconv.Itoa(i)
		emitRows(ch, control.WorkerCounters, workerDescs, &per[i], w)
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
	emit(mChanges, prometheus.CounterValue, float64(acc), "accepted")
	emit(mChanges, prometheus.CounterValue, float64(rej), "rejected")
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
