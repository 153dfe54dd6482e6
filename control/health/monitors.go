// Package health checks the health of backends.
//
// Monitors runs one goroutine per monitored target, a (service, backend)
// pair. Each goroutine asks its Checker (tcp connect, http GET, udp request
// and reply or icmp echo) every interval, with a timeout, and feeds the
// results through seesaw-style hysteresis: a backend goes up after `rise`
// consecutive successes and down after `fall` consecutive failures. Only
// transitions are logged and notified (Options.OnChange, usually
// control.Store.Recompile), and only "up" backends are Healthy: the
// snapshot compiler gives !Healthy backends no new flows. Passive
// detection (passive.go) may hold an up backend down on the data plane's
// evidence; only its monitor's probes re-admit it. The scheduler's
// timers and timestamps come from a Clock, so tests drive time explicitly.
//
// The package imports nothing of dsrlb: the control package turns its typed
// config into Targets and Configs and reads the verdicts through Healthy.
//
// DSR note: a probe of the backend's own address (Via ViaBackend, and every
// icmp monitor) leaves through the appliance's kernel (the tap port) to the
// backend's real IP; it says nothing about whether the backend accepts
// traffic for the VIP (the VIP on lo, arp_ignore, decapsulation). Probes
// through the VIP (ViaVIP, the default for tcp, http and udp) do: see
// reason.go.
package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Target names a monitored backend of a service.
type Target struct {
	Service string
	Backend netip.Addr
}

// Options are the dependencies of Monitors.
type Options struct {
	Log zerolog.Logger
	// OnChange is called after every state transition, from the monitor's
	// goroutine and never under a Monitors or Store lock; usually
	// Store.Recompile. It is also called (from a goroutine of its own) when
	// Update adds or removes monitors, because the snapshot compiled with
	// the new config was built before Update ran. nil means none.
	OnChange func()
	// OnTransition, if set, is told of every state transition (before
	// OnChange, from the monitor's goroutine, never under a lock of
	// Monitors): the backend, the monitor's type, the states and the last
	// probe's result: "ok", or its failure in words an operator can act
	// on (explain).
	OnTransition func(t Target, typ Type, from, to State, result string)
	// ICMPNetwork is ICMPRaw, ICMPUnprivileged or "" to try the raw socket
	// first and fall back to the unprivileged one.
	ICMPNetwork string
	// Clock schedules the probes and stamps the results; nil is the wall
	// clock.
	Clock Clock
	// Checker returns the Checker of one monitor run of target; nil gives
	// the built-in checker of cfg.Type (TCPChecker, HTTPChecker,
	// UDPChecker, ICMPChecker). Tests pass fakes. It is called under the
	// lock of Monitors and must not call back into it.
	Checker func(target Target, cfg Config) Checker
	// ProbeSource returns the source address and port of probe number n
	// of target through the VIP: the data plane maps the port to that
	// one backend. nil leaves probes through the VIP failing with
	// ErrNoProbePath; an error (ErrNoProbePath, ErrNextHopUnresolved)
	// fails that probe with it.
	ProbeSource func(target Target, n uint32) (netip.AddrPort, error)
	// ProbeDialer opens the connections of probes through the VIP from
	// local to addr where the VIPs are not local addresses (the
	// appliance's probe namespace); nil dials in the process's own
	// namespace (DialFrom), for tests.
	ProbeDialer func(ctx context.Context, network string, local, addr netip.AddrPort) (net.Conn, error)
	// Events, when set, receives passive detection's holds and releases
	// (kind "passive").
	Events Publisher
}

// Status is the health of one monitored backend, for the API and metrics.
type Status struct {
	Service string     `json:"service"`
	Backend netip.Addr `json:"backend"`
	Type    Type       `json:"type"`
	State   State      `json:"state"`
	// LastResult is "ok", the last probe's error, or "" before the first.
	LastResult string    `json:"last_result"`
	LastCheck  time.Time `json:"last_check"`
	// LastChange is when State last changed (the monitor's start at first).
	LastChange time.Time `json:"last_change"`
	// Successes and Failures are the consecutive counts (one of them is 0).
	Successes int    `json:"successes"`
	Failures  int    `json:"failures"`
	Checks    uint64 `json:"checks"`
	// Via is how the probes reach the backend; Target what they are
	// addressed to and how (Config.Target).
	Via    Via    `json:"via"`
	Target string `json:"target"`
	// Reason is the last failure in words an operator can act on
	// (explain); "" after a success.
	Reason string `json:"reason,omitempty"`
}

