package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Every test here talks to 127.0.0.1 only.
var loopback = netip.MustParseAddr("127.0.0.1")

// interval is the probe interval of the monitors made by fast.
const interval = 50 * time.Millisecond

// hcTargets returns one target per monitor, each the backend 127.0.0.1 of
// a service named after the map key. The config validation of the control
// package is bypassed on purpose: it forbids loopback backends and
// intervals under 100ms.
func hcTargets(mons map[string]*Config) map[Target]Config {
	want := map[Target]Config{}
	for name, h := range mons {
		want[Target{Service: name, Backend: loopback}] = *h
	}
	return want
}

// fast returns a monitor with a 50ms interval (on the fake clock) and the
// given rise/fall. Its timeout runs on the wall clock of a busy machine, so
// it is generous; tests of timeouts set a short one.
func fast(typ Type, port, rise, fall int) *Config {
	return &Config{Type: typ, Port: port, Interval: interval, Timeout: 5 * time.Second, Rise: rise, Fall: fall}
}

func portOf(t *testing.T, a net.Addr) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

// closedTCPPort returns a loopback port nothing listens on.
func closedTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := portOf(t, l.Addr())
	l.Close()
	return p
}

// closedUDPPort returns a loopback UDP port nothing listens on.
func closedUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return portOf(t, c.LocalAddr())
}

// acceptingTCPPort returns the port of a loopback listener that accepts
// and closes every connection until the test ends.
func acceptingTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return portOf(t, l.Addr())
}

// newMonitors returns Monitors on a fake clock, closed at the end of the
// test.
func newMonitors(t *testing.T, opts Options) (*Monitors, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	opts.Clock = clk
	ms := New(opts)
	t.Cleanup(ms.Close)
	return ms, clk
}

// probeRound advances clk by one interval, which makes each of the n idle
// monitors probe once, and waits until every result is recorded.
func probeRound(t *testing.T, clk *fakeClock, n int) {
	t.Helper()
	clk.waitTimers(t, n)
	clk.Advance(interval)
	clk.waitTimers(t, n)
}

func statusOf(ms *Monitors, svc string) (Status, bool) {
	for _, s := range ms.Status() {
		if s.Service == svc && s.Backend == loopback {
			return s, true
		}
	}
	return Status{}, false
}

// wantState fails unless svc's backend is in state want.
func wantState(t *testing.T, ms *Monitors, svc string, want State) Status {
	t.Helper()
	st, ok := statusOf(ms, svc)
	if !ok {
		t.Fatalf("%s: not in Status", svc)
	}
	if st.State != want {
		t.Fatalf("%s: got state %v (last result %q), want %v", svc, st.State, st.LastResult, want)
	}
	return st
}

func TestHealthTCP(t *testing.T) {
	port := acceptingTCPPort(t)
	tests := []struct {
		desc   string
		port   int
		want   State
		reason string
	}{
		{"listener up", port, Up, "ok"},
		{"listener closed", closedTCPPort(t), Down, "connection refused"},
	}
	ms, clk := newMonitors(t, Options{})
	mons := map[string]*Config{}
	for _, tc := range tests {
		mons[tc.desc] = fast(TypeTCP, tc.port, 1, 1)
	}
	ms.Update(hcTargets(mons))
	probeRound(t, clk, len(tests))
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			st := wantState(t, ms, tc.desc, tc.want)
			if !strings.Contains(st.LastResult, tc.reason) {
				t.Errorf("got last result %q, want it to contain %q", st.LastResult, tc.reason)
			}
			if st.Checks != 1 {
				t.Errorf("got %d checks after one round, want 1", st.Checks)
			}
			if got, want := ms.Healthy(tc.desc, loopback), tc.want == Up; got != want {
				t.Errorf("Healthy: got %v, want %v", got, want)
			}
		})
	}
}

