package dpdk

// This file has the //export, so its preamble is copied into _cgo_export.h
// and may hold declarations only.

/*
#include <stdint.h>
#include <rte_launch.h>

int dsrlb_launch_lcore(unsigned int lcore);
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
)

// lcores is the registry of functions started by Launch, indexed by lcore
// id. C only ever sees the lcore id.
var lcores struct {
	mu   sync.Mutex
	fn   [maxLcore]func()
	done [maxLcore]chan struct{} // closed when fn returned; nil when idle
	err  [maxLcore]error         // panic of the last fn, if any
}

// Launch runs fn on worker lcore lcore (rte_eal_remote_launch) and returns
// at once; Wait or WaitAll collects it. The lcore MUST be an enabled worker
// lcore that is idle (not running a previous Launch).
//
// fn runs as a cgo callback on the EAL thread of that lcore, which is pinned
// to its CPU: the goroutine stays locked to that thread (CurrentLcore reports
// lcore) and keeps one Go P busy while it runs, so GOMAXPROCS must exceed the
// number of busy-polling lcores to leave room for the control plane. fn is
// expected to loop over bursts until told to stop (an atomic flag or a
// context); it should not block for long, since the lcore's CPU is reserved
// for it. A panic in fn is recovered and returned by Wait with its stack.
//
// Launch makes one channel round trip to the main lcore and one cgo call.
func Launch(lcore uint, fn func()) error {
	if lcore >= maxLcore {
		return fmt.Errorf("dpdk: Launch: lcore %d out of range", lcore)
	}
	if fn == nil {
		return errors.New("dpdk: Launch: nil function")
	}
	if !slices.Contains(WorkerLcores(), lcore) {
		return fmt.Errorf("dpdk: Launch: lcore %d is not an enabled worker lcore", lcore)
	}
	lcores.mu.Lock()
	if lcores.done[lcore] != nil {
		lcores.mu.Unlock()
		return fmt.Errorf("dpdk: Launch: lcore %d is busy", lcore)
	}
	lcores.fn[lcore] = fn
	lcores.done[lcore] = make(chan struct{})
	lcores.err[lcore] = nil
	lcores.mu.Unlock()

	var rc C.int
	err := onMain(func() { rc = C.dsrlb_launch_lcore(C.uint(lcore)) })
	if err == nil && rc != 0 {
		err = errorf(rc, "rte_eal_remote_launch(lcore %d)", lcore)
	}
	if err != nil {
		lcores.mu.Lock()
		lcores.fn[lcore] = nil
		lcores.done[lcore] = nil
		lcores.mu.Unlock()
		return err
	}
	return nil
}

// dsrlbLcoreMain is the Go side of a worker lcore: it runs the function
// registered for lcore by Launch.
//
//export dsrlbLcoreMain
func dsrlbLcoreMain(lcore C.uint) C.int {
	// A cgo callback is only internally locked to its thread; an external
	// lock makes the runtime create any new thread from its template
	// thread instead of cloning this one, which EAL pinned to one CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	id := uint(lcore)
	lcores.mu.Lock()
	fn, done := lcores.fn[id], lcores.done[id]
	lcores.mu.Unlock()
	if fn == nil || done == nil {
		return -1
	}
	err := runRecover(id, fn)
	lcores.mu.Lock()
	lcores.fn[id] = nil
	lcores.err[id] = err
	lcores.mu.Unlock()
	close(done)
	if err != nil {
		return -1
	}
	return 0
}

func runRecover(lcore uint, fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("dpdk: lcore %d: panic: %v\n%s", lcore, r, debug.Stack())
		}
	}()
	fn()
	return nil
}

// Wait blocks until the function started on lcore by Launch has returned
// and returns its panic as an error, if it panicked. It returns nil at once
// for an lcore with nothing launched. Waiting is a channel receive, not
// rte_eal_wait_lcore's busy loop; the EAL's own wait is called only once the
// function has returned. Wait for a given lcore MUST NOT be called from two
// goroutines at once.
func Wait(lcore uint) error {
	if lcore >= maxLcore {
		return fmt.Errorf("dpdk: Wait: lcore %d out of range", lcore)
	}
	lcores.mu.Lock()
	done := lcores.done[lcore]
	lcores.mu.Unlock()
	if done == nil {
		return nil
	}
	<-done
	// The EAL marks the lcore idle a few instructions after our function
	// returned; this spins at most that long.
	C.rte_eal_wait_lcore(C.uint(lcore))
	lcores.mu.Lock()
	err := lcores.err[lcore]
	lcores.err[lcore] = nil
	lcores.done[lcore] = nil
	lcores.mu.Unlock()
	return err
}

// WaitAll waits for every worker lcore (see Wait) and joins their errors.
func WaitAll() error {
	var errs []error
	for _, id := range WorkerLcores() {
		if err := Wait(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
