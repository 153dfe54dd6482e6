package control

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/dsrlb/dsrlb/control/health"
	"github.com/dsrlb/dsrlb/pipeline"
)

// UnansweredCounts returns the unanswered flows of every backend of snap
// (pipeline.BackendCounters.UnansweredFlows) summed over the workers'
// counters: the evidence of passive detection,
// health.Monitors.ObserveUnanswered.
func UnansweredCounts(snap *pipeline.Snapshot, workers []pipeline.Counters) map[health.Target]uint64 {
	out := map[health.Target]uint64{}
	if snap == nil {
		return out
	}
	for i := range snap.Services {
		svc := &snap.Services[i]
		for _, b := range svc.Backends {
			var n uint64
			for w := range workers {
				n += workers[w].Backend(b.ID).UnansweredFlows
			}
			out[health.Target{Service: svc.Name, Backend: b.Addr}] = n
		}
	}
	return out
}

// PassiveFeed hands the data plane's unanswered flows to passive
// detection: the data plane counts, control judges.
type PassiveFeed struct {
	// Snapshots is the published snapshot (Store.Snapshots), which names
	// the backends of the counters.
	Snapshots *atomic.Pointer[pipeline.Snapshot]
	// Counters returns each worker's counters (the appliance's data
	// plane).
	Counters func() []pipeline.Counters
	// Monitors judges the counts.
	Monitors *health.Monitors
	// Period is how often the counters are read; 0 means a second.
	Period time.Duration
}

// Run feeds Monitors every Period until ctx ends, reading the workers'
// counters only while some service has passive detection on.
func (p *PassiveFeed) Run(ctx context.Context) {
	period := p.Period
	if period <= 0 {
		period = time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.Monitors.PassiveOn() {
			p.Monitors.ObserveUnanswered(UnansweredCounts(p.Snapshots.Load(), p.Counters()))
		}
	}
}
