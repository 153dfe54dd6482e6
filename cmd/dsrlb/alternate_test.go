package main

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// countPort receives one packet per burst and counts the bursts.
type countPort struct {
	packet.Port
	bursts int
}

func (c *countPort) RxBurst(_ uint16, pkts []packet.Packet) int { c.bursts++; return min(1, len(pkts)) }

func TestPausableRx(t *testing.T) {
	inner := &countPort{}
	p := &pausableRx{Port: inner}
	pkts := make([]packet.Packet, 4)
	if n := p.RxBurst(0, pkts); n != 1 || inner.bursts != 1 {
		t.Fatalf("running: got %d packets, %d bursts of the port; want 1, 1", n, inner.bursts)
	}
	p.paused.Store(true)
	if n := p.RxBurst(0, pkts); n != 0 || inner.bursts != 1 {
		t.Fatalf("paused: got %d packets, %d bursts of the port; want 0 and no burst", n, inner.bursts)
	}
}

// fakeWorkers counts packets as workers would that forward alone[w] Mpps
// when the others are held and together[w] Mpps when none is.
type fakeWorkers struct {
	rx              []*pausableRx
	alone, together []float64
	packets         []float64
	last            time.Time
}

func (f *fakeWorkers) counters() []pipeline.Counters {
	now := time.Now()
	d := now.Sub(f.last).Seconds()
	f.last = now
	running := 0
	for _, r := range f.rx {
		if !r.paused.Load() {
			running++
		}
	}
	cs := make([]pipeline.Counters, len(f.rx))
	for w, r := range f.rx {
		switch {
		case r.paused.Load():
		case running == 1:
			f.packets[w] += f.alone[w] * 1e6 * d
		default:
			f.packets[w] += f.together[w] * 1e6 * d
		}
		cs[w].RxPackets = uint64(f.packets[w])
	}
	return cs
}

func TestRunAlternate(t *testing.T) {
	// Two CPUs of different speeds: worker 0 forwards 10 Mpps alone and
	// 9 with worker 1, worker 1 6 and 5.4: together 14.4 Mpps, 1.8 times
	// one worker on a CPU of average speed (8).
	f := &fakeWorkers{
		rx:       []*pausableRx{{}, {}},
		alone:    []float64{10, 6},
		together: []float64{9, 5.4},
		packets:  make([]float64, 2),
		last:     time.Now(),
	}
	phase := 50 * time.Millisecond
	res := runAlternate(f.counters, f.rx, phase, 8*phase)
	if len(res.AllMpps) != 4 || len(res.AloneMpps) != 2 || len(res.AloneMpps[0]) != 2 || len(res.AloneMpps[1]) != 2 || len(res.Ratios) != 2 {
		t.Fatalf("phases: %+v; want 2 cycles of all, worker 0, all, worker 1", res)
	}
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > want*0.03 {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	for i, x := range res.AllMpps {
		near(fmt.Sprintf("both, phase %d", i), x, 14.4)
	}
	for w, want := range f.alone {
		for _, x := range res.AloneMpps[w] {
			near(fmt.Sprintf("worker %d alone", w), x, want)
		}
	}
	near("ratio", res.Ratio, 1.8)
	if res.PhaseSeconds != phase.Seconds() || res.SettleSeconds != (phase/5).Seconds() {
		t.Errorf("phase %v settle %v, want %v %v", res.PhaseSeconds, res.SettleSeconds, phase.Seconds(), (phase / 5).Seconds())
	}
	for w, r := range f.rx {
		if r.paused.Load() {
			t.Errorf("worker %d still held after the window", w)
		}
	}
}
