package health

import (
	"context"
	"errors"
	"net/netip"
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

// passiveBed is a monitored backend, web/127.0.0.1, with a probe whose
// result the test sets, and a second one of the same service,
// web/127.0.0.2, that always passes (passive detection holds at most half
// of a service's backends), on a fake clock ticking 1s per probe.
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

var peer = Target{Service: "web", Backend: netip.MustParseAddr("127.0.0.2")}

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
		Checker: func(k Target, _ Config) Checker {
			return CheckerFunc(func(context.Context) error {
				if k != b.target || b.ok.Load() {
					return nil
				}
				return errors.New("connection refused")
			})
		}})
	b.update(p)
	return b
}

// update configures both backends with passive detection p.
func (b *passiveBed) update(p Passive) {
	b.ms.Update(map[Target]Config{b.target: b.config(p), peer: b.config(p)})
}

func (b *passiveBed) config(p Passive) Config {
	return Config{Type: TypeTCP, Port: 80, Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 5, Passive: p}
}

// tick moves the clock one second (one probe) and then feeds the count,
// grown by more, to ObserveUnanswered.
func (b *passiveBed) tick(more uint64) {
	b.t.Helper()
	probeRound1s(b.t, b.clk, 2)
	b.count += more
	b.ms.ObserveUnanswered(map[Target]uint64{b.target: b.count})
}

// probeRound1s moves clk one second, which makes each of the n monitors
// (interval 1s) probe once, and waits until every result is recorded.
func probeRound1s(t *testing.T, clk *fakeClock, n int) {
	t.Helper()
	clk.waitTimers(t, n)
	clk.Advance(time.Second)
	clk.waitTimers(t, n)
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
	b.update(passiveOn)
	if !b.ms.PassiveOn() {
		t.Error("PassiveOn: got false with passive detection")
	}
	b.tick(0) // baseline
	b.tick(3)
	b.want(false, true, "held")
	for len(b.changed) > 0 {
		<-b.changed
	}
	b.update(Passive{})
	b.want(true, false, "passive turned off")
	select { // OnChange of Update runs on a goroutine of its own
	case <-b.changed:
	case <-time.After(10 * time.Second):
		t.Error("turning passive detection off during a hold: no OnChange")
	}
}

// TestPassiveHoldLimit: passive detection holds at most half of a
// service's backends, none of a service with one; the backends it leaves
// alone are logged and published once while their evidence lasts.
func TestPassiveHoldLimit(t *testing.T) {
	var log syncBuffer
	var ev events
	ms, clk := newMonitors(t, Options{Log: zerolog.New(&log), Events: &ev,
		Checker: func(Target, Config) Checker { return CheckerFunc(func(context.Context) error { return nil }) }})
	cfg := Config{Type: TypeTCP, Port: 80, Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 5, Passive: passiveOn}
	var web []Target
	want := map[Target]Config{}
	for i := 1; i <= 3; i++ {
		k := Target{Service: "web", Backend: netip.AddrFrom4([4]byte{127, 0, 0, byte(i)})}
		web = append(web, k)
		want[k] = cfg
	}
	solo := Target{Service: "solo", Backend: netip.MustParseAddr("127.0.0.4")}
	want[solo] = cfg
	ms.Update(want)
	counts := map[Target]uint64{}
	for round := 0; round < 4; round++ {
		probeRound1s(t, clk, len(want))
		for k := range want {
			counts[k] += uint64(round * 5) // round 0: the baseline
		}
		ms.ObserveUnanswered(counts)
	}
	held := 0
	for _, k := range web {
		if ms.Held(k.Service, k.Backend) {
			held++
		}
	}
	if held != 1 || ms.Held(solo.Service, solo.Backend) {
		t.Errorf("held: %d of web's 3 backends, solo's %v; want 1 and false", held, ms.Held(solo.Service, solo.Backend))
	}
	if got := strings.Count(log.String(), `"event":"passive_hold_limited"`); got != 3 {
		t.Errorf("passive_hold_limited log lines: got %d, want 3 (once per backend left alone)\n%s", got, log.String())
	}
	evs, _ := ev.list()
	limited := 0
	for _, e := range evs {
		if strings.Contains(e, "|not held down: ") {
			limited++
		}
	}
	if len(evs) != 4 || limited != 3 {
		t.Errorf("events: got %q, want one hold and three left alone", evs)
	}
	if !strings.Contains(log.String(), "already holds 1 of the service's 3 backends, at most half") ||
		!strings.Contains(log.String(), "already holds 0 of the service's 1 backends, at most half") {
		t.Errorf("log: want the limit's reasons\n%s", log.String())
	}
}
