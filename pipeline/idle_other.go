//go:build !linux

package pipeline

import "time"

// idleSleep sleeps d (see idle_linux.go).
func idleSleep(d time.Duration) { time.Sleep(d) }
