package health

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Passive configures passive failure detection for the backends of one
// service. The data plane sees only what clients send; a backend that
// stops answering shows there as new flows whose client sends its SYN
// again and again and never an ACK. The data plane counts such unanswered
// flows per backend (a flow is unanswered once its client sent the SYN
// again SynRetries times); Monitors.ObserveUnanswered judges the counts:
// Unanswered or more of them within Window hold the backend down for Hold.
// A held backend takes no new flows and keeps its established ones; it
// takes new flows again once the hold is over and its active monitor has
// passed Rise consecutive probes since the hold began. It holds at most
// half of a service's backends at a time (none of a service with one):
// when most backends seem not to answer, the fault is more likely on the
// way back to the clients, and holding them all would take the service
// down. The zero value is off.
type Passive struct {
	// SynRetries is for the data plane (it decides when a flow counts as
	// unanswered); Monitors does not read it.
	SynRetries int
	Unanswered int
	Window     time.Duration
	Hold       time.Duration
}

// On reports whether passive detection is configured.
func (p Passive) On() bool { return p.Unanswered > 0 }

// Publisher receives events (control.Events is one). kind is "passive"
// here; object names the backend ("service web/backend 10.0.0.2").
type Publisher interface {
	Publish(kind, object, reason string, data map[string]string)
}

// passiveState is passive detection's state of one monitor, guarded by
// Monitors.mu.
type passiveState struct {
	// seen: last holds a count (the first observation is a baseline:
	// flows counted before detection started are no evidence).
	seen bool
	last uint64
	// recent are the increases of the count within the window, oldest
	// first: at most one per observation.
	recent []passiveSample

	held         bool
	limited      bool // the evidence is there, but the service's limit of holds is reached (logged once)
	since, until time.Time
	evidence     uint64        // unanswered flows within the window that caused the hold
	window       time.Duration // the window they were counted in
}

type passiveSample struct {
	at time.Time
	n  uint64
}

// ObserveUnanswered feeds passive detection the unanswered flows counted
// so far for backends (cumulative, summed over the workers; a count lower
// than the last one means the counters started over). Only monitors with
// Passive on use it; a backend missing from counts is unchanged. A backend
// whose count grew by Unanswered or more within Window, while its active
// monitor has it up and the service's limit allows (Passive), is held
// down for Hold: logged (event passive_hold)
// with the evidence, published to Options.Events, and notified
// (OnChange). Holds whose time is over and whose monitor has since passed
// Rise consecutive probes end here too (event passive_release). Call it
// periodically, every second or so: a hold ends within one period after
// it is due.
func (ms *Monitors) ObserveUnanswered(counts map[Target]uint64) {
	now := ms.clock.Now()
	var changes, limited []passiveChange
	ms.mu.Lock()
	if ms.closed {
		ms.mu.Unlock()
		return
	}
	// A service's backends with passive detection, and how many it holds.
	backends, holds := map[string]int{}, map[string]int{}
	for k, m := range ms.mons {
		if m.cfg.Passive.On() {
			backends[k.Service]++
			if m.passive.held {
				holds[k.Service]++
			}
		}
	}
	for k, m := range ms.mons {
		p := m.cfg.Passive
		if !p.On() {
			continue
		}
		ps := &m.passive
		if c, ok := counts[k]; ok {
			if ps.seen {
				d := c - ps.last
				if c < ps.last {
					d = c // the counters started over
				}
				if d > 0 && !ps.held { // what a held backend's clients retry is no evidence after the hold
					ps.recent = append(ps.recent, passiveSample{now, d})
				}
			}
			ps.seen, ps.last = true, c
		}
		cut := now.Add(-p.Window)
		i := 0
		for i < len(ps.recent) && !ps.recent[i].at.After(cut) {
			i++
		}
		ps.recent = append(ps.recent[:0], ps.recent[i:]...)
		var sum uint64
		for _, s := range ps.recent {
			sum += s.n
		}
		if sum < uint64(p.Unanswered) {
			ps.limited = false
		}
		switch {
		case !ps.held && m.state == Up && sum >= uint64(p.Unanswered) && holds[k.Service] >= backends[k.Service]/2:
			if !ps.limited {
				ps.limited = true
				limited = append(limited, passiveChange{target: m.target, state: passiveState{evidence: sum, window: p.Window}, cfg: p,
					held: holds[k.Service], backends: backends[k.Service]})
			}
		case !ps.held && m.state == Up && sum >= uint64(p.Unanswered):
			holds[k.Service]++
			ps.held, ps.since, ps.until, ps.evidence, ps.window = true, now, now.Add(p.Hold), sum, p.Window
			ps.recent = ps.recent[:0]
			m.succ = 0 // the active monitor must pass rise probes again
			ms.transitions.Add(1)
			changes = append(changes, passiveChange{target: m.target, hold: true, state: *ps, cfg: p})
		case ms.releaseDueLocked(m, now):
			changes = append(changes, passiveChange{target: m.target, state: *ps, cfg: p})
			ps.held = false
		}
	}
	ms.mu.Unlock()
	ms.notifyPassive(changes)
	for _, c := range limited {
		reason := fmt.Sprintf("not held down: %d unanswered SYNs in %v, but passive detection already holds %d of the service's %d backends, "+
			"at most half: when most backends seem not to answer, the fault is more likely on the way back to the clients", c.state.evidence, c.state.window, c.held, c.backends)
		ms.opts.Log.Warn().Str("event", "passive_hold_limited").Str("service", c.target.Service).Str("backend", c.target.Backend.String()).
			Uint64("unanswered", c.state.evidence).Dur("window", c.state.window).Str("reason", reason).Msg("passive detection holds no more backends of the service")
		if ms.opts.Events != nil {
			ms.opts.Events.Publish("passive", "service "+c.target.Service+"/backend "+c.target.Backend.String(), reason,
				map[string]string{"service": c.target.Service, "backend": c.target.Backend.String(),
					"unanswered": strconv.FormatUint(c.state.evidence, 10), "window": c.state.window.String()})
		}
	}
}