func TestHealthHTTP(t *testing.T) {
	var mu sync.Mutex
	var hosts, paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts, paths = append(hosts, r.Host), append(paths, r.URL.Path)
		mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(200)
		case "/err":
			w.WriteHeader(500)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusMovedPermanently)
		case "/maint":
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	port := portOf(t, srv.Listener.Addr())
	tests := []struct {
		desc   string
		path   string
		expect []int
		want   State
		reason string
	}{
		{"200 expected", "/ok", []int{200}, Up, "ok"},
		{"500 not expected", "/err", []int{200}, Down, "status 500, want [200]"},
		{"redirect not followed", "/moved", []int{200}, Down, "status 301"},
		{"503 in expected list", "/maint", []int{200, 503}, Up, "ok"},
		{"500 not in list", "/err", []int{200, 204, 301}, Down, "status 500"},
	}
	ms, clk := newMonitors(t, Options{})
	mons := map[string]*Config{}
	for _, tc := range tests {
		m := fast(TypeHTTP, port, 1, 1)
		m.Path, m.Expect = tc.path, tc.expect
		mons[strings.ReplaceAll(tc.desc, " ", "-")] = m
	}
	ms.Update(hcTargets(mons))
	probeRound(t, clk, len(tests))
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			st := wantState(t, ms, strings.ReplaceAll(tc.desc, " ", "-"), tc.want)
			if !strings.Contains(st.LastResult, tc.reason) {
				t.Errorf("got last result %q, want it to contain %q", st.LastResult, tc.reason)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	want := netip.AddrPortFrom(loopback, uint16(port)).String()
	for i := range hosts {
		if hosts[i] != want {
			t.Errorf("request %d for %s: got Host %q, want %q", i, paths[i], hosts[i], want)
		}
	}
}

