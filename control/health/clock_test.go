package health

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when a test calls Advance. Its
// pending timers tell a test where the monitors are: a run's timer is
// pending while the run is idle and not while it probes, so once every run
// has re-armed its timer every probe of the round has been recorded.
type fakeClock struct {
	mu      sync.Mutex
	changed sync.Cond // signalled whenever pending changes
	now     time.Time
	pending map[*fakeTimer]bool
}

type fakeTimer struct {
	clock *fakeClock
	c     chan time.Time
	at    time.Time
}

func newFakeClock() *fakeClock {
	c := &fakeClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), pending: map[*fakeTimer]bool{}}
	c.changed.L = &c.mu
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clock: c, c: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Reset(d time.Duration) {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	t.drain()
	t.at = c.now.Add(d)
	c.pending[t] = true
	c.changed.Broadcast()
}

func (t *fakeTimer) Stop() {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	t.drain()
	delete(c.pending, t)
	c.changed.Broadcast()
}

func (t *fakeTimer) drain() {
	select {
	case <-t.c:
	default:
	}
}

// Advance moves the clock d forward and fires every timer due by then.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.pending {
		if !t.at.After(c.now) {
			delete(c.pending, t)
			t.c <- t.at // never blocks: the channel was drained when armed
		}
	}
	c.changed.Broadcast()
}

// waitTimers waits until exactly n timers are pending; it fails the test
// after 15 seconds of wall time (a probe against loopback takes
// milliseconds, a probe's timeout in these tests at most 5 seconds).
func (c *fakeClock) waitTimers(t *testing.T, n int) {
	t.Helper()
	expired := false
	guard := time.AfterFunc(15*time.Second, func() {
		c.mu.Lock()
		expired = true
		c.changed.Broadcast()
		c.mu.Unlock()
	})
	defer guard.Stop()
	c.mu.Lock()
	for len(c.pending) != n && !expired {
		c.changed.Wait()
	}
	got := len(c.pending)
	c.mu.Unlock()
	if got != n {
		t.Fatalf("got %d pending timers, want %d (monitors not idle)", got, n)
	}
}

// pendingTimers returns the number of pending timers now.
func (c *fakeClock) pendingTimers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
