// Package frrtest runs FRR routers (zebra + bgpd) inside Linux network
// namespaces for tests, and reads their state through vtysh's JSON output.
//
// It needs root, iproute2 and Debian's frr package (FRR 8.4:
// /usr/lib/frr/zebra, /usr/lib/frr/bgpd, vtysh); Require skips a test
// otherwise.
//
// A router runs as two foreground processes started with
// "ip netns exec NS /usr/lib/frr/DAEMON -N NS -f DIR/DAEMON.conf": -N gives
// each router its own socket directory /var/run/frr/NS (so "vtysh -N NS"
// reaches it and routers never share a zebra), while the configuration, pid
// and log files live in a private directory that the frr user owns (the
// daemons drop to frr:frr and read their config after that; running them as
// root fails because root is not in the frrvty group). Stop, registered
// with t.Cleanup, kills both by pid, even when the test fails.
//
// Typical use:
//
//	frrtest.Require(t)
//	r := frrtest.NewNetns(t, frrtest.UniqueName("r"))
//	a := frrtest.NewNetns(t, frrtest.UniqueName("a"))
//	frrtest.Veth(t, r, "eth0", netip.MustParsePrefix("10.252.0.1/24"), a, "eth0", netip.MustParsePrefix("10.252.0.2/24"))
//	rt := frrtest.Start(t, r.Name, frrtest.BGPConfig{ASN: 65000, RouterID: "10.252.0.1",
//		Neighbors: []frrtest.Peer{{Address: "10.252.0.2", ASN: 65010}}}.String())
//	rt.WaitEstablished(t, "10.252.0.2", 30*time.Second)
package frrtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Paths of the FRR programs (Debian's frr package).
var (
	ZebraPath = "/usr/lib/frr/zebra"
	BGPDPath  = "/usr/lib/frr/bgpd"
	VtyshPath = "/usr/bin/vtysh"
	// RunDir is FRR's state directory; -N NS puts sockets in RunDir/NS.
	RunDir = "/var/run/frr"
)

// Require skips t unless the process is root and ip, zebra, bgpd and vtysh
// are installed.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("frrtest: needs root for network namespaces")
	}
	for _, p := range []string{ZebraPath, BGPDPath, VtyshPath} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("frrtest: FRR not installed (%v); apt-get install frr", err)
		}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("frrtest: iproute2 not installed")
	}
	if _, err := user.Lookup("frr"); err != nil {
		t.Skip("frrtest: no frr user")
	}
}

var nameSeq atomic.Int32

// UniqueName returns a namespace name unique to this process and call,
// "dsrbgp-<pid>-<n>-<tag>".
func UniqueName(tag string) string {
	return fmt.Sprintf("dsrbgp-%d-%d-%s", os.Getpid(), nameSeq.Add(1), tag)
}

// Netns is a named network namespace (/run/netns/Name).
type Netns struct {
	Name string
}

// NewNetns creates the namespace name with its loopback up and deletes it
// at t's cleanup (after the routers started later are stopped, as cleanups
// run last-in first-out).
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &Netns{Name: name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if _, err := n.IP("link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return n
}

// IP runs "ip -n NAME args..." and returns its standard output.
func (n *Netns) IP(args ...string) (string, error) {
	return run(exec.Command("ip", append([]string{"-n", n.Name}, args...)...))
}

// Command returns a command that runs name with args inside the namespace
// (through "ip netns exec", which also remounts /sys for it).
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Veth joins namespaces a and b with a veth pair named aIf in a and bIf in
// b (created directly inside them, so the names need not be unique on the
// host), assigns the addresses and sets both ends up. The pair vanishes with
// its namespaces.
func Veth(t testing.TB, a *Netns, aIf string, aAddr netip.Prefix, b *Netns, bIf string, bAddr netip.Prefix) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", aIf, "netns", a.Name, "type", "veth",
		"peer", "name", bIf, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v: %s", a.Name, aIf, b.Name, bIf, err, out)
	}
	for _, end := range []struct {
		ns   *Netns
		dev  string
		addr netip.Prefix
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		if err := end.ns.AddAddr(end.dev, end.addr); err != nil {
			t.Fatal(err)
		}
		if _, err := end.ns.IP("link", "set", end.dev, "up"); err != nil {
			t.Fatal(err)
		}
	}
}

// AddAddr adds an address to dev in n; IPv6 addresses skip duplicate
// address detection (nodad), so they are usable at once.
func (n *Netns) AddAddr(dev string, p netip.Prefix) error {
	args := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	_, err := n.IP(args...)
	return err
}

