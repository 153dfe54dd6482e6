// Package nsrun runs Go code inside a Linux network namespace: the one
// "run in a netns" helper of dsrlb, shared by control/kernel (sysctls of the
// taps), the appliance's tests and the namespace testbed.
//
// It is a leaf of control/kernel that imports nothing of ours, so test
// code outside control (cmd/dsrctl, testbed) can use it without linking the
// kernel components or control.
package nsrun

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread switched into the network namespace ns and
// returns its error. A network namespace belongs to a thread, not to a
// process, so fn runs on a fresh goroutine locked to its thread; what fn
// opens (sockets, netlink handles, files under /proc/sys/net) stays in ns for
// its whole life, whichever thread uses it later. Goroutines fn starts run
// in the caller's namespace, not in ns.
//
// Afterwards the thread is switched back and unlocked. If entering or
// leaving ns fails, the thread's namespace is unknown: it stays locked and
// the runtime discards it when the goroutine ends, so no other goroutine can
// ever run in the wrong namespace. A failure to leave is not reported: fn
// has done its work, and the discarded thread harms nothing. (The
// process's main thread is not discarded but wedged; it then still counts
// as a process in ns, for `ip netns pids`.)
func Do(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err) // thread state unknown: stay locked
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// New creates a network namespace and returns its handle, which the caller
// closes. netns.New switches the calling thread into the new namespace, so
// it runs on a thread of its own that is switched back afterwards (or, if
// that fails, discarded, as in Do).
func New() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{netns.None(), fmt.Errorf("current netns: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			res <- result{netns.None(), fmt.Errorf("new netns: %w", err)} // thread state unknown: stay locked
			return
		}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		res <- result{ns, nil}
	}()
	r := <-res
	return r.ns, r.err
}
