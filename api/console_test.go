package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
)

// TestConsoleFiles: the console's page, script and style sheet are served
// from the embed, each with a policy that keeps the page to its origin.
func TestConsoleFiles(t *testing.T) {
	f := newFixture(t, testToken)
	for _, c := range []struct{ path, ctype, has string }{
		{"/", "text/html; charset=utf-8", `<script defer src="/console/console.js"></script>`},
		{"/console/console.js", "text/javascript; charset=utf-8", "/api/v1/status"},
		{"/console/console.css", "text/css; charset=utf-8", ".uplot"},
	} {
		w := f.do("GET", c.path, "")
		if w.Code != 200 || w.Header().Get("Content-Type") != c.ctype {
			t.Errorf("GET %s: %d %q, want 200 %q", c.path, w.Code, w.Header().Get("Content-Type"), c.ctype)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, csp)
		}
		if !strings.Contains(w.Body.String(), c.has) {
			t.Errorf("GET %s: body lacks %q", c.path, c.has)
		}
	}
}

// TestRatesAndHistory: without a History the rates are empty and the
// history 404; with one, both show what it sampled, and a configured
// object not sampled yet has an empty history, not a 404.
func TestRatesAndHistory(t *testing.T) {
	f := newFixture(t, testToken)
	var r v1.Rates
	if w := f.do("GET", "/api/v1/rates", ""); w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &r) != nil || r.Services == nil {
		t.Errorf("rates without a history: %d %s", w.Code, w.Body)
	}
	if w := f.do("GET", "/api/v1/history", ""); w.Code != 404 {
		t.Errorf("history without a History: %d, want 404", w.Code)
	}

	h := control.NewHistory(control.HistoryOptions{Source: func() (*pipeline.Snapshot, []pipeline.Counters) {
		return f.store.Snapshots().Load(), f.stats.Counters()
	}})
	f.srv = New(Options{Store: f.store, Token: testToken, Stats: f.stats, Log: zerolog.Nop(), History: h})
	if w := f.do("GET", "/api/v1/history?service=web", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"times":[]`) {
		t.Errorf("history of web before a sample: %d %s, want 200 and no times", w.Code, w.Body)
	}
	snap := f.store.Snapshots().Load()
	web := snap.FindService("web")
	var c pipeline.Counters
	c.Services = make([]pipeline.ServiceCounters, snap.MaxServiceID+1)
	c.Backends = make([]pipeline.BackendCounters, snap.MaxBackendID+1)
	f.stats.workers = []pipeline.Counters{c}
	t0 := time.Unix(1_800_000_000, 0)
	h.Sample(t0)
	c.Services[web.ID].Packets = 50
	c.Backends[web.Backends[0].ID] = pipeline.BackendCounters{Packets: 50, Bytes: 5000, NewFlows: 5}
	f.stats.workers = []pipeline.Counters{c}
	h.Sample(t0.Add(5 * time.Second))

	if w := f.do("GET", "/api/v1/rates", ""); w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &r) != nil || len(r.Services) != 2 ||
		r.Services[0].Packets != 10 || r.Services[0].Backends[0].Bits != 8000 {
		t.Errorf("rates: %d %s, want web at 10 packets/s, its first backend at 8000 bits/s", w.Code, w.Body)
	}
	ip := web.Backends[0].Addr.String()
	var hist v1.History
	w := f.do("GET", "/api/v1/history?service=web&backend="+ip, "")
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &hist) != nil {
		t.Fatalf("history of web/%s: %d %s", ip, w.Code, w.Body)
	}
	if hist.Object != "service web/backend "+ip || len(hist.Times) != 1 || len(hist.Series) != 3 || hist.Series[2].Values[0] != 1 {
		t.Errorf("history of web/%s: %+v, want one sample of 1 new flow/s", ip, hist)
	}
	for q, want := range map[string]int{
		"":                              200,
		"?service=nope":                 404,
		"?service=web&backend=10.9.9.9": 404,
		"?backend=" + ip:                400,
	} {
		if w := f.do("GET", "/api/v1/history"+q, ""); w.Code != want {
			t.Errorf("GET /api/v1/history%s: %d, want %d", q, w.Code, want)
		}
	}
}