// run runs cmd and returns its standard output; the error includes stderr.
func run(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Router is an FRR instance (zebra and bgpd) in one namespace.
type Router struct {
	// NS is the namespace, also FRR's pathspace (-N).
	NS string
	// Dir holds the configs, pid files and logs; empty for Attach.
	Dir string

	mu    sync.Mutex
	procs []*exec.Cmd
	done  []chan struct{}
}

// DefaultZebraConfig is zebra's configuration when Options.Zebra is empty.
const DefaultZebraConfig = "frr defaults traditional\n!\n"

// Options are the optional parts of a router.
type Options struct {
	// Zebra is zebra.conf; empty means DefaultZebraConfig.
	Zebra string
	// Dir is where configs, pid files and logs go; empty means a new
	// directory under os.TempDir(), kept if the test failed.
	Dir string
}

// Start runs zebra and bgpd with bgpdConf in namespace ns, waits until
// vtysh answers, and stops them at t's cleanup. It fails t on error.
func Start(t testing.TB, ns, bgpdConf string) *Router {
	t.Helper()
	return StartOptions(t, ns, bgpdConf, Options{})
}

// StartOptions is Start with Options.
func StartOptions(t testing.TB, ns, bgpdConf string, o Options) *Router {
	t.Helper()
	r, err := Launch(ns, bgpdConf, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("frrtest: router %s failed test; logs in %s:\n%s", ns, r.Dir, r.Logs())
		}
		if err := r.Stop(); err != nil {
			t.Errorf("frrtest: stop %s: %v", ns, err)
		}
		if !t.Failed() && o.Dir == "" {
			os.RemoveAll(r.Dir)
		}
	})
	return r
}

