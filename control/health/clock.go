package health

import "time"

// Clock is the time of Monitors: when probes run (the scheduler's timers)
// and the timestamps of results and transitions. Tests pass a fake and
// advance it explicitly; nil in Options is the wall clock.
//
// A probe's timeout is not on the Clock: it is the deadline of real sockets
// and runs on the wall clock.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a Clock's one-shot timer, as a time.Timer of Go 1.23 or later.
type Timer interface {
	// C delivers the Clock's time when the timer fires.
	C() <-chan time.Time
	// Reset makes the timer fire d from now, discarding a time that fired
	// and was not received.
	Reset(d time.Duration)
	// Stop stops the timer, discarding a time that fired and was not
	// received.
	Stop()
}

// wallClock is the Clock of time.Now and time.NewTimer.
type wallClock struct{}

func (wallClock) Now() time.Time                 { return time.Now() }
func (wallClock) NewTimer(d time.Duration) Timer { return wallTimer{time.NewTimer(d)} }

type wallTimer struct{ t *time.Timer }

func (w wallTimer) C() <-chan time.Time   { return w.t.C }
func (w wallTimer) Reset(d time.Duration) { w.t.Reset(d) }
func (w wallTimer) Stop()                 { w.t.Stop() }
