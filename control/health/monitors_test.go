package control

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Every test here talks to 127.0.0.1 only.
var loopback = netip.MustParseAddr("127.0.0.1")

// hcTyped builds a config of one service per monitor, each with the single
// backend 127.0.0.1. Validation is bypassed on purpose: it forbids loopback
// backends and intervals under 100ms.
func hcTyped(mons map[string]*TypedHealth) *Typed {
	t := &Typed{}
	for name, h := range mons {
		t.Services = append(t.Services, TypedService{
			Name:     name,
			Backends: []TypedBackend{{IP: loopback, Weight: 1, State: "enabled"}},
			Health:   h,
		})
	}
	return t
}

// fast returns a monitor with a 50ms interval and the given rise/fall.
func fast(typ string, port, rise, fall int) *TypedHealth {
	return &TypedHealth{Type: typ, Port: port, Interval: 50 * time.Millisecond, Timout: 40 * time.Millisecond, Rise: rise, Fall: fall}
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

func newChecker(t *testing.T, opts HealthOptions) *HealthChecker {
	t.Helper()
	h := NewHealth(opts)
	t.Cleanup(h.Close)
	return h
}

func statusOf(h *HealthChecker, svc string) (BackendHealth, bool) {
	for _, s := range h.Status() {
		if s.Service == svc && s.Backend == loopback {
			return s, true
		}
	}
	return BackendHealth{}, false
}

// waitState polls until svc's backend reaches want, or fails after 2s.
func waitState(t *testing.T, h *HealthChecker, svc string, want HealthState) BackendHealth {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, _ := statusOf(h, svc)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got state %v (last result %q), want %v", svc, st.State, st.LastResult, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitRunning(t *testing.T, h *HealthChecker, want int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for h.running.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("got %d monitor goroutines, want %d", h.running.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealthObserveHysteresis(t *testing.T) {
	tests := []struct {
		desc       string
		rise, fall int
		results    string // + success, - failure
		want       string // state after each result: u unknown, d down, U up
		changes    int
	}{
		{"rise 1 up at first success", 1, 1, "+", "U", 1},
		{"rise 3 needs three in a row", 3, 2, "++-+++", "uuuuuU", 1},
		{"fall 2 ignores one failure", 1, 2, "+-+-+", "UUUUU", 1},
		{"fall 2 then down", 1, 2, "+--", "UUd", 2},
		{"unknown goes down after fall", 2, 3, "---+", "uudd", 1},
		{"flapping never rises nor falls", 2, 2, "+-+-+-", "uuuuuu", 0},
		{"up, down, up", 2, 2, "++--++", "uUUddU", 3},
		{"down then rise", 2, 1, "--++", "dddU", 2},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			m := &healthMonitor{}
			var got strings.Builder
			changes := 0
			for _, r := range tc.results {
				if m.observe(r == '+', tc.rise, tc.fall) {
					changes++
				}
				got.WriteByte(map[HealthState]byte{HealthUnknown: 'u', HealthDown: 'd', HealthUp: 'U'}[m.state])
			}
			if got.String() != tc.want || changes != tc.changes {
				t.Errorf("results %s: got states %s with %d changes, want %s with %d", tc.results, got.String(), changes, tc.want, tc.changes)
			}
		})
	}
}

