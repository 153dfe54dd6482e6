package control

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/pipeline"
)

// historyFixture is a store with the compile test's config and one
// worker's counters that a test moves by hand.
type historyFixture struct {
	store *Store
	c     pipeline.Counters
	h     *History
}

func newHistoryFixture(t *testing.T, window time.Duration) *historyFixture {
	t.Helper()
	cfg := &Config{
		Dataplane: Dataplane{Ports: []Port{{Name: "eth0", Device: "net_null0", IP: "192.0.2.10/24"}}},
		Neighbors: []Neighbor{{IP: "192.0.2.21", MAC: "02:00:00:00:00:21"}, {IP: "192.0.2.22", MAC: "02:00:00:00:00:22"}},
		Services: []Service{{Name: "web", VIP: "198.51.100.1", Protocol: "tcp", Port: 80, Mode: "l2",
			Backends: []Backend{{IP: "192.0.2.21"}, {IP: "192.0.2.22"}}}},
	}
	st, err := NewStore(cfg, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &historyFixture{store: st}
	f.h = NewHistory(HistoryOptions{Interval: 5 * time.Second, Window: window, Source: func() (*pipeline.Snapshot, []pipeline.Counters) {
		var c pipeline.Counters
		f.c.CopyTo(&c)
		return st.Snapshots().Load(), []pipeline.Counters{c}
	}})
	return f
}

// add counts pkts packets of size bytes and flows new flows for backend
// index bi of the first service, and drops of reason r.
func (f *historyFixture) add(bi int, pkts, size, flows uint64, r pipeline.DropReason, drops uint64) {
	svc := &f.store.Snapshots().Load().Services[0]
	b := svc.Backends[bi]
	for uint32(len(f.c.Services)) <= svc.ID {
		f.c.Services = append(f.c.Services, pipeline.ServiceCounters{})
	}
	for uint32(len(f.c.Backends)) <= b.ID {
		f.c.Backends = append(f.c.Backends, pipeline.BackendCounters{})
	}
	f.c.Services[svc.ID].Packets += pkts
	f.c.Services[svc.ID].Bytes += pkts * size
	f.c.Backends[b.ID].Packets += pkts
	f.c.Backends[b.ID].Bytes += pkts * size
	f.c.Backends[b.ID].NewFlows += flows
	f.c.RxPackets += pkts
	f.c.RxBytes += pkts * size
	f.c.Drops[r] += drops
}

func seriesOf(t *testing.T, h *History, object, name string) ([]int64, []float64) {
	t.Helper()
	hist, ok := h.Series(object)
	if !ok {
		t.Fatalf("no history of %q", object)
	}
	for _, s := range hist.Series {
		if s.Name == name {
			if len(s.Values) != len(hist.Times) {
				t.Fatalf("%s %s: %d values for %d times", object, name, len(s.Values), len(hist.Times))
			}
			return hist.Times, s.Values
		}
	}
	t.Fatalf("%s has no series %q", object, name)
	return nil, nil
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHistoryRates(t *testing.T) {
	f := newHistoryFixture(t, time.Minute)
	t0 := time.Unix(1_800_000_000, 0)
	f.h.Sample(t0) // baseline
	if r := f.h.Rates(); len(r.Services) != 0 {
		t.Fatalf("rates after the baseline: %+v, want none", r)
	}
	// 5 s: 500 packets of 100 bytes and 10 flows to backend 0, 50 packets
	// to backend 1, 25 ttl_exceeded drops.
	f.add(0, 500, 100, 10, pipeline.DropTTL, 25)
	f.add(1, 50, 100, 0, pipeline.DropTTL, 0)
	f.h.Sample(t0.Add(5 * time.Second))
	r := f.h.Rates()
	if len(r.Services) != 1 || len(r.Services[0].Backends) != 2 {
		t.Fatalf("rates %+v, want web with 2 backends", r)
	}
	web := r.Services[0]
	if web.Packets != 110 || web.Bits != 110*800 || web.NewFlows != 2 {
		t.Errorf("web: %v pps %v bps %v flows/s, want 110, 88000, 2", web.Packets, web.Bits, web.NewFlows)
	}
	if b := web.Backends[0]; b.IP != "192.0.2.21" || b.Packets != 100 || b.Bits != 80000 || b.NewFlows != 2 {
		t.Errorf("backend 0: %+v, want 192.0.2.21 100 pps 80000 bps 2 flows/s", b)
	}
	if r.Time != t0.Unix()+5 || r.IntervalSeconds != 5 {
		t.Errorf("time %d interval %v, want %d 5", r.Time, r.IntervalSeconds, t0.Unix()+5)
	}
	// Idle for 5 s, then 10 s with 1000 packets to backend 1.
	f.h.Sample(t0.Add(10 * time.Second))
	f.add(1, 1000, 100, 0, pipeline.DropTTL, 0)
	f.h.Sample(t0.Add(20 * time.Second))

	times, pps := seriesOf(t, f.h, HistoryBackend("web", "192.0.2.22"), SeriesPackets)
	if want := []float64{10, 0, 100}; !equalFloats(pps, want) {
		t.Errorf("backend 1 packets/s %v, want %v", pps, want)
	}
	if want := []int64{t0.Unix() + 5, t0.Unix() + 10, t0.Unix() + 20}; len(times) != 3 || times[0] != want[0] || times[2] != want[2] {
		t.Errorf("times %v, want %v", times, want)
	}
	if _, drops := seriesOf(t, f.h, HistoryAppliance, SeriesDropsPrefix+"ttl_exceeded"); !equalFloats(drops, []float64{5, 0, 0}) {
		t.Errorf("appliance ttl_exceeded drops/s %v, want [5 0 0]", drops)
	}
	if _, rx := seriesOf(t, f.h, HistoryAppliance, SeriesRxBits); !equalFloats(rx, []float64{88000, 0, 80000}) {
		t.Errorf("appliance rx bits/s %v, want [88000 0 80000]", rx)
	}
	if _, ok := f.h.Series(HistoryService("nope")); ok {
		t.Error("history of an unknown service")
	}
}

// TestHistoryBounded: the window keeps its number of samples, a removed
// backend's values read 0 after it left and the backend is forgotten a
// window later.
func TestHistoryBounded(t *testing.T) {
	f := newHistoryFixture(t, 20*time.Second) // 4 samples
	t0 := time.Unix(1_800_000_000, 0)
	f.h.Sample(t0)
	for i := 1; i <= 6; i++ {
		f.add(0, 5*uint64(i), 100, 0, pipeline.DropTTL, 0)
		f.h.Sample(t0.Add(time.Duration(i) * 5 * time.Second))
	}
	times, pps := seriesOf(t, f.h, HistoryService("web"), SeriesPackets)
	if len(times) != 4 || !equalFloats(pps, []float64{3, 4, 5, 6}) {
		t.Errorf("web packets/s %v at %v, want the last 4 samples [3 4 5 6]", pps, times)
	}
	if err := f.store.Update(func(c *Config) error {
		return c.RemoveBackend("web", netip.MustParseAddr("192.0.2.21"))
	}); err != nil {
		t.Fatal(err)
	}
	be := HistoryBackend("web", "192.0.2.21")
	for i := 7; i <= 8; i++ {
		f.h.Sample(t0.Add(time.Duration(i) * 5 * time.Second))
	}
	if _, pps := seriesOf(t, f.h, be, SeriesPackets); !equalFloats(pps, []float64{5, 6, 0, 0}) {
		t.Errorf("removed backend packets/s %v, want [5 6 0 0]", pps)
	}
	for i := 9; i <= 10; i++ {
		f.h.Sample(t0.Add(time.Duration(i) * 5 * time.Second))
	}
	if _, ok := f.h.Series(be); ok {
		t.Error("a backend gone for a whole window is still kept")
	}
	if r := f.h.Rates(); len(r.Services[0].Backends) != 1 {
		t.Errorf("rates list %d backends, want 1", len(r.Services[0].Backends))
	}
}

// TestHistoryConcurrent: Run samples while readers read (for -race).
func TestHistoryConcurrent(t *testing.T) {
	f := newHistoryFixture(t, time.Minute)
	h := NewHistory(HistoryOptions{Interval: time.Millisecond, Window: 50 * time.Millisecond, Source: func() (*pipeline.Snapshot, []pipeline.Counters) {
		return f.store.Snapshots().Load(), nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	for i := 0; i < 200; i++ {
		h.Rates()
		h.Series(HistoryAppliance)
		h.Series(HistoryBackend("web", "192.0.2.21"))
	}
	cancel()
	<-done
}