// passiveChange is a hold or a release, for notifyPassive, or a hold
// refused by the limit (held and backends: the service's).
type passiveChange struct {
	target         Target
	hold           bool // else a release
	state          passiveState
	cfg            Passive
	held, backends int
}

// releaseDueLocked reports whether m's hold is over: its time has passed
// and the active monitor has it up after Rise consecutive successes since
// the hold began. ms.mu must be held.
func (ms *Monitors) releaseDueLocked(m *monitor, now time.Time) bool {
	ps := &m.passive
	return ps.held && !now.Before(ps.until) && m.state == Up && m.succ >= m.cfg.Rise
}

// notifyPassive logs, publishes and notifies holds and releases, outside
// the lock.
func (ms *Monitors) notifyPassive(changes []passiveChange) {
	for _, c := range changes {
		object := "service " + c.target.Service + "/backend " + c.target.Backend.String()
		data := map[string]string{
			"service": c.target.Service, "backend": c.target.Backend.String(),
			"unanswered": strconv.FormatUint(c.state.evidence, 10), "window": c.state.window.String(),
			"threshold": strconv.Itoa(c.cfg.Unanswered), "hold": c.cfg.Hold.String(),
			"until": c.state.until.UTC().Format(time.RFC3339),
		}
		ev, event, msg := ms.opts.Log.Info(), "passive_release", "backend released by passive detection"
		reason := "released by passive detection: the hold is over and the health monitor passed its rise checks"
		if c.hold {
			ev, event, msg = ms.opts.Log.Warn(), "passive_hold", "backend held down by passive detection"
			reason = holdReason(&c.state, c.state.until)
		}
		ev.Str("event", event).Str("service", c.target.Service).Str("backend", c.target.Backend.String()).
			Uint64("unanswered", c.state.evidence).Dur("window", c.state.window).Int("threshold", c.cfg.Unanswered).
			Dur("hold", c.cfg.Hold).Time("until", c.state.until).Str("reason", reason).Msg(msg)
		if ms.opts.Events != nil {
			ms.opts.Events.Publish("passive", object, reason, data)
		}
		if ms.opts.OnChange != nil {
			ms.opts.OnChange()
		}
	}
}

// holdReason says why and until when a backend is held down.
func holdReason(ps *passiveState, until time.Time) string {
	return fmt.Sprintf("held down by passive detection until %s: %d unanswered SYNs in %v",
		until.UTC().Format(time.RFC3339), ps.evidence, ps.window)
}

// Held reports whether passive detection holds backend of service down
// while its active monitor has it up: it then takes no new flows but keeps
// its established ones (a backend the monitor has down takes none).
func (ms *Monitors) Held(service string, backend netip.Addr) bool {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	m, ok := ms.mons[Target{service, backend}]
	return ok && m.state == Up && m.passive.held
}

// PassiveHold says, while passive detection holds backend of service
// down, why and until when, in words for the status API; held is false
// otherwise. Past the hold's time it says what the release waits for.
func (ms *Monitors) PassiveHold(service string, backend netip.Addr) (reason string, until time.Time, held bool) {
	now := ms.clock.Now()
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	m, ok := ms.mons[Target{service, backend}]
	if !ok || !m.passive.held {
		return "", time.Time{}, false
	}
	ps := &m.passive
	reason = holdReason(ps, ps.until)
	if !now.Before(ps.until) {
		reason = fmt.Sprintf("%s; the hold is over, waiting for %d consecutive successful health checks (%d so far)",
			reason, m.cfg.Rise, m.succ)
	}
	return reason, ps.until, true
}

// PassiveOn reports whether any monitor has passive detection on: whether
// ObserveUnanswered has anything to do.
func (ms *Monitors) PassiveOn() bool {
	ms.mu.RLock()
	defer ms.mu.RUnlock()
	for _, m := range ms.mons {
		if m.cfg.Passive.On() {
			return true
		}
	}
	return false
}

// setPassiveLocked gives m the passive detection p; turned off, it
// forgets its state and reports whether that ended a hold (Healthy may
// change). A hold in progress keeps its time. ms.mu must be held.
func (ms *Monitors) setPassiveLocked(m *monitor, p Passive) bool {
	m.cfg.Passive = p
	if p.On() {
		return false
	}
	held := m.passive.held
	if held {
		ms.opts.Log.Info().Str("event", "passive_release").Str("service", m.target.Service).
			Str("backend", m.target.Backend.String()).Str("reason", "passive detection changed or turned off").
			Msg("backend released by passive detection")
	}
	m.passive = passiveState{}
	return held
}
