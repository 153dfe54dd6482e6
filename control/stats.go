package control

import (
	"github.com/dsrlb/dsrlb/pipeline"
)

// Stats is the JSON view of the workers' counters, summed, named by the
// snapshot: totals, drops by reason, per service and per backend. It is the
// last line of `dsrlb replay` and `dsrlb bench` and the body of
// GET /api/v1/stats.
type Stats struct {
	Generation uint64 `json:"generation"`
	Totals     Totals `json:"totals"`
	// Drops has every reason, zero or not, so scripts can rely on the keys.
	Drops    map[string]uint64       `json:"drops"`
	Flows    FlowStats               `json:"flows"`
	Services map[string]ServiceStats `json:"services"`
	Workers  []WorkerStats           `json:"workers,omitempty"`
}

// Totals are appliance-wide packet counts.
type Totals struct {
	RxPackets           uint64 `json:"rx_packets"`
	RxBytes             uint64 `json:"rx_bytes"`
	TxPackets           uint64 `json:"tx_packets"`
	TxBytes             uint64 `json:"tx_bytes"`
	ToKernel            uint64 `json:"to_kernel"`
	FromKernel          uint64 `json:"from_kernel"`
	Dropped             uint64 `json:"dropped"`
	FragNeededSent      uint64 `json:"frag_needed_sent"`
	ICMPErrorsForwarded uint64 `json:"icmp_errors_forwarded"`
	IPOptions           uint64 `json:"ip_options"`
}

// FlowStats are the flow tables' counters, summed over workers.
type FlowStats struct {
	Entries   uint64 `json:"entries"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Evictions uint64 `json:"evictions"`
	Expired   uint64 `json:"expired"`
	Remapped  uint64 `json:"remapped"`
}

// ServiceStats are one service's counters.
type ServiceStats struct {
	Packets   uint64                  `json:"packets"`
	Bytes     uint64                  `json:"bytes"`
	NoBackend uint64                  `json:"no_backend"`
	Backends  map[string]BackendStats `json:"backends"`
}

// BackendStats are one backend's counters.
type BackendStats struct {
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	NewFlows uint64 `json:"new_flows"`
	State    string `json:"state"`
}

// WorkerStats are one worker's own numbers.
type WorkerStats struct {
	RxPackets uint64  `json:"rx_packets"`
	TxPackets uint64  `json:"tx_packets"`
	BusyRatio float64 `json:"busy_ratio"`
}

// BuildStats sums per-worker counters and names them after snap's services
// and backends. Objects no longer in snap are left out.
func BuildStats(snap *pipeline.Snapshot, workers []pipeline.Counters) Stats {
	var sum pipeline.Counters
	st := Stats{Drops: map[string]uint64{}, Services: map[string]ServiceStats{}}
	for i := range workers {
		w := &workers[i]
		sum.Add(w)
		ws := WorkerStats{RxPackets: w.RxPackets, TxPackets: w.TxPackets}
		if w.Polls > 0 {
			ws.BusyRatio = float64(w.BusyPolls) / float64(w.Polls)
		}
		st.Workers = append(st.Workers, ws)
	}
	st.Totals = Totals{RxPackets: sum.RxPackets, RxBytes: sum.RxBytes, TxPackets: sum.TxPackets, TxBytes: sum.TxBytes,
		ToKernel: sum.ToKernel, FromKernel: sum.FromKernel, Dropped: sum.Dropped(), FragNeededSent: sum.FragNeededSent,
		ICMPErrorsForwarded: sum.ICMPErrorsForwarded, IPOptions: sum.IPOptions}
	for r := pipeline.DropReason(1); r < pipeline.NumDropReasons; r++ {
		st.Drops[r.String()] = sum.Drops[r]
	}
	st.Flows = FlowStats{Entries: sum.FlowEntries, Hits: sum.FlowHits, Misses: sum.FlowMisses,
		Evictions: sum.FlowEvictions, Expired: sum.FlowExpired, Remapped: sum.FlowRemapped}
	if snap == nil {
		return st
	}
	st.Generation = snap.Generation
	for i := range snap.Services {
		svc := &snap.Services[i]
		ss := ServiceStats{Backends: map[string]BackendStats{}}
		if int(svc.ID) < len(sum.Services) {
			c := sum.Services[svc.ID]
			ss.Packets, ss.Bytes, ss.NoBackend = c.Packets, c.Bytes, c.NoBackend
		}
		for _, b := range svc.Backends {
			bs := BackendStats{State: b.State.String()}
			if int(b.ID) < len(sum.Backends) {
				c := sum.Backends[b.ID]
				bs.Packets, bs.Bytes, bs.NewFlows = c.Packets, c.Bytes, c.NewFlows
			}
			ss.Backends[b.Addr.String()] = bs
		}
		st.Services[svc.Name] = ss
	}
	return st
}
