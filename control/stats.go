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
// and backends. Objects no longer in snap are left out.
func BuildStats(snap *pipeline.Snapshot, workers []pipeline.Counters) v1.Stats {
	var sum pipeline.Counters
	st := v1.Stats{Drops: map[string]uint64{}, Services: []v1.ServiceStats{}, Workers: []v1.WorkerStats{}}
	for i := range workers {
		w := &workers[i]
		sum.Add(w)
		st.Workers = append(st.Workers, v1.WorkerStats{Worker: i, RxPackets: w.RxPackets, TxPackets: w.TxPackets,
			Dropped: w.Dropped(), FlowEntries: w.FlowEntries, Polls: w.Polls, BusyPolls: w.BusyPolls, BusyRatio: BusyRatio(w),
			IdleSleeps: w.IdleSleeps})
	}
	st.Totals = v1.Totals{RxPackets: sum.RxPackets, RxBytes: sum.RxBytes, TxPackets: sum.TxPackets, TxBytes: sum.TxBytes,
		ToKernel: sum.ToKernel, FromKernel: sum.FromKernel, Dropped: sum.Dropped(), FragNeededSent: sum.FragNeededSent,
		ICMPErrorsForwarded: sum.ICMPErrorsForwarded, IPOptions: sum.IPOptions, L4ChecksumsCompleted: sum.L4ChecksumsCompleted,
		GSOSegmented: sum.GSOSegmented, GSOSegments: sum.GSOSegments}
	for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
		st.Drops[r.String()] = sum.Drops[r]
	}
	st.Flows = v1.FlowStats{Entries: sum.FlowEntries, Hits: sum.FlowHits, Misses: sum.FlowMisses,
		Evictions: sum.FlowEvictions, Expired: sum.FlowExpired, Remapped: sum.FlowRemapped}
	if snap == nil {
		return st
	}
	st.Generation = snap.Generation
	for i := range snap.Services {
		svc := &snap.Services[i]
		sc := at(sum.Services, svc.ID)
		ss := v1.ServiceStats{Name: svc.Name, Packets: sc.Packets, Bytes: sc.Bytes, NoBackend: sc.NoBackend,
			Backends: make([]v1.BackendStats, 0, len(svc.Backends))}
		for _, b := range svc.Backends {
			bc := at(sum.Backends, b.ID)
			ss.Backends = append(ss.Backends, v1.BackendStats{IP: b.Addr.String(), Packets: bc.Packets, Bytes: bc.Bytes, NewFlows: bc.NewFlows})
		}
		st.Services = append(st.Services, ss)
	}
	return st
}

// at returns s[id], or the zero value when a worker has not yet grown its
// counters to id.
func at[T any](s []T, id uint32) T {
	var zero T
	if int(id) < len(s) {
		return s[id]
	}
	return zero
}
