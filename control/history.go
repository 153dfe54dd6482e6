package control

import (
	"context"
	"sync"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
)

// The rates the web console graphs: sampled every HistoryInterval, kept
// for HistoryWindow, so that a page opened now shows the last 15 minutes.
const (
	HistoryInterval = 5 * time.Second
	HistoryWindow   = 15 * time.Minute
)

// History object names (v1.History.Object) and series names
// (v1.Series.Name) are stable: the console and scripts read them.
const (
	// HistoryAppliance is the object of the appliance-wide rates.
	HistoryAppliance = "appliance"

	SeriesPackets   = "packets_per_second"
	SeriesBits      = "bits_per_second"
	SeriesNewFlows  = "new_flows_per_second"
	SeriesNoBackend = "no_backend_drops_per_second"
	SeriesRxPackets = "rx_packets_per_second"
	SeriesRxBits    = "rx_bits_per_second"
	SeriesTxPackets = "tx_packets_per_second"
	SeriesTxBits    = "tx_bits_per_second"
	// SeriesDropsPrefix + a DropReason's name is that reason's drops per
	// second.
	SeriesDropsPrefix = "drops_per_second:"
)

// HistoryService is the object name of service svc's rates.
func HistoryService(svc string) string { return "service " + svc }

// HistoryBackend is the object name of the rates of backend ip of svc.
func HistoryBackend(svc, ip string) string { return "service " + svc + "/backend " + ip }

var (
	applianceSeries = func() []string {
		s := []string{SeriesRxPackets, SeriesRxBits, SeriesTxPackets, SeriesTxBits, SeriesNewFlows}
		for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
			s = append(s, SeriesDropsPrefix+r.String())
		}
		return s
	}()
	serviceSeries = []string{SeriesPackets, SeriesBits, SeriesNewFlows, SeriesNoBackend}
	backendSeries = []string{SeriesPackets, SeriesBits, SeriesNewFlows}
)

// HistoryOptions configure a History.
type HistoryOptions struct {
	// Interval and Window default to HistoryInterval and HistoryWindow.
	Interval, Window time.Duration
	// Source returns the published snapshot and every worker's counters;
	// required.
	Source func() (*pipeline.Snapshot, []pipeline.Counters)
}

// History keeps a bounded history of the rates of the appliance, of each
// service and of each backend: one sample per interval, the window's worth
// per object in a ring. An object not seen for a whole window is
// forgotten, so memory is bounded by the objects of the last window: 180
// float32 per series with the defaults, about 3 KB per backend (5.8 MB
// for 200 services with 2,000 backends).
// Sample and Run write it; Rates and Series read it; all are safe for
// concurrent use.
type History struct {
	interval time.Duration
	size     int64 // samples kept
	source   func() (*pipeline.Snapshot, []pipeline.Counters)

	mu sync.Mutex
	// n counts the samples that recorded rates; sample k is in slot k%size.
	n      int64
	times  []int64 // Unix seconds, by slot
	prev   *v1.Stats
	prevAt time.Time
	tracks map[string]*track
	latest v1.Rates
}

// track is the ring of one object's series.
type track struct {
	first, last int64 // the first and last sample that saw the object
	names       []string
	vals        [][]float32 // per series, by slot
}

// NewHistory returns an empty History for o.
func NewHistory(o HistoryOptions) *History {
	if o.Interval <= 0 {
		o.Interval = HistoryInterval
	}
	if o.Window < o.Interval {
		o.Window = HistoryWindow
	}
	size := int64(o.Window / o.Interval)
	return &History{
		interval: o.Interval, size: size, source: o.Source,
		times: make([]int64, size), tracks: map[string]*track{},
		latest: v1.Rates{IntervalSeconds: o.Interval.Seconds(), Services: []v1.ServiceRates{}},
	}
}

// Run samples at once and then every interval until ctx ends.
func (h *History) Run(ctx context.Context) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	h.Sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.Sample(now)
		}
	}
}

