package control

import (
	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
)

// BusyRatio is the share of c's polls that found packets.
func BusyRatio(c *pipeline.Counters) float64 {
	if c.Polls == 0 {
		return 0
	}
	return float64(c.BusyPolls) / float64(c.Polls)
}

// BuildStats sums per-worker counters and names them after snap's services
// and backends. Objects no longer in snap are left out. The values come
// from the counters tables (TotalCounters and the others).
func BuildStats(snap *pipeline.Snapshot, workers []pipeline.Counters) v1.Stats {
	var sum pipeline.Counters
	st := v1.Stats{Drops: map[string]uint64{}, Services: []v1.ServiceStats{}, Workers: []v1.WorkerStats{}}
	for i := range workers {
		w := &workers[i]
		sum.Add(w)
		ws := v1.WorkerStats{Worker: i, Dropped: w.Dropped(), BusyRatio: BusyRatio(w)}
		fill(WorkerCounters, w, &ws)
		st.Workers = append(st.Workers, ws)
	}
	fill(TotalCounters, &sum, &st)
	st.Totals.Dropped = sum.Dropped()
	for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
		st.Drops[r.String()] = sum.Drops[r]
	}
	if snap == nil {
		return st
	}
	st.Generation = snap.Generation
	for i := range snap.Services {
		svc := &snap.Services[i]
		sc := sum.Service(svc.ID)
		ss := v1.ServiceStats{Name: svc.Name, Backends: make([]v1.BackendStats, 0, len(svc.Backends))}
		fill(ServiceCounters, &sc, &ss)
		for _, b := range svc.Backends {
			bc := sum.Backend(b.ID)
			bs := v1.BackendStats{IP: b.Addr.String()}
			fill(BackendCounters, &bc, &bs)
			ss.Backends = append(ss.Backends, bs)
		}
		st.Services = append(st.Services, ss)
	}
	return st
}
