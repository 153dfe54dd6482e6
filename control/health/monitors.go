package control

// Health checking.
//
// A HealthChecker runs one goroutine per (service, backend) of every service
// that has a health monitor. Each goroutine probes its backend every
// interval (tcp connect, http GET, icmp echo or udp request/reply) with a
// timeout, and feeds the results through seesaw-style hysteresis: a backend
// goes up after `rise` consecutive successes and down after `fall`
// consecutive failures. Only transitions are logged and notified
// (HealthOptions.OnChange, usually Store.Recompile), and only "up" backends
// are Healthy: control.Compile maps !Healthy to pipeline.BackendDown, so a
// failed backend takes no new flows.
//
// DSR note: the probes are ordinary sockets of the control process, so they
// leave through the appliance's kernel (the tap port) from the appliance's
// own address to the backend's real IP, never to the VIP. The backend
// answers them like any client of its real address; they say nothing about
// whether the backend accepts traffic for the VIP (its loopback/VIP setup,
// arp_ignore, decapsulation). Checking "health through the VIP" (seeds/000:
// the tcp/http monitor's destination is the VIP, the packet steered to one
// backend by its MAC or envelope) is a possible future extension: it needs
// probes injected into the data plane with a forced backend, not a kernel
// socket.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// HealthState is a backend's health as seen by its monitor.
type HealthState uint8

// Health states. A monitored backend starts HealthUnknown and counts as
// not healthy until its first `rise` consecutive successes.
const (
	HealthUnknown HealthState = iota // no verdict yet; not healthy
	HealthDown                       // failed `fall` consecutive probes
	HealthUp                         // passed `rise` consecutive probes
)

// String returns "unknown", "down" or "up".
func (s HealthState) String() string {
	switch s {
	case HealthDown:
		return "down"
	case HealthUp:
		return "up"
	default:
		return "unknown"
	}
}