func TestHealthTCP(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tests := []struct {
		desc   string
		port   int
		want   HealthState
		reason string
	}{
		{"listener up", portOf(t, l.Addr()), HealthUp, "ok"},
		{"listener closed", closedTCPPort(t), HealthDown, "connection refused"},
	}
	h := newChecker(t, HealthOptions{})
	mons := map[string]*TypedHealth{}
	for _, tc := range tests {
		mons[tc.desc] = fast("tcp", tc.port, 1, 1)
	}
	h.Update(hcTyped(mons))
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			st := waitState(t, h, tc.desc, tc.want)
			if !strings.Contains(st.LastResult, tc.reason) {
				t.Errorf("got last result %q, want it to contain %q", st.LastResult, tc.reason)
			}
			if got, want := h.Healthy(tc.desc, loopback), tc.want == HealthUp; got != want {
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
		want   HealthState
		reason string
	}{
		{"200 expected", "/ok", []int{200}, HealthUp, "ok"},
		{"500 not expected", "/err", []int{200}, HealthDown, "status 500, want [200]"},
		{"redirect not followed", "/moved", []int{200}, HealthDown, "status 301"},
		{"503 in expected list", "/maint", []int{200, 503}, HealthUp, "ok"},
		{"500 not in list", "/err", []int{200, 204, 301}, HealthDown, "status 500"},
	}
	h := newChecker(t, HealthOptions{})
	mons := map[string]*TypedHealth{}
	for _, tc := range tests {
		m := fast("http", port, 1, 1)
		m.Path, m.Expect = tc.path, tc.expect
		mons[strings.ReplaceAll(tc.desc, " ", "-")] = m
	}
	h.Update(hcTyped(mons))
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			st := waitState(t, h, strings.ReplaceAll(tc.desc, " ", "-"), tc.want)
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
	h := newChecker(t, HealthOptions{})
	m := fast("http", portOf(t, l.Addr()), 1, 1)
	m.Path, m.Expect, m.Timout = "/", []int{200}, 30*time.Millisecond
	h.Update(hcTyped(map[string]*TypedHealth{"silent": m}))
	st := waitState(t, h, "silent", HealthDown)
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
	h := newChecker(t, HealthOptions{Log: zerolog.New(&log), OnChange: func() { notified.Add(1) }})
	m := fast("http", portOf(t, srv.Listener.Addr()), 3, 2)
	m.Path, m.Expect = "/", []int{200}
	h.Update(hcTyped(map[string]*TypedHealth{"web": m}))

	if h.Healthy("web", loopback) {
		t.Fatal("Healthy before any probe: got true, want false (monitored backends start unknown)")
	}
	st := waitState(t, h, "web", HealthUp)
	if st.Checks < 3 || st.Successes < 3 {
		t.Errorf("up after %d checks, %d successes; want >= 3 (rise)", st.Checks, st.Successes)
	}
	failing.Store(true)
	st = waitState(t, h, "web", HealthDown)
	if st.Failures != 2 {
		t.Errorf("down after %d consecutive failures, want 2 (fall)", st.Failures)
	}
	if h.Healthy("web", loopback) {
		t.Error("Healthy when down: got true, want false")
	}
	failing.Store(false)
	waitState(t, h, "web", HealthUp)
	h.Close()

	if got := h.Transitions(); got != 3 {
		t.Errorf("got %d transitions, want 3 (unknown→up→down→up)", got)
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

func TestHealthUDP(t *testing.T) {
	serve := func(reply func([]byte) []byte) int {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
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
				if r := reply(buf[:n]); r != nil {
					c.WriteTo(r, from)
				}
			}
		}()
		return portOf(t, c.LocalAddr())
	}
	echo := serve(func(b []byte) []byte { return b })
	pong := serve(func([]byte) []byte { return []byte("PONG ok") })
	silent := serve(func([]byte) []byte { return nil })
	closed := func() int {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return portOf(t, c.LocalAddr())
	}()
	tests := []struct {
		desc          string
		port          int
		send, receive string
		want          HealthState
		reason        string
	}{
		{"echo any reply", echo, "PING", "", HealthUp, "ok"},
		{"reply contains receive", pong, "PING", "PONG", HealthUp, "ok"},
		{"reply lacks receive", echo, "PING", "PONG", HealthDown, `does not contain "PONG"`},
		{"no reply", silent, "PING", "", HealthDown, "timeout after 40ms"},
		{"port unreachable", closed, "PING", "", HealthDown, "port unreachable"},
	}
	h := newChecker(t, HealthOptions{})
	mons := map[string]*TypedHealth{}
	for _, tc := range tests {
		m := fast("udp", tc.port, 1, 1)
		m.Send, m.Receive = tc.send, tc.receive
		mons[strings.ReplaceAll(tc.desc, " ", "-")] = m
	}
	h.Update(hcTyped(mons))
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			st := waitState(t, h, strings.ReplaceAll(tc.desc, " ", "-"), tc.want)
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
			h := newChecker(t, HealthOptions{ICMPNetwork: network})
			c, _, err := h.listenICMP()
			if err != nil {
				t.Skipf("no %s socket (not root, or ping_group_range excludes us): %v", network, err)
			}
			c.Close()
			// Two monitors at once: each must match only its own replies.
			h.Update(hcTyped(map[string]*TypedHealth{"ping-a": fast("icmp", 0, 2, 1), "ping-b": fast("icmp", 0, 2, 1)}))
			for _, svc := range []string{"ping-a", "ping-b"} {
				st := waitState(t, h, svc, HealthUp)
				if st.LastResult != "ok" {
					t.Errorf("%s: got last result %q, want ok", svc, st.LastResult)
				}
			}
		})
	}
}

