package nsrun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestDo runs functions in a fresh namespace and checks that they ran
// there, that their error comes back, and that no thread of the process is
// left in the namespace afterwards.
func TestDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	ns, creator := newNetNS(t)

	for i := range 20 { // more calls than the runtime keeps idle threads
		var in netns.NsHandle
		err := Do(ns, func() (err error) {
			in, err = netns.Get()
			return err
		})
		if err != nil {
			t.Fatalf("Do #%d: %v", i+1, err)
		}
		if !in.Equal(ns) {
			t.Errorf("Do #%d: fn ran in %v, want %v", i+1, in, ns)
		}
		in.Close()
	}
	want := errors.New("from fn")
	if err := Do(ns, func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Do returned %v, want fn's error %v", err, want)
	}

	// Do switched its threads back: no thread of the process but the one
	// that created ns (which the runtime discards) is left in it.
	checkNoThreadIn(t, ns, creator)

	// Last, as it discards a thread: one that might have been left in ns.
	if err := Do(netns.None(), func() error { t.Error("fn ran without a namespace"); return nil }); err == nil {
		t.Errorf("Do(netns.None()): no error")
	}
}

// newNetNS creates an unnamed network namespace, closed in t.Cleanup (the
// kernel frees it with its last reference), and returns it with the thread
// id of its creator. netns.New switches the calling thread into it, so it
// runs on a throwaway locked thread.
func newNetNS(t *testing.T) (netns.NsHandle, int) {
	t.Helper()
	type result struct {
		h   netns.NsHandle
		tid int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		h, err := netns.New()
		ch <- result{h, unix.Gettid(), err}
	}()
	r := <-ch
	if r.err != nil {
		t.Skipf("cannot create a network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.h.Close() })
	return r.h, r.tid
}

// TestNew creates a namespace: not the caller's, and no thread of the
// process is left in it.
func TestNew(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	ns, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if ns.Equal(cur) {
		t.Fatalf("New returned the caller's namespace")
	}
	checkNoThreadIn(t, ns, -1)
}

// checkNoThreadIn fails t if a thread of the process other than except
// (its task ID; the creator of a namespace, which the runtime discards)
// is in ns.
func checkNoThreadIn(t *testing.T, ns netns.NsHandle, except int) {
	t.Helper()
	ino, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", ns))
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		in, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil || task.Name() == strconv.Itoa(except) {
			continue // the thread has exited meanwhile, or is the exception
		}
		if in == ino {
			t.Errorf("thread %s is still in the namespace (%s)", task.Name(), ino)
		}
	}
}