// Monitors runs the health monitors of the live config and tells which
// backends are healthy. Feed it the wanted monitors with Update and stop it
// with Close. Its methods are safe for concurrent use.
type Monitors struct {
	opts  Options
	clock Clock
	icmp  *ICMPSockets

	mu     sync.RWMutex
	mons   map[Target]*monitor
	closed bool

	wg          sync.WaitGroup
	running     atomic.Int64 // live monitor goroutines, for tests
	transitions atomic.Uint64
}

// monitor is the state of one target. Its fields are guarded by
// Monitors.mu.
type monitor struct {
	target Target
	cfg    Config
	gen    uint64 // run generation; results of older runs are discarded
	stop   func() // ends the current run: cancels its probe, stops its timer
	icmpID uint16

	hysteresis
	last       string
	reason     string // explain(last), "" when ok
	lastCheck  time.Time
	lastChange time.Time
	checks     uint64

	passive passiveState
}

// New returns Monitors with no monitors. Monitors start with the first
// Update.
func New(opts Options) *Monitors {
	clock := opts.Clock
	if clock == nil {
		clock = wallClock{}
	}
	return &Monitors{
		opts:  opts,
		clock: clock,
		icmp:  &ICMPSockets{Network: opts.ICMPNetwork, Log: opts.Log},
		mons:  map[Target]*monitor{},
	}
}

// Update reconciles the running monitors with want, idempotently: it starts
// a monitor for every target of want, stops the monitors of targets not in
// want, and restarts those whose Config changed. A restarted monitor keeps
// its state and counts (editing an interval must not take a whole service
// down for rise×interval); an unchanged one is left alone. Update does not
// block and does not call OnChange synchronously, so it may run under the
// Store's lock (Store.Subscribe). A nil or empty want stops every monitor.
func (ms *Monitors) Update(want map[Target]Config) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.closed {
		return
	}
	viewChanged := false
	for k, m := range ms.mons {
		if _, ok := want[k]; !ok {
			m.stop()
			delete(ms.mons, k)
			viewChanged = viewChanged || m.state != Up // was unhealthy, now unmonitored
		}
	}
	now := ms.clock.Now()
	for k, cfg := range want {
		m, ok := ms.mons[k]
		switch {
		case !ok:
			m = &monitor{target: k, lastChange: now, icmpID: uint16(rand.Uint32())}
			ms.mons[k] = m
			viewChanged = true // was unmonitored (healthy), now unknown
		case m.cfg.equal(&cfg):
			if m.cfg.Passive != cfg.Passive {
				viewChanged = ms.setPassiveLocked(m, cfg.Passive) || viewChanged
			}
			continue
		default:
			m.stop()
			viewChanged = ms.setPassiveLocked(m, cfg.Passive) || viewChanged
		}
		m.cfg = cfg.clone()
		ms.startLocked(m)
	}
	if viewChanged && ms.opts.OnChange != nil {
		ms.wg.Add(1)
		go func() {
			defer ms.wg.Done()
			ms.opts.OnChange()
		}()
	}
}

// startLocked starts a new run of m with m.cfg. The run's first timer is
// armed before startLocked returns, and m.stop stops it at once, so the
// Clock's pending timers are exactly the idle runs. The first probe comes
// after a random delay of up to a quarter interval, so that many monitors
// started together do not probe in lockstep. ms.mu must be held.
func (ms *Monitors) startLocked(m *monitor) {
	m.gen++
	var first time.Duration
	if q := int64(m.cfg.Interval / 4); q > 0 {
		first = time.Duration(rand.Int64N(q))
	}
	timer := ms.clock.NewTimer(first)
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = func() {
		cancel()
		timer.Stop()
	}
	var c Checker
	switch {
	case ms.opts.Checker != nil:
		c = ms.opts.Checker(m.target, m.cfg.clone())
	case m.cfg.throughVIP():
		c = newChecker(m.cfg.VIP, &m.cfg, m.icmpID, ms.icmp, ms.vipDialer(m.target))
	default:
		c = newChecker(m.target.Backend, &m.cfg, m.icmpID, ms.icmp, nil)
	}
	ms.wg.Add(1)
	ms.running.Add(1)
	go ms.run(ctx, m, m.gen, m.cfg.Interval, m.cfg.Timeout, timer, c)
}