func TestHealthReconcile(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := portOf(t, l.Addr())
	var notified atomic.Int64
	h := newChecker(t, HealthOptions{OnChange: func() { notified.Add(1) }})
	cfg := func(names ...string) *Typed {
		mons := map[string]*TypedHealth{}
		for _, n := range names {
			mons[n] = fast("tcp", port, 1, 1)
		}
		t := hcTyped(mons)
		t.Services = append(t.Services, TypedService{Name: "unmonitored", Backends: []TypedBackend{{IP: loopback}}})
		return t
	}

	h.Update(cfg("a", "b"))
	waitRunning(t, h, 2)
	a1 := waitState(t, h, "a", HealthUp)
	waitState(t, h, "b", HealthUp)
	if !h.Healthy("unmonitored", loopback) || !h.Healthy("no-such-service", loopback) {
		t.Error("Healthy of an unmonitored backend: got false, want true")
	}
	tr := h.Transitions()

	t.Run("same config keeps state", func(t *testing.T) {
		mon := func() *healthMonitor {
			h.mu.RLock()
			defer h.mu.RUnlock()
			return h.mons[BackendKey{"a", loopback}]
		}
		ma := mon()
		h.Update(cfg("a", "b"))
		h.Update(cfg("b", "a"))
		if h.running.Load() != 2 {
			t.Errorf("got %d monitor goroutines, want 2", h.running.Load())
		}
		a2, _ := statusOf(h, "a")
		if a2.State != HealthUp || !a2.LastChange.Equal(a1.LastChange) || mon() != ma {
			t.Errorf("got %v changed at %v, want the same monitor up since %v", a2.State, a2.LastChange, a1.LastChange)
		}
	})
	t.Run("removed backend stops", func(t *testing.T) {
		h.Update(cfg("a"))
		waitRunning(t, h, 1)
		if _, ok := statusOf(h, "b"); ok {
			t.Error("removed backend still in Status")
		}
		if !h.Healthy("b", loopback) {
			t.Error("Healthy of a removed monitor: got false, want true")
		}
	})
	t.Run("changed monitor restarts and keeps state", func(t *testing.T) {
		c := cfg("a")
		c.Services[0].Health.Interval = 60 * time.Millisecond
		h.Update(c)
		waitRunning(t, h, 1)
		if st, _ := statusOf(h, "a"); st.State != HealthUp {
			t.Errorf("after a monitor change: got %v, want up (state kept)", st.State)
		}
		time.Sleep(150 * time.Millisecond) // the old run's results must be ignored, the new one's counted
		if st, _ := statusOf(h, "a"); st.State != HealthUp || st.Failures != 0 {
			t.Errorf("got %v with %d failures, want up with 0", st.State, st.Failures)
		}
	})
	t.Run("nil config stops all", func(t *testing.T) {
		h.Update(nil)
		waitRunning(t, h, 0)
		if n := len(h.Status()); n != 0 {
			t.Errorf("got %d statuses, want 0", n)
		}
	})
	if got := h.Transitions(); got != tr {
		t.Errorf("reconciling caused %d transitions, want 0", got-tr)
	}
	h.Close()
	if n := h.running.Load(); n != 0 {
		t.Errorf("after Close: %d monitor goroutines, want 0", n)
	}
	h.Update(cfg("a"))
	if n := h.running.Load(); n != 0 {
		t.Errorf("Update after Close started %d goroutines, want 0", n)
	}
	if notified.Load() == 0 {
		t.Error("OnChange never called")
	}
}

// TestHealthUpdateUnderLock mimics Store.Subscribe: Update runs under the
// lock that OnChange (Store.Recompile) takes, so it must not notify
// synchronously; the notification follows once the lock is released.
func TestHealthUpdateUnderLock(t *testing.T) {
	var storeMu sync.Mutex
	notified := make(chan struct{}, 16)
	h := newChecker(t, HealthOptions{OnChange: func() {
		storeMu.Lock()
		defer storeMu.Unlock()
		notified <- struct{}{}
	}})
	m := fast("tcp", closedTCPPort(t), 1, 1)
	storeMu.Lock()
	h.Update(hcTyped(map[string]*TypedHealth{"a": m}))
	if h.Healthy("a", loopback) {
		t.Error("Healthy right after Update: got true, want false (unknown)")
	}
	storeMu.Unlock()
	select {
	case <-notified:
	case <-time.After(2 * time.Second):
		t.Fatal("no OnChange after Update added a monitor")
	}
}