// Sample reads the counters and records the rates since the previous
// sample, taken at now. The first sample only sets the baseline. A counter
// that went down (its object was removed and added again) counts from 0.
func (h *History) Sample(now time.Time) {
	snap, per := h.source()
	st := BuildStats(snap, per)
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, dt := h.prev, now.Sub(h.prevAt).Seconds()
	if prev != nil && dt <= 0 {
		return // the clock went back: keep the baseline
	}
	h.prev, h.prevAt = &st, now
	if prev == nil {
		return
	}
	rate := func(cur, old uint64) float64 {
		if cur < old {
			old = 0
		}
		return float64(cur-old) / dt
	}
	k := h.n
	h.times[k%h.size] = now.Unix()

	prevSvc := make(map[string]*v1.ServiceStats, len(prev.Services))
	for i := range prev.Services {
		prevSvc[prev.Services[i].Name] = &prev.Services[i]
	}
	var allNew float64
	rates := v1.Rates{Time: now.Unix(), IntervalSeconds: h.interval.Seconds(), Services: make([]v1.ServiceRates, 0, len(st.Services))}
	for _, s := range st.Services {
		var ps v1.ServiceStats
		if p := prevSvc[s.Name]; p != nil {
			ps = *p
		}
		prevBe := make(map[string]v1.BackendStats, len(ps.Backends))
		for _, b := range ps.Backends {
			prevBe[b.IP] = b
		}
		sr := v1.ServiceRates{Name: s.Name, Packets: rate(s.Packets, ps.Packets), Bits: 8 * rate(s.Bytes, ps.Bytes),
			NoBackend: rate(s.NoBackend, ps.NoBackend), Backends: make([]v1.BackendRates, 0, len(s.Backends))}
		for _, b := range s.Backends {
			pb := prevBe[b.IP]
			br := v1.BackendRates{IP: b.IP, Packets: rate(b.Packets, pb.Packets), Bits: 8 * rate(b.Bytes, pb.Bytes),
				NewFlows: rate(b.NewFlows, pb.NewFlows)}
			sr.NewFlows += br.NewFlows
			h.record(HistoryBackend(s.Name, b.IP), k, backendSeries, br.Packets, br.Bits, br.NewFlows)
			sr.Backends = append(sr.Backends, br)
		}
		allNew += sr.NewFlows
		h.record(HistoryService(s.Name), k, serviceSeries, sr.Packets, sr.Bits, sr.NewFlows, sr.NoBackend)
		rates.Services = append(rates.Services, sr)
	}
	app := []float64{rate(st.Totals.RxPackets, prev.Totals.RxPackets), 8 * rate(st.Totals.RxBytes, prev.Totals.RxBytes),
		rate(st.Totals.TxPackets, prev.Totals.TxPackets), 8 * rate(st.Totals.TxBytes, prev.Totals.TxBytes), allNew}
	for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
		name := r.String()
		app = append(app, rate(st.Drops[name], prev.Drops[name]))
	}
	h.record(HistoryAppliance, k, applianceSeries, app...)
	for key, tr := range h.tracks {
		if k-tr.last >= h.size {
			delete(h.tracks, key)
		}
	}
	h.latest = rates
	h.n++
}

// record writes vals, one per series of names, of the object key as
// sample k. Samples the object missed since it was last seen read 0.
func (h *History) record(key string, k int64, names []string, vals ...float64) {
	slot := k % h.size
	tr := h.tracks[key]
	if tr == nil {
		tr = &track{first: k, last: k, names: names, vals: make([][]float32, len(names))}
		for j := range tr.vals {
			tr.vals[j] = make([]float32, h.size)
		}
		h.tracks[key] = tr
	}
	for i := max(tr.last+1, k-h.size+1); i < k; i++ {
		for j := range tr.vals {
			tr.vals[j][i%h.size] = 0
		}
	}
	for j, v := range vals {
		tr.vals[j][slot] = float32(v)
	}
	tr.last = k
}

// Interval returns the sampling interval.
func (h *History) Interval() time.Duration { return h.interval }

// Rates returns the rates of the last interval. The result is shared:
// do not change it.
func (h *History) Rates() v1.Rates {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.latest
}

// Series returns the history of object (HistoryAppliance, HistoryService
// or HistoryBackend), oldest first, or false if the window holds nothing
// of it.
func (h *History) Series(object string) (v1.History, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tr := h.tracks[object]
	if tr == nil {
		return v1.History{}, false
	}
	names := tr.names
	start := max(0, h.n-h.size)
	out := v1.History{Object: object, IntervalSeconds: h.interval.Seconds(), Times: make([]int64, 0, h.n-start),
		Series: make([]v1.Series, len(names))}
	for i := start; i < h.n; i++ {
		out.Times = append(out.Times, h.times[i%h.size])
	}
	for j, name := range names {
		vals := make([]float64, h.n-start)
		for i := start; i < h.n; i++ {
			if i >= tr.first && i <= tr.last {
				vals[i-start] = float64(tr.vals[j][i%h.size])
			}
		}
		out.Series[j] = v1.Series{Name: name, Values: vals}
	}
	return out, true
}
