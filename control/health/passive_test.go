package health

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// events records what Monitors publishes.
type events struct {
	mu  sync.Mutex
	got []string // "kind|object|reason"
	dat []map[string]string
}

func (e *events) Publish(kind, object, reason string, data map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, kind+"|"+object+"|"+reason)
	e.dat = append(e.dat, data)
}

func (e *events) list() ([]string, []map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...), append([]map[string]string(nil), e.dat...)
}

// passiveBed is one monitored backend, web/127.0.0.1, with a probe whose
// result the test sets, on a fake clock ticking 1s per probe.
type passiveBed struct {
	t        *testing.T
	ms       *Monitors
	clk      *fakeClock
	ok       atomic.Bool
	log      syncBuffer
	ev       events
	notified atomic.Int64
	changed  chan struct{} // one send per OnChange (while it has room)
	target   Target
	count    uint64
}

func newPassiveBed(t *testing.T, p Passive) *passiveBed {
	b := &passiveBed{t: t, target: Target{Service: "web", Backend: loopback}, changed: make(chan struct{}, 1000)}
	b.ok.Store(true)
	onChange := func() {
		b.notified.Add(1)
		select {
		case b.changed <- struct{}{}:
		default:
		}
	}
	b.ms, b.clk = newMonitors(t, Options{Log: zerolog.New(&b.log), OnChange: onChange, Events: &b.ev,
		Checker: func(Target, Config) Checker {
			return CheckerFunc(func(context.Context) error {
				if b.ok.Load() {
					return nil
				}
				return errors.New("connection refused")
			})
		}})
	b.ms.Update(map[Target]Config{b.target: b.config(p)})
	return b
}

func (b *passiveBed) config(p Passive) Config {
	return Config{Type: TypeTCP, Port: 80, Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 5, Passive: p}
}

// tick moves the clock one second (one probe) and then feeds the count,
// grown by more, to ObserveUnanswered.
func (b *passiveBed) tick(more uint64) {
	b.t.Helper()
	probeRound1s(b.t, b.clk)
	b.count += more
	b.ms.ObserveUnanswered(map[Target]uint64{b.target: b.count})
}

func probeRound1s(t *testing.T, clk *fakeClock) {
	t.Helper()
	clk.waitTimers(t, 1)
	clk.Advance(time.Second)
	clk.waitTimers(t, 1)
}

func (b *passiveBed) want(healthy, held bool, when string) {
	b.t.Helper()
	if got := b.ms.Healthy("web", loopback); got != healthy {
		b.t.Fatalf("%s: Healthy %v, want %v", when, got, healthy)
	}
	if got := b.ms.Held("web", loopback); got != held {
		b.t.Fatalf("%s: Held %v, want %v", when, got, held)
	}
}

var passiveOn = Passive{SynRetries: 2, Unanswered: 3, Window: 10 * time.Second, Hold: 30 * time.Second}