// MarshalText writes s as its String, for JSON.
func (s HealthState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ICMP socket kinds for HealthOptions.ICMPNetwork.
const (
	ICMPRaw          = "ip4:icmp" // raw socket, needs CAP_NET_RAW
	ICMPUnprivileged = "udp4"     // ping socket, needs net.ipv4.ping_group_range
)

// HealthOptions are a HealthChecker's dependencies.
type HealthOptions struct {
	Log zerolog.Logger
	// OnChange is called after every state transition, from the monitor's
	// goroutine and never under a HealthChecker or Store lock; usually
	// Store.Recompile. It is also called (from a goroutine of its own) when
	// Update adds or removes monitors, because the snapshot compiled with
	// the new config was built before Update ran. nil means none.
	OnChange func()
	// ICMPNetwork is ICMPRaw, ICMPUnprivileged or "" to try the raw socket
	// first and fall back to the unprivileged one.
	ICMPNetwork string
}

// BackendHealth is the health of one monitored backend, for the API and
// metrics.
type BackendHealth struct {
	Service string      `json:"service"`
	Backend netip.Addr  `json:"backend"`
	Type    string      `json:"type"`
	State   HealthState `json:"state"`
	// LastResult is "ok", the last probe's error, or "" before the first.
	LastResult string    `json:"last_result"`
	LastCheck  time.Time `json:"last_check"`
	// LastChange is when State last changed (the monitor's start at first).
	LastChange time.Time `json:"last_change"`
	// Successes and Failures are the consecutive counts (one of them is 0).
	Successes int    `json:"successes"`
	Failures  int    `json:"failures"`
	Checks    uint64 `json:"checks"`
}

// HealthChecker runs the health monitors of the live config and answers
// HealthView queries. Feed it configs with Update (Store.Subscribe) and stop
// it with Close. Its methods are safe for concurrent use.
type HealthChecker struct {
	opts HealthOptions

	mu     sync.RWMutex
	mons   map[BackendKey]*healthMonitor
	closed bool

	wg          sync.WaitGroup
	running     atomic.Int64 // live monitor goroutines, for tests and metrics
	transitions atomic.Uint64
	icmpMode    atomic.Value // string: the ICMP network that worked
}

var _ HealthView = (*HealthChecker)(nil)

// healthMonitor is the state of one (service, backend). Its fields are
// guarded by HealthChecker.mu.
type healthMonitor struct {
	key    BackendKey
	cfg    TypedHealth
	gen    uint64 // run generation; results of older runs are discarded
	cancel context.CancelFunc
	icmpID uint16

	state      HealthState
	succ, fail int
	last       string
	lastCheck  time.Time
	lastChange time.Time
	checks     uint64
}

// NewHealth returns a HealthChecker with no monitors. Monitors start with
// the first Update.
func NewHealth(opts HealthOptions) *HealthChecker {
	return &HealthChecker{opts: opts, mons: map[BackendKey]*healthMonitor{}}
}

// Update reconciles the running monitors with t, idempotently: it starts a
// monitor for every backend of a service with a health monitor, stops the
// monitors of removed backends, and restarts those whose service's monitor
// config changed. A restarted monitor keeps its state and counts (editing
// an interval must not take a whole service down for rise×interval); an
// unchanged one is left alone. Update does not block and does not call
// OnChange synchronously, so it may run under the Store's lock
// (Store.Subscribe(h.Update)). A nil t stops every monitor.
func (h *HealthChecker) Update(t *Typed) {
	want := map[BackendKey]*TypedHealth{}
	if t != nil {
		for i := range t.Services {
			s := &t.Services[i]
			if s.Health == nil {
				continue
			}
			for _, b := range s.Backends {
				want[BackendKey{s.Name, b.IP}] = s.Health
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	viewChanged := false
	for k, m := range h.mons {
		if _, ok := want[k]; !ok {
			m.cancel()
			delete(h.mons, k)
			viewChanged = viewChanged || m.state != HealthUp // was unhealthy, now unmonitored
		}
	}
	now := time.Now()
	for k, cfg := range want {
		m, ok := h.mons[k]
		switch {
		case !ok:
			m = &healthMonitor{key: k, state: HealthUnknown, lastChange: now, icmpID: uint16(rand.Uint32())}
			h.mons[k] = m
			viewChanged = true // was unmonitored (healthy), now unknown
		case healthConfigEqual(&m.cfg, cfg):
			continue
		default:
			m.cancel()
		}
		m.cfg = *cfg
		m.cfg.Expect = slices.Clone(cfg.Expect)
		h.startLocked(m)
	}
	if viewChanged && h.opts.OnChange != nil {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.opts.OnChange()
		}()
	}
}

// startLocked starts a new run of m with m.cfg. h.mu must be held.
func (h *HealthChecker) startLocked(m *healthMonitor) {
	m.gen++
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	probe := h.prober(m.key.IP, m.cfg, m.icmpID)
	h.wg.Add(1)
	h.running.Add(1)
	go h.run(ctx, m, m.gen, m.cfg.Interval, m.cfg.Timout, probe)
}

// run probes every interval until ctx is cancelled. The first probe comes
// after a random delay of up to a quarter interval, so that many monitors
// started together do not probe in lockstep.
func (h *HealthChecker) run(ctx context.Context, m *healthMonitor, gen uint64, interval, timeout time.Duration, probe func(context.Context) error) {
	defer h.wg.Done()
	defer h.running.Add(-1)
	var first time.Duration
	if q := int64(interval / 4); q > 0 {
		first = time.Duration(rand.Int64N(q))
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-probe: the result means nothing
		}
		if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
			err = fmt.Errorf("timeout after %v", timeout)
		}
		h.record(m, gen, err)
		timer.Reset(max(0, interval-time.Since(start)))
	}
}

// observe applies one probe result to the hysteresis counters and returns
// whether the state changed. A failing backend of unknown state goes down
// after fall failures, so Status tells "never came up" from "not checked
// yet"; unknown and down are both unhealthy.
func (m *healthMonitor) observe(ok bool, rise, fall int) bool {
	if ok {
		m.succ++
		m.fail = 0
		if m.state != HealthUp && m.succ >= rise {
			m.state = HealthUp
			return true
		}
		return false
	}
	m.fail++
	m.succ = 0
	if m.state != HealthDown && m.fail >= fall {
		m.state = HealthDown
		return true
	}
	return false
}

// record applies the result of run gen of m. Stale runs (restarted or
// removed monitors) are ignored. Transitions are logged, counted and
// notified outside the lock.
func (h *HealthChecker) record(m *healthMonitor, gen uint64, err error) {
	now := time.Now()
	h.mu.Lock()
	if h.closed || m.gen != gen || h.mons[m.key] != m {
		h.mu.Unlock()
		return
	}
	m.checks++
	m.lastCheck = now
	m.last = "ok"
	if err != nil {
		m.last = err.Error()
	}
	from := m.state
	changed := m.observe(err == nil, m.cfg.Rise, m.cfg.Fall)
	if changed {
		m.lastChange = now
		h.transitions.Add(1)
	}
	to, reason, typ := m.state, m.last, m.cfg.Type
	h.mu.Unlock()
	if !changed {
		return
	}
	ev := h.opts.Log.Warn()
	if to == HealthUp {
		ev = h.opts.Log.Info()
	}
	ev.Str("event", "health_change").Str("service", m.key.Service).Str("backend", m.key.IP.String()).
		Str("monitor", typ).Str("from", from.String()).Str("state", to.String()).Str("reason", reason).
		Msg("backend health changed")
	if h.opts.OnChange != nil {
		h.opts.OnChange()
	}
}

// Healthy implements HealthView: a backend is healthy when it is up, or
// when its service has no monitor.
func (h *HealthChecker) Healthy(service string, backend netip.Addr) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	m, ok := h.mons[BackendKey{service, backend}]
	return !ok || m.state == HealthUp
}

