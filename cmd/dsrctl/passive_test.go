package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// TestStatusPassive: get status lists the backends passive detection
// holds down, with the reason, once; get stats shows each backend's SYNs
// sent again and unanswered flows.
func TestStatusPassive(t *testing.T) {
	until := time.Date(2026, 12, 3, 18, 0, 30, 0, time.UTC)
	reason := "held down by passive detection until 2026-12-03T18:00:30Z: 5 unanswered SYNs in 10s"
	status := v1.Status{Services: []v1.ServiceStatus{{Name: "web", VIP: "198.51.100.1", Protocol: "tcp", Port: 80, Mode: "l2",
		Backends: []v1.BackendStatus{
			{IP: "192.0.2.21", State: "enabled", Forwarding: "held", Health: "unhealthy", Passive: reason, HeldUntil: &until},
			{IP: "192.0.2.22", State: "enabled", Forwarding: "active", Health: "healthy"},
		}}}}
	stats := v1.Stats{Drops: map[string]uint64{}, Services: []v1.ServiceStats{{Name: "web", Backends: []v1.BackendStats{
		{IP: "192.0.2.21", NewFlows: 40, SynRetransmits: 17, UnansweredFlows: 6}}}}, Changes: &v1.Changes{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/status":
			json.NewEncoder(w).Encode(status)
		case "/api/v1/stats":
			json.NewEncoder(w).Encode(stats)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	e := &env{t: t, vars: map[string]string{"DSRLB_API": srv.URL}}
	out := e.mustRun("get", "status")
	if !strings.Contains(out, "PASSIVE DETECTION") || strings.Count(out, reason) != 1 || !strings.Contains(out, "192.0.2.21  held") {
		t.Errorf("get status: want the hold once, with its reason:\n%s", out)
	}
	out = e.mustRun("get", "stats")
	if !strings.Contains(out, "SYN-RETRANSMITS  UNANSWERED-FLOWS") || !strings.Contains(out, "40         17               6") {
		t.Errorf("get stats: want SYNs sent again and unanswered flows per backend:\n%s", out)
	}
}