// TestPassiveWindowHoldRelease: unanswered flows count within the window
// only; at the threshold the backend is held down for the hold time, logged
// and published with the evidence, then released once the hold is over
// (its monitor passed its rise checks meanwhile).
func TestPassiveWindowHoldRelease(t *testing.T) {
	b := newPassiveBed(t, passiveOn)
	b.count = 100
	b.tick(0) // the first count is a baseline: flows before detection are no evidence
	b.tick(0)
	b.want(true, false, "up after rise, after the baseline")
	b.tick(1)
	b.tick(1)
	b.want(true, false, "2 unanswered in the window")
	for range 10 {
		b.tick(0)
	}
	b.tick(1)
	b.tick(1)
	b.want(true, false, "2 unanswered in the window, 2 older")
	notified := b.notified.Load()
	b.tick(1)
	heldAt := b.clk.Now()
	b.want(false, true, "3 unanswered in the window")
	if got := b.notified.Load(); got != notified+1 {
		t.Errorf("hold: %d OnChange calls, want 1", got-notified)
	}
	until := heldAt.Add(30 * time.Second)
	reason, gotUntil, held := b.ms.PassiveHold("web", loopback)
	wantReason := "held down by passive detection until 2026-12-01T12:00:" + until.Format("05") + "Z: 3 unanswered SYNs in 10s"
	if !held || !gotUntil.Equal(until) || reason != wantReason {
		t.Errorf("PassiveHold: got %q, %v, %v; want %q, %v, true", reason, gotUntil, held, wantReason, until)
	}
	if !strings.Contains(b.log.String(), `"event":"passive_hold","service":"web","backend":"127.0.0.1","unanswered":3,"window":10000,"threshold":3,"hold":30000`) {
		t.Errorf("log: want a passive_hold line with the evidence, got\n%s", b.log.String())
	}
	for b.clk.Now().Before(until.Add(-time.Second)) {
		b.tick(1) // more evidence during the hold changes nothing
		b.want(false, true, "during the hold")
	}
	b.tick(0)
	b.want(true, false, "after the hold")
	if got := b.notified.Load(); got != notified+2 {
		t.Errorf("hold and release: %d OnChange calls, want 2", got-notified)
	}
	evs, data := b.ev.list()
	if len(evs) != 2 || evs[0] != "passive|service web/backend 127.0.0.1|"+wantReason ||
		!strings.HasPrefix(evs[1], "passive|service web/backend 127.0.0.1|released by passive detection") {
		t.Fatalf("events: got %q", evs)
	}
	if d := data[0]; d["unanswered"] != "3" || d["window"] != "10s" || d["hold"] != "30s" || d["threshold"] != "3" {
		t.Errorf("hold event data: got %v", d)
	}
	// Unanswered flows counted during the hold are no evidence after it.
	b.tick(0)
	b.want(true, false, "after the release")
}

// TestPassiveReadmitThroughMonitor: after the hold a backend comes back
// only once its active monitor has passed rise consecutive probes since
// the hold began; if the monitor takes it down meanwhile, it is down (not
// held: its established flows move).
func TestPassiveReadmitThroughMonitor(t *testing.T) {
	b := newPassiveBed(t, Passive{Unanswered: 1, Window: 5 * time.Second, Hold: 4 * time.Second})
	b.tick(0)
	b.tick(0)
	b.tick(1)
	b.want(false, true, "held")
	b.ok.Store(false)
	for range 4 {
		b.tick(0) // the hold's time passes; probes fail, fewer than fall
	}
	b.want(false, true, "hold over, probes failing")
	reason, _, _ := b.ms.PassiveHold("web", loopback)
	if !strings.HasSuffix(reason, "the hold is over, waiting for 2 consecutive successful health checks (0 so far)") {
		t.Errorf("PassiveHold after its time: got %q", reason)
	}
	b.ok.Store(true)
	b.tick(0)
	b.want(false, true, "one success after the hold")
	b.tick(0)
	b.want(true, false, "rise successes after the hold")

	// Held, then the monitor fails fall times: down, not held.
	b.tick(1)
	b.want(false, true, "held again")
	b.ok.Store(false)
	for range 5 {
		b.tick(0)
	}
	b.want(false, false, "monitor down during the hold")
	if st, _ := statusOf(b.ms, "web"); st.State != Down {
		t.Errorf("monitor state %v, want down", st.State)
	}
	b.ok.Store(true)
	b.tick(0)
	b.tick(0)
	b.want(true, false, "monitor up again after the hold")
}

// TestPassiveOff: without passive detection counts change nothing;
// turning it off ends a hold.
func TestPassiveOff(t *testing.T) {
	b := newPassiveBed(t, Passive{})
	b.tick(0)
	b.tick(0)
	b.tick(50)
	b.tick(50)
	b.want(true, false, "passive off")
	if b.ms.PassiveOn() {
		t.Error("PassiveOn: got true with no passive detection")
	}
	b.ms.Update(map[Target]Config{b.target: b.config(passiveOn)})
	if !b.ms.PassiveOn() {
		t.Error("PassiveOn: got false with passive detection")
	}
	b.tick(0) // baseline
	b.tick(3)
	b.want(false, true, "held")
	for len(b.changed) > 0 {
		<-b.changed
	}
	b.ms.Update(map[Target]Config{b.target: b.config(Passive{})})
	b.want(true, false, "passive turned off")
	select { // OnChange of Update runs on a goroutine of its own
	case <-b.changed:
	case <-time.After(10 * time.Second):
		t.Error("turning passive detection off during a hold: no OnChange")
	}
}
