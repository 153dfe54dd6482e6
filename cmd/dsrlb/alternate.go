package main

import (
	"sync/atomic"
	"time"

	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// pausableRx is the rx side of one worker's queue that `dsrlb bench
// --alternate` can hold: while paused, RxBurst receives nothing, so that
// the worker idles (and, with an idle sleep, sleeps) and leaves its CPU to
// the rest of the machine, as if it were not there.
type pausableRx struct {
	// The pads keep each worker's wrapper, read per burst, off the cache
	// lines of the others (allocated side by side).
	_ [64]byte
	packet.Port
	paused atomic.Bool
	_      [64]byte
}

// RxBurst receives from the wrapped port unless the worker is paused.
func (p *pausableRx) RxBurst(q uint16, pkts []packet.Packet) int {
	if p.paused.Load() {
		return 0
	}
	return p.Port.RxBurst(q, pkts)
}

// alternatePhase is what runs during one phase of --alternate: every
// worker (alone < 0) or worker alone only.
type alternatePhase struct {
	alone int
	mpps  []float64 // per worker, over the phase less its settling time
}

// benchAlternate is the --alternate part of benchResult: the workers all
// together, then worker 0 alone, all together, worker 1 alone, and so on,
// a phase each, for the whole window. The CPUs of a virtual machine
// change speed with the host's load over seconds to minutes, so separate
// runs of one worker and of two compare different machines; phases a
// second apart in one process compare the same one.
type benchAlternate struct {
	PhaseSeconds float64 `json:"phase_seconds"`
	// SettleSeconds at the start of every phase are not counted (the
	// resumed worker's first bursts, the paused one going to sleep).
	SettleSeconds float64 `json:"settle_seconds"`
	// AllMpps are the rates of the phases with every worker running (all
	// workers added); AloneMpps[w] those of worker w running alone.
	AllMpps   []float64   `json:"all_mpps"`
	AloneMpps [][]float64 `json:"alone_mpps"`
	// Ratios are, per cycle (every worker alone once), the rate of all
	// the workers together (the mean of the cycle's all-phases) over the
	// mean rate of one worker alone: the speed-up of N workers over one,
	// N at best. Ratio is their median.
	Ratios []float64 `json:"ratios"`
	Ratio  float64   `json:"ratio"`
}

// runAlternate runs the phases of --alternate for window (at least one
// cycle) and returns what they measured.
func runAlternate(counters func() []pipeline.Counters, rx []*pausableRx, phase, window time.Duration) benchAlternate {
	nw := len(rx)
	settle := phase / 5
	res := benchAlternate{PhaseSeconds: phase.Seconds(), SettleSeconds: settle.Seconds(), AloneMpps: make([][]float64, nw)}
	cycles := max(1, int(window/(phase*time.Duration(2*nw))))
	for range cycles {
		var all []float64
		alone := make([]float64, nw)
		for w := range nw {
			for _, a := range []int{-1, w} {
				for i := range rx {
					rx[i].paused.Store(a >= 0 && i != a)
				}
				r := measurePhase(counters, settle, phase-settle)
				sum := 0.0
				for _, x := range r {
					sum += x
				}
				if a < 0 {
					all = append(all, sum)
					res.AllMpps = append(res.AllMpps, round3(sum))
				} else {
					alone[w] = r[w]
					res.AloneMpps[w] = append(res.AloneMpps[w], round3(r[w]))
				}
			}
		}
		mean := 0.0
		for _, x := range alone {
			mean += x / float64(nw)
		}
		if mean > 0 {
			allMean := 0.0
			for _, x := range all {
				allMean += x / float64(len(all))
			}
			res.Ratios = append(res.Ratios, round3(allMean/mean))
		}
	}
	for i := range rx {
		rx[i].paused.Store(false)
	}
	res.Ratio = round3(median(res.Ratios))
	return res
}

// measurePhase waits settle, then returns each worker's rate (Mpps) over
// the following d.
func measurePhase(counters func() []pipeline.Counters, settle, d time.Duration) []float64 {
	time.Sleep(settle)
	c0, t0 := counters(), time.Now()
	time.Sleep(d)
	c1, t1 := counters(), time.Now()
	secs := t1.Sub(t0).Seconds()
	r := make([]float64, len(c1))
	for i := range c1 {
		r[i] = float64(c1[i].RxPackets-c0[i].RxPackets) / secs / 1e6
	}
	return r
}