// Status returns the health of every monitored backend, sorted by service
// and backend.
func (h *HealthChecker) Status() []BackendHealth {
	h.mu.RLock()
	out := make([]BackendHealth, 0, len(h.mons))
	for k, m := range h.mons {
		out = append(out, BackendHealth{
			Service: k.Service, Backend: k.IP, Type: m.cfg.Type, State: m.state,
			LastResult: m.last, LastCheck: m.lastCheck, LastChange: m.lastChange,
			Successes: m.succ, Failures: m.fail, Checks: m.checks,
		})
	}
	h.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Backend.Less(out[j].Backend)
	})
	return out
}

// Transitions returns the number of state transitions so far.
func (h *HealthChecker) Transitions() uint64 { return h.transitions.Load() }

// Close stops every monitor and waits for their goroutines (and pending
// OnChange calls) to end. Later Updates do nothing. Close must not be
// called from OnChange or under a lock OnChange takes.
func (h *HealthChecker) Close() {
	h.mu.Lock()
	h.closed = true
	for k, m := range h.mons {
		m.cancel()
		delete(h.mons, k)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func healthConfigEqual(a, b *TypedHealth) bool {
	return a.Type == b.Type && a.Port == b.Port && a.Path == b.Path && slices.Equal(a.Expect, b.Expect) &&
		a.Send == b.Send && a.Receive == b.Receive && a.Interval == b.Interval && a.Timout == b.Timout &&
		a.Rise == b.Rise && a.Fall == b.Fall
}

// prober returns the probe function of one run. Probes honour ctx's
// deadline (the monitor's timeout) and cancellation.
func (h *HealthChecker) prober(ip netip.Addr, cfg TypedHealth, icmpID uint16) func(context.Context) error {
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(cfg.Port))
	switch cfg.Type {
	case "tcp":
		return func(ctx context.Context) error { return probeTCP(ctx, addr) }
	case "http":
		return httpProber(ip, cfg)
	case "udp":
		return func(ctx context.Context) error { return probeUDP(ctx, addr, cfg.Send, cfg.Receive) }
	case "icmp":
		var seq atomic.Uint32
		return func(ctx context.Context) error {
			return h.probeICMP(ctx, ip, icmpID, uint16(seq.Add(1)))
		}
	default:
		return func(context.Context) error { return fmt.Errorf("unknown monitor type %q", cfg.Type) }
	}
}

// probeTCP passes when a TCP connection to addr is established. The
// connection is reset rather than closed (linger 0), as HAProxy does, so
// that frequent checks leave no TIME_WAIT sockets on the appliance.
func probeTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.Close()
}

