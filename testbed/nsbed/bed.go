package nsbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// BasePrefix starts the name of every namespace a Bed creates; the sweeper
// only ever touches namespaces with this prefix.
const BasePrefix = "dsrtb"

// cmdTimeout bounds every setup command.
const cmdTimeout = 30 * time.Second

// Options configure New.
type Options struct {
	// Prefix starts every namespace name; default dsrtb<pid>-<n>-. It must
	// start with BasePrefix followed by this process's pid and a dash, so
	// the sweeper can tell a live bed from a stale one.
	Prefix string
	// Dir holds configs, logs and captures. Default: a new directory under
	// os.TempDir, removed by Close unless Keep is set.
	Dir string
	// Keep leaves Dir in place after Close (for post-mortems).
	Keep bool
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Bed is a set of namespaces and processes that Close removes again. All
// methods are safe for concurrent use.
type Bed struct {
	prefix string
	dir    string
	ownDir bool
	keep   bool
	logf   func(format string, args ...any)

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	closed  bool
	nss     []*NS
	procs   []*Proc
	cleanup []func() // run by Close before processes stop, last first

}

var (
	bedsMu  sync.Mutex
	beds    = map[*Bed]bool{}
	bedSeq  int
	prefixR = regexp.MustCompile(`^` + BasePrefix + `(\d+)-`)
)

// New sweeps beds that dead processes left behind and returns an empty Bed.
func New(opts Options) (*Bed, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("nsbed: needs root (network namespaces)")
	}
	Sweep(opts.Logf)
	bedsMu.Lock()
	bedSeq++
	seq := bedSeq
	bedsMu.Unlock()
	b := &Bed{prefix: opts.Prefix, dir: opts.Dir, keep: opts.Keep, logf: opts.Logf}
	if b.prefix == "" {
		b.prefix = fmt.Sprintf("%s%d-%d-", BasePrefix, os.Getpid(), seq)
	}
	if m := prefixR.FindStringSubmatch(b.prefix); m == nil || m[1] != strconv.Itoa(os.Getpid()) {
		return nil, fmt.Errorf("nsbed: prefix %q must start with %s%d-", b.prefix, BasePrefix, os.Getpid())
	}
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	if b.dir == "" {
		d, err := os.MkdirTemp("", strings.TrimSuffix(b.prefix, "-")+"-")
		if err != nil {
			return nil, err
		}
		b.dir, b.ownDir = d, true
		if b.keep {
			_ = os.WriteFile(filepath.Join(d, keepMarker), nil, 0o644)
		}
	} else if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	bedsMu.Lock()
	beds[b] = true
	bedsMu.Unlock()
	return b, nil
}

// Prefix is the start of every namespace name of the bed.
func (b *Bed) Prefix() string { return b.prefix }

// Dir is the bed's work directory.
func (b *Bed) Dir() string { return b.dir }

// Path returns name inside the work directory.
func (b *Bed) Path(name string) string { return filepath.Join(b.dir, name) }

// Logf logs a progress line.
func (b *Bed) Logf(format string, args ...any) { b.logf(format, args...) }

// OnClose registers fn to run at Close before the processes are stopped;
// functions run last registered first.
func (b *Bed) OnClose(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanup = append(b.cleanup, fn)
}

// Close stops every process (last started first), deletes every namespace
// and, unless Keep, the work directory. It keeps going past errors,
// returning them joined. It is idempotent, and a call made while another
// is under way (a signal's) waits for it to finish.
func (b *Bed) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Bed) close() error {
	b.mu.Lock()
	b.closed = true
	cleanup, procs, nss := b.cleanup, b.procs, b.nss
	b.mu.Unlock()

	for _, fn := range slices.Backward(cleanup) {
		fn()
	}
	var errs []error
	for _, p := range slices.Backward(procs) {
		if err := p.Stop(3 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range slices.Backward(nss) {
		if err := deleteNS(ns.Name); err != nil {
			errs = append(errs, err)
		}
	}
	removeDPDKRuntime(b.prefix)
	if b.ownDir && !b.keep {
		if err := os.RemoveAll(b.dir); err != nil {
			errs = append(errs, err)
		}
	}
	bedsMu.Lock()
	delete(beds, b)
	bedsMu.Unlock()
	return errors.Join(errs...)
}

// CloseOnSignal makes SIGINT and SIGTERM close every open Bed of the
// process and exit with status 130, so an interrupted test or demo leaves
// nothing behind. Call it once, early.
func CloseOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-ch
		interrupted.Store(true)
		fmt.Fprintf(os.Stderr, "nsbed: %v: tearing the testbed down\n", s)
		CloseAll()
		os.Exit(130)
	}()
}

var interrupted atomic.Bool

// Interrupted reports whether CloseOnSignal's handler has started tearing
// down: errors seen from then on are its doing, not the test's.
func Interrupted() bool { return interrupted.Load() }

// CloseAll closes every open Bed of the process.
func CloseAll() {
	bedsMu.Lock()
	open := make([]*Bed, 0, len(beds))
	for b := range beds {
		open = append(open, b)
	}
	bedsMu.Unlock()
	for _, b := range open {
		if err := b.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "nsbed:", err)
		}
	}
}

// Sweep removes the namespaces, DPDK runtime directories and default work
// directories of beds whose process is gone, killing what still runs in
// those namespaces. Only names starting with BasePrefix<pid>- are
// considered.
func Sweep(logf func(string, ...any)) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := prefixR.FindStringSubmatch(f[0])
		if m == nil || pidAlive(m[1]) {
			continue
		}
		if logf != nil {
			logf("nsbed: sweeping stale namespace %s", f[0])
		}
		killNS(f[0])
		_ = deleteNS(f[0])
	}
	runtimes, _ := filepath.Glob(filepath.Join(dpdkRuntimeDir, BasePrefix+"*"))
	workDirs, _ := filepath.Glob(filepath.Join(os.TempDir(), BasePrefix+"*"))
	for _, d := range append(runtimes, workDirs...) {
		if _, err := os.Stat(filepath.Join(d, keepMarker)); err == nil {
			continue // kept on purpose (Options.Keep)
		}
		if m := prefixR.FindStringSubmatch(filepath.Base(d)); m != nil && !pidAlive(m[1]) {
			_ = os.RemoveAll(d)
		}
	}
}

func pidAlive(pid string) bool {
	_, err := os.Stat("/proc/" + pid)
	return err == nil
}

// keepMarker in a work directory keeps Sweep away from it.
const keepMarker = ".keep"

// dpdkRuntimeDir is where EAL keeps per --file-prefix state when run as
// root.
const dpdkRuntimeDir = "/var/run/dpdk"

func removeDPDKRuntime(prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(dpdkRuntimeDir, prefix+"*"))
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
}

// killNS kills every process left in namespace name, except this one.
func killNS(name string) {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func deleteNS(name string) error {
	killNS(name)
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("delete netns %s: %s: %w", name, strings.TrimSpace(string(out)), err)
	}
	return nil
}

// run runs argv in the root namespace and returns its combined output.
func run(ctx context.Context, argv ...string) (string, error) {
	if ctx == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
