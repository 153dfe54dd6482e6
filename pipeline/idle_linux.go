package pipeline

import (
	"syscall"
	"time"
)

// idleSleep sleeps d with nanosleep(2) on the calling thread: a worker runs
// locked to its lcore's thread, and the runtime's timers would round a
// sleep of tens of microseconds up to about a millisecond.
func idleSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil) // EINTR: just poll earlier
}