// httpProber returns a probe that passes when GET path answers with one of
// the expected status codes. Redirects are not followed (a 301 is a status
// like any other); each probe uses a new connection; Host is the backend's
// IP (with the port unless 80).
func httpProber(ip netip.Addr, cfg TypedHealth) func(context.Context) error {
	hostport := netip.AddrPortFrom(ip, uint16(cfg.Port)).String()
	url := "http://" + hostport + cfg.Path
	host := hostport
	if cfg.Port == 80 {
		host = ip.String()
	}
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:              nil,
			DisableKeepAlives:  true,
			DisableCompression: true,
			DialContext:        (&net.Dialer{}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	expect := slices.Clone(cfg.Expect)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Host = host
		req.Header.Set("User-Agent", "dsrlb-health/1")
		resp, err := client.Do(req)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return context.DeadlineExceeded
			}
			return fmt.Errorf("http GET %s: %w", cfg.Path, unwrapURLError(err))
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if !slices.Contains(expect, resp.StatusCode) {
			return fmt.Errorf("http GET %s: status %d, want %v", cfg.Path, resp.StatusCode, expect)
		}
		return nil
	}
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the URL.
func unwrapURLError(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok {
		if inner := u.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// probeUDP sends send to addr and passes on any reply, or on one that
// contains receive when receive is set. An ICMP port unreachable (read as
// ECONNREFUSED on the connected socket) fails at once.
func probeUDP(ctx context.Context, addr, send, receive string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(send)); err != nil {
		return fmt.Errorf("udp send: %w", err)
	}
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("udp %s: port unreachable", addr)
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("udp receive: %w", err)
	}
	if receive != "" && !bytes.Contains(buf[:n], []byte(receive)) {
		return fmt.Errorf("udp reply %q does not contain %q", truncate(buf[:n], 64), receive)
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// listenICMP opens an ICMP socket per HealthOptions.ICMPNetwork, or the
// raw one with a fallback to the unprivileged ping socket, remembering
// which worked. It reports whether the socket is raw.
func (h *HealthChecker) listenICMP() (*icmp.PacketConn, bool, error) {
	network := h.opts.ICMPNetwork
	if network == "" {
		network, _ = h.icmpMode.Load().(string)
	}
	if network != "" {
		c, err := icmp.ListenPacket(network, "0.0.0.0")
		if err != nil {
			return nil, false, fmt.Errorf("icmp socket %s: %w", network, err)
		}
		return c, network == ICMPRaw, nil
	}
	c, rawErr := icmp.ListenPacket(ICMPRaw, "0.0.0.0")
	if rawErr == nil {
		h.icmpMode.Store(ICMPRaw)
		return c, true, nil
	}
	c, err := icmp.ListenPacket(ICMPUnprivileged, "0.0.0.0")
	if err != nil {
		return nil, false, fmt.Errorf("icmp socket: raw: %v; unprivileged: %w (allow the group in sysctl net.ipv4.ping_group_range)", rawErr, err)
	}
	h.icmpMode.Store(ICMPUnprivileged)
	h.opts.Log.Info().Str("event", "health_icmp_socket").Str("reason", rawErr.Error()).Msg("raw ICMP denied, using unprivileged ping sockets")
	return c, false, nil
}

// probeICMP sends one echo request (RFC 792) to ip and waits for the
// matching reply: same sequence number and payload, and same identifier on
// a raw socket (a ping socket's kernel rewrites the identifier and delivers
// only its own replies). A raw socket sees every ICMP packet of the host,
// including other monitors' replies, hence the matching.
func (h *HealthChecker) probeICMP(ctx context.Context, ip netip.Addr, id, seq uint16) error {
	c, raw, err := h.listenICMP()
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	payload := make([]byte, 16)
	copy(payload, "dsrlb-hc")
	_, _ = crand.Read(payload[8:])
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(id), Seq: int(seq), Data: payload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	var dst net.Addr = &net.IPAddr{IP: ip.AsSlice()}
	if !raw {
		dst = &net.UDPAddr{IP: ip.AsSlice()}
	}
	if _, err := c.WriteTo(b, dst); err != nil {
		return fmt.Errorf("icmp send: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("icmp receive: %w", err)
		}
		if peerAddr(peer) != ip {
			continue
		}
		rm, err := icmp.ParseMessage(1, buf[:n]) // 1: IANA protocol number of ICMPv4
		if err != nil || rm.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := rm.Body.(*icmp.Echo)
		if !ok || uint16(e.Seq) != seq || (raw && uint16(e.ID) != id) || !bytes.Equal(e.Data, payload) {
			continue
		}
		return nil
	}
}

func peerAddr(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	p, _ := netip.AddrFromSlice(ip)
	return p.Unmap()
}