// Launch is Start without a testing.TB: the caller MUST call Stop.
func Launch(ns, bgpdConf string, o Options) (*Router, error) {
	frr, err := user.Lookup("frr")
	if err != nil {
		return nil, fmt.Errorf("frrtest: %w", err)
	}
	uid, _ := strconv.Atoi(frr.Uid)
	gid, _ := strconv.Atoi(frr.Gid)
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "frrtest-"+ns+"-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	zebraConf := o.Zebra
	if zebraConf == "" {
		zebraConf = DefaultZebraConfig
	}
	for name, text := range map[string]string{"zebra.conf": zebraConf, "bgpd.conf": bgpdConf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	// The daemons read their config and write pid and log files after
	// dropping to frr:frr.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	if _, err := os.Stat(RunDir); err != nil {
		if err := os.MkdirAll(RunDir, 0o755); err != nil {
			return nil, err
		}
		os.Chown(RunDir, uid, gid)
	}
	// A directory left by a killed run (or created by root) would make
	// zebra fail to create its sockets.
	os.RemoveAll(filepath.Join(RunDir, ns))

	r := &Router{NS: ns, Dir: dir}
	if err := r.spawn("zebra", ZebraPath); err != nil {
		return r, errors.Join(err, r.Stop())
	}
	if err := r.waitFile(filepath.Join(RunDir, ns, "zserv.api"), 10*time.Second); err != nil {
		return r, errors.Join(err, r.Stop())
	}
	if err := r.spawn("bgpd", BGPDPath); err != nil {
		return r, errors.Join(err, r.Stop())
	}
	if err := r.waitFile(filepath.Join(RunDir, ns, "bgpd.vty"), 10*time.Second); err != nil {
		return r, errors.Join(err, r.Stop())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.Vtysh("show bgp summary json")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return r, errors.Join(fmt.Errorf("frrtest: bgpd in %s not answering: %w", ns, err), r.Stop())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r, nil
}

// Attach returns a Router for querying an FRR instance that someone else
// runs in namespace ns (e.g. from a child process). Stop does nothing.
func Attach(ns string) *Router {
	return &Router{NS: ns}
}

// spawn starts one daemon in the foreground.
//
//	-N NS        pathspace: sockets in /var/run/frr/NS, "vtysh -N NS"
//	-f FILE      config outside /etc/frr
//	-i FILE      pid file outside /var/run/frr
//	-P 0         no TCP vty port
//	--log file:  log outside syslog
//
// bgpd gets no -l: it implies -n (no kernel routes).
func (r *Router) spawn(name, path string) error {
	args := []string{"netns", "exec", r.NS, path,
		"-N", r.NS,
		"-f", filepath.Join(r.Dir, name+".conf"),
		"-i", filepath.Join(r.Dir, name+".pid"),
		"-P", "0",
		"--log", "file:" + filepath.Join(r.Dir, name+".log"),
	}
	cmd := exec.Command("ip", args...)
	out, err := os.Create(filepath.Join(r.Dir, name+".out"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: a ^C to the test does not hit FRR before Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("frrtest: start %s in %s: %w", name, r.NS, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(done)
	}()
	r.mu.Lock()
	r.procs = append(r.procs, cmd)
	r.done = append(r.done, done)
	r.mu.Unlock()
	return nil
}

// waitFile waits for path to exist, or for a daemon to die.
func (r *Router) waitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		r.mu.Lock()
		for i, d := range r.done {
			select {
			case <-d:
				r.mu.Unlock()
				return fmt.Errorf("frrtest: %s exited early (%v):\n%s", r.procs[i].Args[4], r.procs[i].ProcessState, r.Logs())
			default:
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			return fmt.Errorf("frrtest: %s did not appear within %v:\n%s", path, timeout, r.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop terminates bgpd and zebra by pid (SIGTERM, SIGKILL after 5 s),
// waits for them and removes /var/run/frr/NS. It is idempotent.
func (r *Router) Stop() error {
	r.mu.Lock()
	procs, done := r.procs, r.done
	r.procs, r.done = nil, nil
	r.mu.Unlock()
	var errs []error
	// bgpd first, so zebra is there to withdraw its routes.
	for i := len(procs) - 1; i >= 0; i-- {
		p, d := procs[i], done[i]
		select {
		case <-d:
			continue
		default:
		}
		p.Process.Signal(syscall.SIGTERM)
		select {
		case <-d:
		case <-time.After(5 * time.Second):
			p.Process.Kill()
			<-d
			errs = append(errs, fmt.Errorf("frrtest: %s in %s needed SIGKILL", filepath.Base(p.Args[4]), r.NS))
		}
	}
	if len(procs) > 0 {
		os.RemoveAll(filepath.Join(RunDir, r.NS))
	}
	return errors.Join(errs...)
}

// Logs returns the daemons' log and output files, for failure reports.
func (r *Router) Logs() string {
	if r.Dir == "" {
		return ""
	}
	var b strings.Builder
	for _, f := range []string{"zebra.out", "zebra.log", "bgpd.out", "bgpd.log"} {
		data, err := os.ReadFile(filepath.Join(r.Dir, f))
		if err != nil || len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- %s\n%s", f, data)
	}
	return b.String()
}

// Vtysh runs vtysh -N NS with the commands (each one -c) and returns its
// output. vtysh needs no namespace: it talks to the daemons over unix
// sockets in /var/run/frr/NS.
func (r *Router) Vtysh(cmds ...string) (string, error) {
	args := []string{"-N", r.NS}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return run(exec.CommandContext(ctx, VtyshPath, args...))
}

// VtyshJSON runs one command (which must end in "json") and decodes its
// output into v.
func (r *Router) VtyshJSON(cmd string, v any) error {
	out, err := r.Vtysh(cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("frrtest: %q: %w: %s", cmd, err, out)
	}
	return nil
}

// Configure applies configuration lines in "configure terminal" mode, e.g.
// Configure("router bgp 65000", "neighbor 10.252.0.3 remote-as 65010").
func (r *Router) Configure(lines ...string) error {
	_, err := r.Vtysh(append([]string{"configure terminal"}, lines...)...)
	return err
}

// Nexthop is one next hop of a zebra route ("show ip route json").
type Nexthop struct {
	IP        string `json:"ip"`
	AFI       string `json:"afi"`
	Interface string `json:"interfaceName"`
	Active    bool   `json:"active"`
	FIB       bool   `json:"fib"`
}

// Route is one zebra route entry ("show ip route json").
type Route struct {
	Prefix    string    `json:"prefix"`
	Protocol  string    `json:"protocol"`
	Selected  bool      `json:"selected"`
	Installed bool      `json:"installed"`
	Distance  int       `json:"distance"`
	Metric    int       `json:"metric"`
	Nexthops  []Nexthop `json:"nexthops"`
}

// FIBNexthops returns the addresses of the next hops installed in the
// kernel.
func (r Route) FIBNexthops() []string {
	var out []string
	for _, n := range r.Nexthops {
		if n.FIB {
			out = append(out, n.IP)
		}
	}
	return out
}

// Routes returns zebra's routes of a family ("ip" or "ipv6"), keyed by
// prefix: "show ip route json".
func (r *Router) Routes(family string) (map[string][]Route, error) {
	m := map[string][]Route{}
	err := r.VtyshJSON("show "+family+" route json", &m)
	return m, err
}

// Route returns zebra's entries for exactly prefix (none if absent).
func (r *Router) Route(prefix netip.Prefix) ([]Route, error) {
	family := "ip"
	if prefix.Addr().Is6() {
		family = "ipv6"
	}
	m, err := r.Routes(family)
	if err != nil {
		return nil, err
	}
	return m[prefix.String()], nil
}

// BGPPath is one path of "show ip bgp PREFIX json".
type BGPPath struct {
	ASPath struct {
		String string `json:"string"`
		Length int    `json:"length"`
	} `json:"aspath"`
	// MED is FRR's "metric" (absent, so 0, when the path has none).
	MED      uint32 `json:"metric"`
	Origin   string `json:"origin"`
	Valid    bool   `json:"valid"`
	Nexthops []struct {
		IP  string `json:"ip"`
		AFI string `json:"afi"`
		// Scope is "global" or "link-local" for an IPv6 next hop (an
		// MP_REACH_NLRI may carry both, RFC 2545 3).
		Scope string `json:"scope"`
	} `json:"nexthops"`
	BestPath *struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
	Multipath bool `json:"multipath"`
	Peer      struct {
		PeerID   string `json:"peerId"`
		RouterID string `json:"routerId"`
	} `json:"peer"`
}

// Best reports whether the path is the overall best path.
func (p BGPPath) Best() bool { return p.BestPath != nil && p.BestPath.Overall }

// BGPPaths returns bgpd's paths for prefix (none if absent).
func (r *Router) BGPPaths(prefix netip.Prefix) ([]BGPPath, error) {
	family := "ipv4"
	if prefix.Addr().Is6() {
		family = "ipv6"
	}
	var v struct {
		Prefix string    `json:"prefix"`
		Paths  []BGPPath `json:"paths"`
	}
	err := r.VtyshJSON("show bgp "+family+" unicast "+prefix.String()+" json", &v)
	return v.Paths, err
}

// NeighborState is one entry of "show bgp neighbors json".
type NeighborState struct {
	RemoteAS       uint32 `json:"remoteAs"`
	LocalAS        uint32 `json:"localAs"`
	State          string `json:"bgpState"` // "Established", "Active", ...
	RemoteRouterID string `json:"remoteRouterId"`
	HoldTimeMsecs  int    `json:"bgpTimerHoldTimeMsecs"`
	UpEstablished  int    `json:"bgpTimerUpEstablishedEpoch"`
}

// Neighbors returns bgpd's neighbours keyed by address.
func (r *Router) Neighbors() (map[string]NeighborState, error) {
	m := map[string]NeighborState{}
	err := r.VtyshJSON("show bgp neighbors json", &m)
	return m, err
}

// WaitEstablished waits until the neighbour at addr is Established and
// returns how long that took; it fails t on timeout.
func (r *Router) WaitEstablished(t testing.TB, addr string, timeout time.Duration) time.Duration {
	t.Helper()
	var last string
	d, err := WaitFor(timeout, func() (bool, error) {
		m, err := r.Neighbors()
		if err != nil {
			return false, err
		}
		last = m[addr].State
		return last == "Established", nil
	})
	if err != nil {
		t.Fatalf("frrtest: %s: neighbour %s not established (last state %q): %v", r.NS, addr, last, err)
	}
	return d
}

// KernelRoute returns "ip route show PREFIX" in the router's namespace:
// what zebra actually installed in the kernel. It is empty when absent.
func (r *Router) KernelRoute(prefix netip.Prefix) (string, error) {
	args := []string{"-n", r.NS}
	if prefix.Addr().Is6() {
		args = append(args, "-6")
	}
	out, err := run(exec.Command("ip", append(args, "route", "show", prefix.String())...))
	return strings.TrimSpace(out), err
}

// WaitFor polls cond every 10 ms until it returns true (returning the
// elapsed time) or timeout passes (returning cond's last error, or a
// timeout error).
func WaitFor(timeout time.Duration, cond func() (bool, error)) (time.Duration, error) {
	return WaitEvery(timeout, 10*time.Millisecond, cond)
}

// WaitEvery is WaitFor polling every interval.
func WaitEvery(timeout, every time.Duration, cond func() (bool, error)) (time.Duration, error) {
	start := time.Now()
	for {
		ok, err := cond()
		if ok {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			if err == nil {
				err = errors.New("timed out")
			}
			return time.Since(start), fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(every)
	}
}