// TestHealthHTTPTimeout uses a server that accepts and never answers.
func TestHealthHTTPTimeout(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	done := make(chan struct{})
	defer func() {
		l.Close()
		close(done)
		conns.Wait()
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				<-done
				c.Close()
			}()
		}
	}()
	ms, clk := newMonitors(t, Options{})
	m := fast(TypeHTTP, portOf(t, l.Addr()), 1, 1)
	m.Path, m.Expect, m.Timeout = "/", []int{200}, 30*time.Millisecond
	ms.Update(hcTargets(map[string]*Config{"silent": m}))
	probeRound(t, clk, 1) // the probe's timeout runs on the wall clock
	st := wantState(t, ms, "silent", Down)
	if st.LastResult != "timeout after 30ms" {
		t.Errorf("got last result %q, want %q", st.LastResult, "timeout after 30ms")
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHealthRiseFall flips a live server between 200 and 500 and checks the
// hysteresis, the notifications and the log lines.
func TestHealthRiseFall(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	var log syncBuffer
	var notified atomic.Int64
	var transMu sync.Mutex
	var trans []string
	ms, clk := newMonitors(t, Options{Log: zerolog.New(&log), OnChange: func() { notified.Add(1) },
		OnTransition: func(tg Target, typ Type, from, to State, result string) {
			transMu.Lock()
			defer transMu.Unlock()
			trans = append(trans, fmt.Sprintf("%s/%v %v %v->%v %s", tg.Service, tg.Backend, typ, from, to, result))
		}})
	m := fast(TypeHTTP, portOf(t, srv.Listener.Addr()), 3, 2)
	m.Path, m.Expect = "/", []int{200}
	start := clk.Now()
	ms.Update(hcTargets(map[string]*Config{"web": m}))

	if ms.Healthy("web", loopback) {
		t.Fatal("Healthy before any probe: got true, want false (monitored backends start unknown)")
	}
	if st := wantState(t, ms, "web", Unknown); !st.LastChange.Equal(start) {
		t.Errorf("new monitor: got last change %v, want its start %v", st.LastChange, start)
	}
	probeRound(t, clk, 1)
	probeRound(t, clk, 1)
	wantState(t, ms, "web", Unknown)
	probeRound(t, clk, 1)
	st := wantState(t, ms, "web", Up)
	if st.Checks != 3 || st.Successes != 3 {
		t.Errorf("up after %d checks, %d successes; want 3 (rise)", st.Checks, st.Successes)
	}
	if upAt := start.Add(3 * interval); !st.LastChange.Equal(upAt) || !st.LastCheck.Equal(upAt) {
		t.Errorf("got last change %v, last check %v; want both %v (the third probe)", st.LastChange, st.LastCheck, upAt)
	}
	failing.Store(true)
	probeRound(t, clk, 1)
	if st = wantState(t, ms, "web", Up); st.Failures != 1 {
		t.Errorf("after one failure: got %d failures, want 1", st.Failures)
	}
	probeRound(t, clk, 1)
	st = wantState(t, ms, "web", Down)
	if st.Failures != 2 {
		t.Errorf("down after %d consecutive failures, want 2 (fall)", st.Failures)
	}
	if ms.Healthy("web", loopback) {
		t.Error("Healthy when down: got true, want false")
	}
	failing.Store(false)
	for range 3 {
		probeRound(t, clk, 1)
	}
	wantState(t, ms, "web", Up)
	ms.Close()

	if got := ms.Transitions(); got != 3 {
		t.Errorf("got %d transitions, want 3 (unknown→up→down→up)", got)
	}
	wantTrans := []string{
		"web/127.0.0.1 http unknown->up ok",
		"web/127.0.0.1 http up->down http GET /: status 500, want [200]",
		"web/127.0.0.1 http down->up ok",
	}
	if !slices.Equal(trans, wantTrans) {
		t.Errorf("OnTransition got\n%s\nwant\n%s", strings.Join(trans, "\n"), strings.Join(wantTrans, "\n"))
	}
	// One notification from Update (new monitor), one per transition.
	if got := notified.Load(); got != 4 {
		t.Errorf("got %d OnChange calls, want 4", got)
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d log lines, want 3:\n%s", len(lines), log.String())
	}
	for _, want := range []string{`"event":"health_change"`, `"service":"web"`, `"backend":"127.0.0.1"`, `"state":"down"`, `"reason":"http GET /: status 500, want [200]"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("log line %s: want %s", lines[1], want)
		}
	}
}

// serveUDP listens on addr (network udp4 or udp6) until the test ends and
// answers each datagram b from from with reply(b, from), or nothing when
// that is nil.
func serveUDP(t *testing.T, network, addr string, reply func(b []byte, from net.Addr) []byte) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n], from); r != nil {
				c.WriteTo(r, from)
			}
		}
	}()
	return c
}

func TestHealthUDP(t *testing.T) {
	serve := func(reply func([]byte) []byte) int {
		c := serveUDP(t, "udp4", "127.0.0.1:0", func(b []byte, _ net.Addr) []byte { return reply(b) })
		return portOf(t, c.LocalAddr())
	}
	echo := serve(func(b []byte) []byte { return b })
	pong := serve(func([]byte) []byte { return []byte("PONG ok") })
	silent := serve(func([]byte) []byte { return nil })
	closed := closedUDPPort(t)
	tests := []struct {
		desc          string
		port          int
		send, receive string
		want          State
		reason        string
	}{
		{"echo any reply", echo, "PING", "", Up, "ok"},
		{"reply contains receive", pong, "PING", "PONG", Up, "ok"},
		{"reply lacks receive", echo, "PING", "PONG", Down, `does not contain "PONG"`},
		{"no reply", silent, "PING", "", Down, "timeout after 40ms"}, // the test sets the 40ms
		{"port unreachable", closed, "PING", "", Down, "port unreachable"},
	}
	ms, clk := newMonitors(t, Options{})
	mons := map[string]*Config{}
	for _, tc := range tests {
		m := fast(TypeUDP, tc.port, 1, 1)
		m.Send, m.Receive = tc.send, tc.receive
		if tc.port == silent {
			m.Timeout = 40 * time.Millisecond
		}
		mons[strings.ReplaceAll(tc.desc, " ", "-")] = m
	}
	ms.Update(hcTargets(mons))
	probeRound(t, clk, len(tests))
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			st := wantState(t, ms, strings.ReplaceAll(tc.desc, " ", "-"), tc.want)
			if !strings.Contains(st.LastResult, tc.reason) {
				t.Errorf("got last result %q, want it to contain %q", st.LastResult, tc.reason)
			}
		})
	}
}

func TestHealthICMP(t *testing.T) {
	for _, network := range []string{ICMPRaw, ICMPUnprivileged, ""} {
		name := network
		if name == "" {
			name = "auto"
		}
		t.Run(name, func(t *testing.T) {
			ms, clk := newMonitors(t, Options{ICMPNetwork: network})
			c, _, err := ms.icmp.Listen()
			if err != nil {
				t.Skipf("no %s socket (not root, or ping_group_range excludes us): %v", network, err)
			}
			c.Close()
			// Two monitors at once: each must match only its own replies.
			ms.Update(hcTargets(map[string]*Config{"ping-a": fast(TypeICMP, 0, 2, 1), "ping-b": fast(TypeICMP, 0, 2, 1)}))
			probeRound(t, clk, 2)
			probeRound(t, clk, 2)
			for _, svc := range []string{"ping-a", "ping-b"} {
				st := wantState(t, ms, svc, Up)
				if st.LastResult != "ok" {
					t.Errorf("%s: got last result %q, want ok", svc, st.LastResult)
				}
			}
		})
	}
}

func TestHealthReconcile(t *testing.T) {
	port := acceptingTCPPort(t)
	var notified atomic.Int64
	ms, clk := newMonitors(t, Options{OnChange: func() { notified.Add(1) }})
	cfg := func(names ...string) map[Target]Config {
		mons := map[string]*Config{}
		for _, n := range names {
			mons[n] = fast(TypeTCP, port, 1, 1)
		}
		return hcTargets(mons)
	}

	ms.Update(cfg("a", "b"))
	if n := ms.running.Load(); n != 2 {
		t.Errorf("got %d monitor goroutines, want 2", n)
	}
	probeRound(t, clk, 2)
	a1 := wantState(t, ms, "a", Up)
	wantState(t, ms, "b", Up)
	if !ms.Healthy("unmonitored", loopback) || !ms.Healthy("no-such-service", loopback) {
		t.Error("Healthy of an unmonitored backend: got false, want true")
	}
	tr := ms.Transitions()

	t.Run("same config keeps state", func(t *testing.T) {
		mon := func() *monitor {
			ms.mu.RLock()
			defer ms.mu.RUnlock()
			return ms.mons[Target{"a", loopback}]
		}
		ma := mon()
		ms.Update(cfg("a", "b"))
		ms.Update(cfg("b", "a"))
		if ms.running.Load() != 2 || clk.pendingTimers() != 2 {
			t.Errorf("got %d monitor goroutines and %d timers, want 2 and 2", ms.running.Load(), clk.pendingTimers())
		}
		a2, _ := statusOf(ms, "a")
		if a2.State != Up || !a2.LastChange.Equal(a1.LastChange) || mon() != ma {
			t.Errorf("got %v changed at %v, want the same monitor up since %v", a2.State, a2.LastChange, a1.LastChange)
		}
	})
	t.Run("removed backend stops", func(t *testing.T) {
		ms.Update(cfg("a"))
		if n := clk.pendingTimers(); n != 1 {
			t.Errorf("got %d timers, want 1 (the removed run's stopped)", n)
		}
		if _, ok := statusOf(ms, "b"); ok {
			t.Error("removed backend still in Status")
		}
		if !ms.Healthy("b", loopback) {
			t.Error("Healthy of a removed monitor: got false, want true")
		}
		probeRound(t, clk, 1)
		if st := wantState(t, ms, "a", Up); st.Checks != a1.Checks+1 {
			t.Errorf("a: got %d checks, want %d", st.Checks, a1.Checks+1)
		}
	})
	t.Run("changed monitor restarts and keeps state", func(t *testing.T) {
		before, _ := statusOf(ms, "a")
		c := cfg("a")
		a := c[Target{"a", loopback}]
		a.Interval = 60 * time.Millisecond
		c[Target{"a", loopback}] = a
		ms.Update(c)
		if n := clk.pendingTimers(); n != 1 {
			t.Errorf("got %d timers, want 1 (the old run's stopped, the new one's armed)", n)
		}
		if st, _ := statusOf(ms, "a"); st.State != Up {
			t.Errorf("after a monitor change: got %v, want up (state kept)", st.State)
		}
		clk.Advance(60 * time.Millisecond) // only the new run probes
		clk.waitTimers(t, 1)
		if st, _ := statusOf(ms, "a"); st.State != Up || st.Failures != 0 || st.Checks != before.Checks+1 {
			t.Errorf("got %v with %d failures after %d checks, want up with 0 after %d", st.State, st.Failures, st.Checks, before.Checks+1)
		}
	})
	t.Run("nil config stops all", func(t *testing.T) {
		ms.Update(nil)
		if n := clk.pendingTimers(); n != 0 {
			t.Errorf("got %d timers, want 0", n)
		}
		if n := len(ms.Status()); n != 0 {
			t.Errorf("got %d statuses, want 0", n)
		}
	})
	if got := ms.Transitions(); got != tr {
		t.Errorf("reconciling caused %d transitions, want 0", got-tr)
	}
	ms.Close()
	if n := ms.running.Load(); n != 0 {
		t.Errorf("after Close: %d monitor goroutines, want 0", n)
	}
	ms.Update(cfg("a"))
	if n := ms.running.Load(); n != 0 {
		t.Errorf("Update after Close started %d goroutines, want 0", n)
	}
	if notified.Load() == 0 {
		t.Error("OnChange never called")
	}
}

// TestHealthStaleResult restarts a monitor while its probe is in flight:
// the old run's result, a failure that would take the backend down, must
// be discarded.
func TestHealthStaleResult(t *testing.T) {
	var log syncBuffer
	started := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int64
	checker := func(_ Target, cfg Config) Checker {
		if cfg.Interval != interval {
			return CheckerFunc(func(context.Context) error { return nil }) // the new run
		}
		return CheckerFunc(func(context.Context) error {
			if calls.Add(1) == 1 {
				return nil
			}
			started <- struct{}{}
			<-release
			return errors.New("stale failure")
		})
	}
	ms, clk := newMonitors(t, Options{Log: zerolog.New(&log), Checker: checker})
	m := &Config{Type: TypeTCP, Port: 1, Interval: interval, Timeout: interval, Rise: 1, Fall: 1}
	ms.Update(hcTargets(map[string]*Config{"a": m}))
	probeRound(t, clk, 1)
	wantState(t, ms, "a", Up)

	clk.Advance(interval)
	<-started // the old run is probing
	changed := *m
	changed.Interval = 2 * interval
	ms.Update(hcTargets(map[string]*Config{"a": &changed}))
	close(release)
	clk.Advance(2 * interval)
	clk.waitTimers(t, 1)
	st := wantState(t, ms, "a", Up)
	if st.Checks != 2 || st.LastResult != "ok" {
		t.Errorf("got %d checks, last result %q; want 2 and ok (the new run's)", st.Checks, st.LastResult)
	}
	ms.Close() // waits for the old run's goroutine too
	if got := ms.Transitions(); got != 1 {
		t.Errorf("got %d transitions, want 1 (unknown→up; the stale failure discarded)", got)
	}
	if strings.Contains(log.String(), "stale failure") {
		t.Errorf("log has the stale result:\n%s", log.String())
	}
}

// TestHealthUpdateUnderLock mimics Store.Subscribe: Update runs under the
// lock that OnChange (Store.Recompile) takes, so it must not notify
// synchronously; the notification follows once the lock is released.
func TestHealthUpdateUnderLock(t *testing.T) {
	var storeMu sync.Mutex
	notified := make(chan struct{}, 16)
	ms, _ := newMonitors(t, Options{OnChange: func() {
		storeMu.Lock()
		defer storeMu.Unlock()
		notified <- struct{}{}
	}})
	m := fast(TypeTCP, closedTCPPort(t), 1, 1)
	storeMu.Lock()
	ms.Update(hcTargets(map[string]*Config{"a": m}))
	if ms.Healthy("a", loopback) {
		t.Error("Healthy right after Update: got true, want false (unknown)")
	}
	storeMu.Unlock()
	select {
	case <-notified:
	case <-time.After(2 * time.Second):
		t.Fatal("no OnChange after Update added a monitor")
	}
}

// TestHealthIPv6 runs every probe type against backends on ::1.
func TestHealthIPv6(t *testing.T) {
	loopback6 := netip.MustParseAddr("::1")
	listen := func(network string) net.Listener {
		l, err := net.Listen(network, "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	tcpUp := listen("tcp6")
	go func() {
		for {
			c, err := tcpUp.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tcpClosed := listen("tcp6")
	tcpClosed.Close()

	var mu sync.Mutex
	var hosts []string
	httpL := listen("tcp6")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		w.WriteHeader(204)
	})}
	go srv.Serve(httpL)
	t.Cleanup(func() { srv.Close() })

	udp := serveUDP(t, "udp6", "[::1]:0", func(b []byte, _ net.Addr) []byte { return append([]byte("PONG "), b...) })
	udpClosed, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	udpClosedPort := portOf(t, udpClosed.LocalAddr())
	udpClosed.Close()

	web := fast(TypeHTTP, portOf(t, httpL.Addr()), 1, 1)
	web.Path, web.Expect = "/", []int{204}
	echo := fast(TypeUDP, portOf(t, udp.LocalAddr()), 1, 1)
	echo.Send, echo.Receive = "PING", "PONG"
	unreachable := fast(TypeUDP, udpClosedPort, 1, 1)
	unreachable.Send = "PING"
	tests := []struct {
		svc    string
		cfg    *Config
		want   State
		reason string
	}{
		{"tcp-up", fast(TypeTCP, portOf(t, tcpUp.Addr()), 1, 1), Up, "ok"},
		{"tcp-refused", fast(TypeTCP, portOf(t, tcpClosed.Addr()), 1, 1), Down, "connection refused"},
		{"http-204", web, Up, "ok"},
		{"udp-pong", echo, Up, "ok"},
		{"udp-unreachable", unreachable, Down, "port unreachable"},
		{"icmpv6-echo", fast(TypeICMP, 0, 1, 1), Up, "ok"},
	}
	ms, clk := newMonitors(t, Options{})
	if c, _, err := ms.icmp.Listen6(); err != nil {
		t.Logf("no ICMPv6 socket (%v): the icmpv6 case expects the error", err)
		tests[len(tests)-1].want, tests[len(tests)-1].reason = Down, "icmp socket"
	} else {
		c.Close()
	}
	targets := map[Target]Config{}
	for _, tc := range tests {
		targets[Target{Service: tc.svc, Backend: loopback6}] = *tc.cfg
	}
	ms.Update(targets)
	probeRound(t, clk, len(tests))
	got := map[string]Status{}
	for _, s := range ms.Status() {
		if s.Backend == loopback6 {
			got[s.Service] = s
		}
	}
	for _, tc := range tests {
		t.Run(tc.svc, func(t *testing.T) {
			st, ok := got[tc.svc]
			if !ok {
				t.Fatalf("no status for backend %s", loopback6)
			}
			if st.State != tc.want || !strings.Contains(st.LastResult, tc.reason) {
				t.Errorf("got %v (%q), want %v (%q)", st.State, st.LastResult, tc.want, tc.reason)
			}
			if ms.Healthy(tc.svc, loopback6) != (tc.want == Up) {
				t.Errorf("Healthy: got %v, want %v", !(tc.want == Up), tc.want == Up)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if want := netip.AddrPortFrom(loopback6, uint16(web.Port)).String(); len(hosts) != 1 || hosts[0] != want {
		t.Errorf("http Host headers: got %q, want [%q]", hosts, want)
	}
}

// TestHealthHTTPHost pins the Host header: the port only when not 80, an
// IPv6 address in brackets (RFC 3986 3.2.2).
func TestHealthHTTPHost(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.21:80", "192.0.2.21"},
		{"192.0.2.21:8080", "192.0.2.21:8080"},
		{"[2001:db8::21]:80", "[2001:db8::21]"},
		{"[2001:db8::21]:8080", "[2001:db8::21]:8080"},
	} {
		if got := NewHTTPChecker(netip.MustParseAddrPort(tc.addr), "/", []int{200}).host; got != tc.want {
			t.Errorf("%s: got Host %q, want %q", tc.addr, got, tc.want)
		}
	}
}