// run probes with c whenever timer fires, one interval after the previous
// probe's start (at once when a probe took longer), until ctx is
// cancelled.
func (ms *Monitors) run(ctx context.Context, m *monitor, gen uint64, interval, timeout time.Duration, timer Timer, c Checker) {
	defer ms.wg.Done()
	defer ms.running.Add(-1)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		}
		start := ms.clock.Now()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := c.Check(pctx)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-probe: the result means nothing
		}
		if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
			err = timeoutError{timeout}
		}
		ms.record(m, gen, err)
		timer.Reset(max(0, interval-ms.clock.Now().Sub(start)))
	}
}

// record applies the result of run gen of m. Stale runs (restarted or
// removed monitors) are ignored. Transitions are logged, counted and
// notified outside the lock.
func (ms *Monitors) record(m *monitor, gen uint64, err error) {
	now := ms.clock.Now()
	ms.mu.Lock()
	if ms.closed || m.gen != gen || ms.mons[m.target] != m {
		ms.mu.Unlock()
		return
	}
	m.checks++
	m.lastCheck = now
	m.last, m.reason = "ok", ""
	if err != nil {
		m.last, m.reason = err.Error(), explain(&m.cfg, m.target.Backend, err)
	}
	from := m.state
	changed := m.observe(err == nil, m.cfg.Rise, m.cfg.Fall)
	if changed {
		m.lastChange = now
		ms.transitions.Add(1)
	}
	var released []passiveChange
	if ms.releaseDueLocked(m, now) {
		released = append(released, passiveChange{target: m.target, state: m.passive, cfg: m.cfg.Passive})
		m.passive.held = false
	}
	to, reason, typ, detail, via := m.state, m.last, m.cfg.Type, m.reason, m.cfg.ProbesVia()
	ms.mu.Unlock()
	ms.notifyPassive(released)
	if !changed {
		return
	}
	if detail == "" {
		detail = reason
	}
	ev := ms.opts.Log.Warn()
	if to == Up {
		ev = ms.opts.Log.Info()
	}
	ev.Str("event", "health_change").Str("service", m.target.Service).Str("backend", m.target.Backend.String()).
		Str("monitor", typ.String()).Str("via", via.String()).Str("from", from.String()).Str("state", to.String()).
		Str("reason", reason).Str("detail", detail).Msg("backend health changed")
	if ms.opts.OnTransition != nil {
		ms.opts.OnTransition(m.target, typ, from, to, detail)
	}
	if ms.opts.OnChange != nil {
		ms.opts.OnChange()
	}
}

// Healthy tells whether backend passes the monitor of service: it does when
// it is up and not held down by passive detection, or when it has no
// monitor.
func (ms *Monitors) Healthy(service string, backend netip.Addr) bool {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	m, ok := ms.mons[Target{service, backend}]
	return !ok || m.state == Up && !m.passive.held
}

// LastProbe returns the last probe result of backend of service ("ok",
// the failure, "" before the first) and, after a failure, its reason in
// words an operator can act on; false when the backend has no monitor.
func (ms *Monitors) LastProbe(service string, backend netip.Addr) (result, reason string, ok bool) {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	m, ok := ms.mons[Target{service, backend}]
	if !ok {
		return "", "", false
	}
	return m.last, m.reason, true
}

// Status returns the health of every monitored backend, sorted by service
// and backend.
func (ms *Monitors) Status() []Status {
	ms.mu.RLock()
	out := make([]Status, 0, len(ms.mons))
	for k, m := range ms.mons {
		out = append(out, Status{
			Service: k.Service, Backend: k.Backend, Type: m.cfg.Type, State: m.state,
			LastResult: m.last, LastCheck: m.lastCheck, LastChange: m.lastChange,
			Successes: m.succ, Failures: m.fail, Checks: m.checks,
			Via: m.cfg.ProbesVia(), Target: m.cfg.Target(k.Backend), Reason: m.reason,
		})
	}
	ms.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Backend.Less(out[j].Backend)
	})
	return out
}

// Transitions returns the number of state transitions so far.
func (ms *Monitors) Transitions() uint64 { return ms.transitions.Load() }

// Close stops every monitor and waits for their goroutines (and pending
// OnChange calls) to end. Later Updates do nothing. Close must not be
// called from OnChange or under a lock OnChange takes.
func (ms *Monitors) Close() {
	ms.mu.Lock()
	ms.closed = true
	for k, m := range ms.mons {
		m.stop()
		delete(ms.mons, k)
	}
	ms.mu.Unlock()
	ms.wg.Wait()
}

// timeoutError is a probe that ran out of time: "timeout after 500ms",
// still a context.DeadlineExceeded for explain.
type timeoutError struct{ d time.Duration }

func (e timeoutError) Error() string        { return fmt.Sprintf("timeout after %v", e.d) }
func (e timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }
