package api

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// heldHealth holds one backend down by passive detection; the others are
// healthy.
type heldHealth struct {
	ip    netip.Addr
	until time.Time
}

func (h heldHealth) Healthy(_ string, ip netip.Addr) bool { return ip != h.ip }
func (h heldHealth) Held(_ string, ip netip.Addr) bool    { return ip == h.ip }
func (h heldHealth) PassiveHold(_ string, ip netip.Addr) (string, time.Time, bool) {
	if ip != h.ip {
		return "", time.Time{}, false
	}
	return "held down by passive detection until 2026-12-03T18:00:30Z: 5 unanswered SYNs in 10s", h.until, true
}

// TestStatusPassiveHold: a backend held down by passive detection shows
// as forwarding "held" with the reason and its end in the status, and as
// dsrlb_backend_passive_held 1 in the metrics.
func TestStatusPassiveHold(t *testing.T) {
	f := newFixture(t, testToken)
	hv := heldHealth{ip: netip.MustParseAddr("192.0.2.21"), until: time.Date(2026, 12, 3, 18, 0, 30, 0, time.UTC)}
	f.store.SetHealth(hv)
	f.store.Recompile()
	f.srv = New(Options{Store: f.store, Token: testToken, Stats: f.stats, Log: zerolog.Nop(), Health: hv})
	got := decodeJSON[v1.Status](t, f.do("GET", "/api/v1/status", ""))
	b := got.Services[0].Backends[0]
	if b.IP != "192.0.2.21" || b.Forwarding != "held" || b.Health != "unhealthy" ||
		b.Passive != "held down by passive detection until 2026-12-03T18:00:30Z: 5 unanswered SYNs in 10s" ||
		b.HeldUntil == nil || !b.HeldUntil.Equal(hv.until) {
		t.Errorf("held backend status: got %+v", b)
	}
	if o := got.Services[1].Backends[0]; o.Passive != "" || o.HeldUntil != nil || o.Forwarding != "active" {
		t.Errorf("other backend status: got %+v", o)
	}
	if got.Services[0].Usable != 0 {
		t.Errorf("usable backends of web: got %d, want 0 (held, and .22 unresolved)", got.Services[0].Usable)
	}
	metrics := f.do("GET", "/metrics", "").Body.String()
	for _, want := range []string{
		`dsrlb_backend_passive_held{backend="192.0.2.21",service="web"} 1`,
		`dsrlb_backend_passive_held{backend="192.0.2.22",service="web"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics: no %s", want)
		}
	}
}
