package dpdk

/*
#cgo pkg-config: libdpdk
#include "dsrlb_dpdk.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// Errno is a DPDK error number: a positive errno value or one of DPDK's own
// rte_errno values (1000 and up).
type Errno int

// Error returns DPDK's description of e (rte_strerror).
func (e Errno) Error() string {
	return C.GoString(C.rte_strerror(C.int(e)))
}

// Is reports whether target is the syscall.Errno with the same number, so
// that errors.Is(err, syscall.ENOTSUP) works on DPDK errors.
func (e Errno) Is(target error) bool {
	var se syscall.Errno
	return errors.As(target, &se) && int(se) == int(e)
}

// errorf wraps a DPDK return code (negative errno) or rte_errno value (either
// sign) with the name of the failing operation.
func errorf(rc C.int, format string, args ...any) error {
	n := int(rc)
	if n < 0 {
		n = -n
	}
	return fmt.Errorf("dpdk: %s: %w", fmt.Sprintf(format, args...), Errno(n))
}

// ErrNotInitialized is returned by calls that need the EAL before Init
// succeeded or after Cleanup.
var ErrNotInitialized = errors.New("dpdk: EAL not initialised")

// eal is the process-wide EAL state. The EAL can be initialised once per
// process; after Cleanup it cannot be initialised again.
var eal struct {
	mu      sync.RWMutex // read-held while a call runs on the main lcore
	started bool         // Init was called (successfully or not)
	running bool         // EAL is up and mainq is served
	mainq   chan func()
	main    uint // main lcore id

	// freeLinkOff is the byte offset in struct rte_mbuf of the dynamic
	// field through which Free chains mbufs for one bulk free.
	freeLinkOff uintptr
}

// Init initialises the DPDK EAL with the command-line arguments args, for
// example
//
//	dpdk.Init([]string{"-l", "0,1", "--no-huge", "--no-pci", "-m", "512",
//		"--file-prefix", "dsrlb", "--vdev=net_ring0"})
//
// args are EAL options only: the program name (argv[0]) is supplied by
// Init, and non-EAL arguments are an error.
//
// The EAL binds the thread that calls rte_eal_init to the main lcore (its CPU
// affinity and thread-local lcore id). Init therefore starts a dedicated
// goroutine, locks it to its OS thread for the rest of the process, calls
// rte_eal_init there and keeps serving control calls of this package on that
// thread; callers need not lock any thread themselves. The locking happens
// before rte_eal_init pins the thread, so threads the Go runtime creates
// later do not inherit the main lcore's affinity.
//
// The EAL can be initialised once per process: a second Init fails, even
// after a failed first one or after Cleanup. Init registers one mbuf dynamic
// field (used by Port.Free).
func Init(args []string) error {
	eal.mu.Lock()
	defer eal.mu.Unlock()
	if eal.started {
		return errors.New("dpdk: Init: EAL can be initialised once per process")
	}
	eal.started = true

	// argv lives in C memory and is never freed: rte_eal_init may keep
	// pointers into it (and permutes it while parsing).
	argv := append([]string{"dsrlb"}, args...)
	cargv := unsafe.Slice((**C.char)(C.calloc(C.size_t(len(argv)+1), C.size_t(unsafe.Sizeof((*C.char)(nil))))), len(argv)+1)
	for i, a := range argv {
		cargv[i] = C.CString(a)
	}

	type result struct {
		rc, errno, freeOff, freeErr C.int
		main                        uint
	}
	resc := make(chan result)
	mainq := make(chan func())
	go func() {
		// Locked for good: this thread becomes the main lcore. If Init
		// fails the goroutine exits while locked and the runtime
		// discards the thread with whatever EAL did to it.
		runtime.LockOSThread()
		var r result
		r.rc = C.dsrlb_eal_init(C.int(len(argv)), C.uintptr_t(uintptr(unsafe.Pointer(&cargv[0]))), &r.errno)
		if r.rc >= 0 {
			r.freeOff = C.dsrlb_register_free_link(&r.freeErr)
			r.main = uint(C.rte_get_main_lcore())
		}
		resc <- r
		if r.rc < 0 || r.freeOff < 0 {
			return
		}
		for fn := range mainq {
			fn()
		}
	}()
	r := <-resc
	if r.rc < 0 {
		return errorf(r.errno, "rte_eal_init(%s)", strings.Join(args, " "))
	}
	if int(r.rc) < len(argv)-1 {
		return fmt.Errorf("dpdk: Init: arguments not understood by the EAL: %q", argv[r.rc+1:])
	}
	if r.freeOff < 0 {
		return errorf(r.freeErr, "rte_mbuf_dynfield_register")
	}
	eal.running = true
	eal.mainq = mainq
	eal.main = r.main
	eal.freeLinkOff = uintptr(r.freeOff)
	return nil
}

// onMain runs fn on the main lcore thread and waits for it. It returns
// ErrNotInitialized, without running fn, when the EAL is not running. Called
// on the main lcore thread itself it runs fn directly.
func onMain(fn func()) error {
	eal.mu.RLock()
	defer eal.mu.RUnlock()
	if !eal.running {
		return ErrNotInitialized
	}
	if uint(C.rte_lcore_id()) == eal.main {
		// Only our locked goroutine runs on the main lcore thread.
		fn()
		return nil
	}
	done := make(chan struct{})
	eal.mainq <- func() {
		defer close(done)
		fn()
	}
	<-done
	return nil
}

// OnMainIn runs fn on the main lcore thread while that thread is in
// another network namespace: enter switches it there and returns the
// function that switches it back. A net_tap device creates its kernel
// interface, its queues and its control socket in the namespace of the
// thread that probes and configures it, and every DPDK call runs on the
// main lcore thread: AttachPort, Configure and Start in fn create the
// device in that namespace. fn runs with the EAL's lock held for reading:
// it must not call Cleanup. If switching back fails, the error says so and
// the main lcore thread is left in the other namespace: the caller must
// stop.
func OnMainIn(enter func() (leave func() error, err error), fn func() error) error {
	var err error
	if e := onMain(func() {
		leave, eerr := enter()
		if eerr != nil {
			err = eerr
			return
		}
		err = fn()
		if lerr := leave(); lerr != nil {
			err = errors.Join(err, lerr)
		}
	}); e != nil {
		return e
	}
	return err
}

// Cleanup releases the EAL's resources (rte_eal_cleanup) on the main lcore
// thread. Worker lcores MUST have returned (WaitAll) and ports should be
// closed first. No function of this package may be called afterwards.
func Cleanup() error {
	var rc C.int
	if err := onMain(func() { rc = C.rte_eal_cleanup() }); err != nil {
		return err
	}
	eal.mu.Lock()
	defer eal.mu.Unlock()
	if !eal.running {
		return nil
	}
	eal.running = false
	close(eal.mainq)
	if rc != 0 {
		return errorf(rc, "rte_eal_cleanup")
	}
	return nil
}

// MainLcore returns the id of the main lcore, the thread that runs the
// control calls of this package. It costs one lock and no cgo call.
func MainLcore() uint {
	eal.mu.RLock()
	defer eal.mu.RUnlock()
	return eal.main
}

// WorkerLcores returns the ids of the enabled worker lcores (all lcores but
// the main one) in increasing order. It makes one cgo call per lcore.
func WorkerLcores() []uint {
	var ids []uint
	const maxLcore = C.DSRLB_MAX_LCORE
	for i := C.rte_get_next_lcore(^C.uint(0), 1, 0); i < maxLcore; i = C.rte_get_next_lcore(i, 1, 0) {
		ids = append(ids, uint(i))
	}
	return ids
}

// LcoreCount returns the number of enabled lcores, main included (one cgo
// call).
func LcoreCount() uint { return uint(C.rte_lcore_count()) }

// LcoreSocket returns the NUMA socket of lcore (one cgo call).
func LcoreSocket(lcore uint) int { return int(C.rte_lcore_to_socket_id(C.uint(lcore))) }

// CurrentLcore returns the lcore id of the calling thread (one cgo call). It
// is meaningful in a function started by Launch, which runs locked to its
// worker lcore's thread; elsewhere it returns an arbitrary thread's id,
// usually LcoreAny.
func CurrentLcore() uint { return uint(C.rte_lcore_id()) }

// LcoreAny is the lcore id of threads that are not EAL lcores
// (LCORE_ID_ANY).
const LcoreAny = uint(^uint32(0))

// SocketAny asks for memory on any NUMA socket (SOCKET_ID_ANY).
const SocketAny = -1
