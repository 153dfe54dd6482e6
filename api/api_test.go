package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
)

const testToken = "test-token-0123456789"

func ptr[T any](v T) *T { return &v }

// baseConfig is a minimal valid config with two services: web (l2, health
// checked, one backend with a static neighbour and one unresolved) and dns
// (ipip, backend behind the gateway).
func baseConfig() *control.Config {
	return &control.Config{
		Dataplane: control.Dataplane{Ports: []control.Port{{Name: "eth0", Device: "net_null0", IP: "192.0.2.10/24", Gateway: "192.0.2.1"}}},
		Neighbors: []control.Neighbor{{IP: "192.0.2.1", MAC: "02:00:00:00:00:01"}, {IP: "192.0.2.21", MAC: "02:00:00:00:00:21"}},
		Services: []control.Service{
			{Name: "web", VIP: "198.51.100.1", Protocol: "tcp", Port: 80, Mode: "l2",
				Backends: []control.Backend{{IP: "192.0.2.21"}, {IP: "192.0.2.22", Weight: ptr(2)}},
				Health:   &control.Health{Type: "tcp"}},
			{Name: "dns", VIP: "198.51.100.2", Protocol: "udp", Port: 53, Mode: "ipip",
				Backends: []control.Backend{{IP: "203.0.113.5"}}},
		},
	}
}

type fakeStats struct{ workers []pipeline.Counters }

func (f *fakeStats) Counters() []pipeline.Counters { return f.workers }

type fakeHealth map[netip.Addr]bool

func (h fakeHealth) Healthy(_ string, ip netip.Addr) bool { return h[ip] }

// LastProbe: healthy backends passed their last probe, the others timed
// out through the VIP.
func (h fakeHealth) LastProbe(_ string, ip netip.Addr) (string, string, bool) {
	if h[ip] {
		return "ok", "", true
	}
	return "timeout after 1s", "no answer from the VIP through l2: check " + ip.String(), true
}

type fakeAnnouncer struct{}

func (fakeAnnouncer) Status(vip netip.Addr) (bool, string) {
	if vip == netip.MustParseAddr("198.51.100.1") {
		return true, "2 healthy backends >= min_healthy 1"
	}
	return false, "bgp session down"
}

type fixture struct {
	t     *testing.T
	path  string
	store *control.Store
	srv   *Server
	stats *fakeStats
	logs  *bytes.Buffer
	// events is the bus the server publishes accepted changes to.
	events *control.Events
}

func newFixture(t *testing.T, token string) *fixture {
	t.Helper()
	f := &fixture{t: t, path: filepath.Join(t.TempDir(), "state.json"), stats: &fakeStats{}, logs: &bytes.Buffer{},
		events: control.NewEvents(control.DefaultEventHistory)}
	f.store = f.newStore()
	f.srv = New(Options{
		Store: f.store, Token: token, Stats: f.stats, Log: zerolog.New(f.logs),
		Health: fakeHealth{netip.MustParseAddr("192.0.2.21"): true}, Announcer: fakeAnnouncer{},
		Events: f.events,
	})
	return f
}

// newStore opens a store over the fixture's state file.
func (f *fixture) newStore() *control.Store {
	f.t.Helper()
	s, err := control.NewStore(baseConfig(), control.StoreOptions{StatePath: f.path, Log: zerolog.Nop()})
	if err != nil {
		f.t.Fatalf("NewStore: %v", err)
	}
	return s
}

// header returns a request option setting (or, with v "", deleting) a header.
func header(k, v string) func(*http.Request) {
	return func(r *http.Request) {
		if v == "" {
			r.Header.Del(k)
			return
		}
		r.Header.Set(k, v)
	}
}

// do sends a request with the test token and, for a body, JSON content type.
func (f *fixture) do(method, path, body string, opts ...func(*http.Request)) *httptest.ResponseRecorder {
	f.t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(w, r)
	return w
}

// state is everything a rejected request must leave alone.
type state struct {
	cfg  *control.Config
	file []byte
	gen  uint64
}

func (f *fixture) state() state {
	f.t.Helper()
	b, err := os.ReadFile(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	return state{f.store.Config(), b, f.store.Generation()}
}

// checkStateFile checks that the state file is valid, validates with the
// base config and holds the store's services.
func (f *fixture) checkStateFile() {
	f.t.Helper()
	st, err := control.ReadState(f.path)
	if err != nil {
		f.t.Fatalf("state file: %v", err)
	}
	cfg := baseConfig()
	cfg.Services = st.Services
	if _, err := cfg.Validate(); err != nil {
		f.t.Fatalf("state file does not validate: %v", err)
	}
	if got, want := cfg.Clone().Services, f.store.Config().Services; !reflect.DeepEqual(got, want) {
		f.t.Fatalf("state file services = %+v, want %+v", got, want)
	}
}

func decodeJSON[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %s: %v", w.Body, err)
	}
	return v
}

func TestChanges(t *testing.T) {
	f := newFixture(t, testToken)
	svc := control.Service{Name: "api", VIP: "198.51.100.3", Protocol: "tcp", Port: 443, Mode: "gre",
		Backends: []control.Backend{{IP: "203.0.113.7", Weight: ptr(5)}}}
	svcJSON, _ := json.Marshal(svc)
	steps := []struct {
		desc, method, path, body string
		want                     int
		check                    func(w *httptest.ResponseRecorder, cfg *control.Config)
	}{
		{"create service", "POST", "/api/v1/services", string(svcJSON), http.StatusCreated,
			func(w *httptest.ResponseRecorder, cfg *control.Config) {
				if got := decodeJSON[control.Service](t, w); !reflect.DeepEqual(got, svc) {
					t.Errorf("response = %+v, want %+v", got, svc)
				}
				if got, _ := cfg.Service("api"); !reflect.DeepEqual(got, svc) {
					t.Errorf("stored = %+v, want %+v", got, svc)
				}
			}},
		{"replace service, name from path", "PUT", "/api/v1/services/api",
			`{"vip":"198.51.100.3","protocol":"tcp","port":8443,"mode":"gre","backends":[{"ip":"203.0.113.7"}]}`, http.StatusOK,
			func(_ *httptest.ResponseRecorder, cfg *control.Config) {
				if got, _ := cfg.Service("api"); got.Port != 8443 || got.Backends[0].Weight != nil || cfg.ServiceIndex("api") != 2 {
					t.Errorf("stored = %+v", got)
				}
			}},
		{"replace service, same name in body", "PUT", "/api/v1/services/api",
			`{"name":"api","vip":"198.51.100.3","protocol":"tcp","port":443,"mode":"gre","backends":[]}`, http.StatusOK, nil},
		{"add backend", "POST", "/api/v1/services/web/backends", `{"ip":"192.0.2.23","weight":7,"mac":"02:00:00:00:00:23"}`, http.StatusCreated,
			func(w *httptest.ResponseRecorder, cfg *control.Config) {
				want := control.Backend{IP: "192.0.2.23", Weight: ptr(7), MAC: "02:00:00:00:00:23"}
				if got := decodeJSON[control.Backend](t, w); !reflect.DeepEqual(got, want) {
					t.Errorf("response = %+v, want %+v", got, want)
				}
				if got, _ := cfg.Service("web"); len(got.Backends) != 3 || !reflect.DeepEqual(got.Backends[2], want) {
					t.Errorf("stored = %+v", got.Backends)
				}
			}},
		{"patch weight", "PATCH", "/api/v1/services/web/backends/192.0.2.23", `{"weight":0}`, http.StatusOK,
			func(w *httptest.ResponseRecorder, cfg *control.Config) {
				if got := decodeJSON[control.Backend](t, w); *got.Weight != 0 || got.State != "" {
					t.Errorf("response = %+v", got)
				}
			}},
		{"patch state", "PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"state":"drain"}`, http.StatusOK,
			func(_ *httptest.ResponseRecorder, cfg *control.Config) {
				if got, _ := cfg.Service("web"); got.Backends[0].State != "drain" || got.Backends[0].Weight != nil {
					t.Errorf("stored = %+v", got.Backends[0])
				}
			}},
		{"patch both", "PATCH", "/api/v1/services/web/backends/192.0.2.23", `{"weight":3,"state":"enabled"}`, http.StatusOK,
			func(_ *httptest.ResponseRecorder, cfg *control.Config) {
				if got, _ := cfg.Service("web"); *got.Backends[2].Weight != 3 || got.Backends[2].State != "enabled" {
					t.Errorf("stored = %+v", got.Backends[2])
				}
			}},
		{"delete backend", "DELETE", "/api/v1/services/web/backends/192.0.2.23", "", http.StatusNoContent,
			func(w *httptest.ResponseRecorder, cfg *control.Config) {
				if got, _ := cfg.Service("web"); len(got.Backends) != 2 || w.Body.Len() != 0 {
					t.Errorf("stored = %+v, body %q", got.Backends, w.Body)
				}
			}},
		{"delete service", "DELETE", "/api/v1/services/api", "", http.StatusNoContent,
			func(_ *httptest.ResponseRecorder, cfg *control.Config) {
				if cfg.ServiceIndex("api") >= 0 || len(cfg.Services) != 2 {
					t.Errorf("services = %+v", cfg.Services)
				}
			}},
	}
	for _, s := range steps {
		t.Run(s.desc, func(t *testing.T) {
			gen := f.store.Generation()
			w := f.do(s.method, s.path, s.body)
			if w.Code != s.want {
				t.Fatalf("%s %s = %d %s, want %d", s.method, s.path, w.Code, w.Body, s.want)
			}
			if got := f.store.Generation(); got != gen+1 {
				t.Errorf("generation = %d, want %d", got, gen+1)
			}
			f.checkStateFile()
			if s.check != nil {
				s.check(w, f.store.Config())
			}
		})
	}
	if acc, rej := f.store.Changes(); acc != uint64(len(steps)) || rej != 0 {
		t.Errorf("changes = %d accepted, %d rejected; want %d, 0", acc, rej, len(steps))
	}
	// Every accepted change is logged with its event and object.
	logs := f.logs.String()
	for _, want := range []string{`"event":"service_create","service":"api","backend":""`, `"event":"backend_update","service":"web","backend":"192.0.2.21"`,
		`"event":"service_delete","service":"api"`, `"message":"change accepted"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}

	t.Run("restart", func(t *testing.T) {
		f.do("PATCH", "/api/v1/services/web/backends/192.0.2.22", `{"weight":9,"state":"disabled"}`)
		before, _ := os.ReadFile(f.path)
		again := f.newStore()
		if got, want := again.Config(), f.store.Config(); !reflect.DeepEqual(got, want) {
			t.Errorf("after restart config = %+v, want %+v", got, want)
		}
		if after, _ := os.ReadFile(f.path); !bytes.Equal(before, after) {
			t.Errorf("state file changed by restart:\n%s\nwant\n%s", after, before)
		}
	})
}

func TestReads(t *testing.T) {
	f := newFixture(t, testToken)
	w := f.do("GET", "/api/v1/services", "")
	if got, want := decodeJSON[v1.ServiceList](t, w).Services, f.store.Config().Services; w.Code != 200 || !reflect.DeepEqual(got, want) {
		t.Errorf("GET services = %d %+v, want %+v", w.Code, got, want)
	}
	w = f.do("GET", "/api/v1/services/dns", "")
	if got, want := decodeJSON[control.Service](t, w), f.store.Config().Services[1]; w.Code != 200 || !reflect.DeepEqual(got, want) {
		t.Errorf("GET services/dns = %d %+v, want %+v", w.Code, got, want)
	}
	// Reads need no token, even when none is configured.
	ro := newFixture(t, "")
	for _, p := range []string{"/api/v1/services", "/api/v1/services/web", "/api/v1/status", "/api/v1/stats", "/api/v1/openapi.json", "/metrics", "/healthz"} {
		if w := ro.do("GET", p, "", header("Authorization", "")); w.Code != http.StatusOK {
			t.Errorf("GET %s without token = %d %s, want 200", p, w.Code, w.Body)
		}
	}
	// An empty service list is [], not null.
	if err := f.store.Update(func(c *control.Config) error { c.Services = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if w := f.do("GET", "/api/v1/services", ""); strings.TrimSpace(w.Body.String()) != `{"services":[]}` {
		t.Errorf("empty list = %s", w.Body)
	}
}

func TestHealthz(t *testing.T) {
	f := newFixture(t, testToken)
	w := f.do("GET", "/healthz", "")
	got := decodeJSON[map[string]any](t, w)
	if w.Code != 200 || got["status"] != "ok" || got["generation"] != float64(f.store.Generation()) {
		t.Errorf("healthz = %d %v", w.Code, got)
	}
}

func TestRejections(t *testing.T) {
	big := `{"name":"x","vip":"198.51.100.9","protocol":"tcp","port":1,"mode":"l2","backends":[],"pad":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	newSvc := func(vip, proto string, port int, extra string) string {
		return fmt.Sprintf(`{"name":"api","vip":%q,"protocol":%q,"port":%d,"mode":"ipip","backends":[{"ip":"203.0.113.9"}]%s}`, vip, proto, port, extra)
	}
	cases := []struct {
		desc, method, path, body string
		opts                     []func(*http.Request)
		status                   int
		code, field              string
	}{
		{"invalid JSON", "POST", "/api/v1/services", `{"name":`, nil, 400, v1.CodeInvalidJSON, ""},
		{"empty body", "POST", "/api/v1/services", ``, []func(*http.Request){header("Content-Type", "application/json")}, 400, v1.CodeInvalidJSON, ""},
		{"trailing data", "POST", "/api/v1/services", newSvc("198.51.100.3", "tcp", 80, "") + `{}`, nil, 400, v1.CodeInvalidJSON, ""},
		{"wrong type", "POST", "/api/v1/services", `{"name":5}`, nil, 400, v1.CodeInvalidJSON, "name"},
		{"bad duration", "POST", "/api/v1/services", newSvc("198.51.100.3", "tcp", 80, `,"health":{"type":"tcp","interval":"soon"}`), nil, 400, v1.CodeInvalidJSON, ""},
		{"unknown field", "POST", "/api/v1/services", newSvc("198.51.100.3", "tcp", 80, `,"bogus":1`), nil, 400, v1.CodeUnknownField, "bogus"},
		{"unknown backend field", "POST", "/api/v1/services/web/backends", `{"ip":"192.0.2.30","wieght":3}`, nil, 400, v1.CodeUnknownField, "wieght"},
		{"unknown patch field", "PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"weight":1,"drain":true}`, nil, 400, v1.CodeUnknownField, "drain"},
		{"bad VIP", "POST", "/api/v1/services", newSvc("198.51.100.300", "tcp", 80, ""), nil, 400, v1.CodeValidation, "services[api].vip"},
		{"IPv6 VIP", "POST", "/api/v1/services", newSvc("2001:db8::1", "tcp", 80, ""), nil, 400, v1.CodeValidation, "services[api].vip"},
		{"VIP is a port address", "POST", "/api/v1/services", newSvc("192.0.2.10", "tcp", 80, ""), nil, 400, v1.CodeValidation, "services[api].vip"},
		{"bad backend IP", "POST", "/api/v1/services/web/backends", `{"ip":"192.0.2.x"}`, nil, 400, v1.CodeValidation, "services[web].backends[2].ip"},
		{"bad backend MAC", "POST", "/api/v1/services/web/backends", `{"ip":"192.0.2.30","mac":"02:00"}`, nil, 400, v1.CodeValidation, "services[web].backends[192.0.2.30].mac"},
		{"l2 backend off subnet", "POST", "/api/v1/services/web/backends", `{"ip":"203.0.113.30"}`, nil, 400, v1.CodeValidation, "services[web].backends[203.0.113.30].ip"},
		{"bad mode", "PUT", "/api/v1/services/dns", `{"vip":"198.51.100.2","protocol":"udp","port":53,"mode":"nat","backends":[]}`, nil, 400, v1.CodeValidation, "services[dns].mode"},
		{"bad name", "POST", "/api/v1/services", `{"name":"-x","vip":"198.51.100.3","protocol":"tcp","port":1,"mode":"l2","backends":[]}`, nil, 400, v1.CodeValidation, "services[-x].name"},
		{"port too large", "POST", "/api/v1/services", newSvc("198.51.100.3", "tcp", 65536, ""), nil, 400, v1.CodeValidation, "services[api].port"},
		{"port negative", "PUT", "/api/v1/services/dns", `{"vip":"198.51.100.2","protocol":"udp","port":-1,"mode":"ipip","backends":[]}`, nil, 400, v1.CodeValidation, "services[dns].port"},
		{"weight too large", "POST", "/api/v1/services/web/backends", `{"ip":"192.0.2.30","weight":1001}`, nil, 400, v1.CodeValidation, "services[web].backends[192.0.2.30].weight"},
		{"patch weight negative", "PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"weight":-1}`, nil, 400, v1.CodeValidation, "services[web].backends[192.0.2.21].weight"},
		{"patch bad state", "PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"state":"off"}`, nil, 400, v1.CodeValidation, "services[web].backends[192.0.2.21].state"},
		{"patch nothing", "PATCH", "/api/v1/services/web/backends/192.0.2.21", `{}`, nil, 400, v1.CodeValidation, ""},
		{"patch bad path IP", "PATCH", "/api/v1/services/web/backends/nope", `{"weight":1}`, nil, 400, v1.CodeInvalidPath, "ip"},
		{"delete bad path IP", "DELETE", "/api/v1/services/web/backends/1.2.3", ``, nil, 400, v1.CodeInvalidPath, "ip"},
		{"PUT name mismatch", "PUT", "/api/v1/services/dns", `{"name":"web","vip":"198.51.100.2","protocol":"udp","port":53,"mode":"ipip","backends":[]}`, nil, 400, v1.CodeValidation, "name"},
		{"VIP clash on create", "POST", "/api/v1/services", newSvc("198.51.100.1", "tcp", 80, ""), nil, 409, v1.CodeConflict, "services[api].vip"},
		{"VIP clash on replace", "PUT", "/api/v1/services/dns", `{"vip":"198.51.100.1","protocol":"tcp","port":80,"mode":"ipip","backends":[]}`, nil, 409, v1.CodeConflict, "services[dns].vip"},
		{"duplicate service", "POST", "/api/v1/services", `{"name":"web","vip":"198.51.100.9","protocol":"tcp","port":80,"mode":"l2","backends":[]}`, nil, 409, v1.CodeConflict, "services[web].name"},
		{"duplicate backend", "POST", "/api/v1/services/web/backends", `{"ip":"192.0.2.22"}`, nil, 409, v1.CodeConflict, "services[web].backends[192.0.2.22].ip"},
		{"body too large", "POST", "/api/v1/services", big, nil, 413, v1.CodeTooLarge, ""},
		{"body too large, chunked", "POST", "/api/v1/services", big, []func(*http.Request){func(r *http.Request) { r.ContentLength = -1 }}, 413, v1.CodeTooLarge, ""},
		{"wrong content type", "POST", "/api/v1/services", newSvc("198.51.100.3", "tcp", 80, ""), []func(*http.Request){header("Content-Type", "text/plain")}, 415, v1.CodeMediaType, ""},
		{"no content type", "PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"weight":1}`, []func(*http.Request){header("Content-Type", "")}, 415, v1.CodeMediaType, ""},
		{"missing token", "POST", "/api/v1/services", newSvc("198.51.100.3", "tcp", 80, ""), []func(*http.Request){header("Authorization", "")}, 401, v1.CodeUnauthorized, ""},
		{"wrong token", "DELETE", "/api/v1/services/web", "", []func(*http.Request){header("Authorization", "Bearer "+testToken+"x")}, 401, v1.CodeUnauthorized, ""},
		{"wrong scheme", "PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"weight":1}`, []func(*http.Request){header("Authorization", "Basic "+testToken)}, 401, v1.CodeUnauthorized, ""},
		{"empty bearer", "PUT", "/api/v1/services/web", `{}`, []func(*http.Request){header("Authorization", "Bearer ")}, 401, v1.CodeUnauthorized, ""},
		{"get missing service", "GET", "/api/v1/services/nope", "", nil, 404, v1.CodeNotFound, ""},
		{"replace missing service", "PUT", "/api/v1/services/nope", `{"vip":"198.51.100.9","protocol":"tcp","port":80,"mode":"l2","backends":[]}`, nil, 404, v1.CodeNotFound, ""},
		{"delete missing service", "DELETE", "/api/v1/services/nope", "", nil, 404, v1.CodeNotFound, ""},
		{"backend of missing service", "POST", "/api/v1/services/nope/backends", `{"ip":"192.0.2.30"}`, nil, 404, v1.CodeNotFound, ""},
		{"patch missing backend", "PATCH", "/api/v1/services/web/backends/192.0.2.99", `{"weight":1}`, nil, 404, v1.CodeNotFound, ""},
		{"delete missing backend", "DELETE", "/api/v1/services/web/backends/192.0.2.99", "", nil, 404, v1.CodeNotFound, ""},
		{"delete backend of missing service", "DELETE", "/api/v1/services/nope/backends/192.0.2.21", "", nil, 404, v1.CodeNotFound, ""},
		{"unknown route", "GET", "/api/v1/nope", "", nil, 404, v1.CodeNotFound, ""},
		{"method not allowed", "PATCH", "/api/v1/services", `{}`, nil, 405, v1.CodeMethodNotAllowed, ""},
	}
	f := newFixture(t, testToken)
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			before := f.state()
			w := f.do(c.method, c.path, c.body, c.opts...)
			if w.Code != c.status {
				t.Errorf("%s %s = %d %s, want %d", c.method, c.path, w.Code, w.Body, c.status)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q", ct)
			}
			doc := decodeJSON[v1.ErrorResponse](t, w)
			e := doc.Error
			if e.Code != c.code || e.Field != c.field || e.Message == "" {
				t.Errorf("error = %+v, want code %q field %q", e, c.code, c.field)
			}
			if len(doc.Errors) == 0 || doc.Errors[0] != e {
				t.Errorf("errors = %+v, want a list starting with error %+v", doc.Errors, e)
			}
			if c.status == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			after := f.state()
			if !reflect.DeepEqual(after.cfg, before.cfg) || !bytes.Equal(after.file, before.file) || after.gen != before.gen {
				t.Errorf("state changed by a rejected request")
			}
		})
	}
	if acc, _ := f.store.Changes(); acc != 0 {
		t.Errorf("%d changes accepted, want 0", acc)
	}
	if logs := f.logs.String(); !strings.Contains(logs, `"reason":"invalid bearer token","event":"service_delete","service":"web"`) {
		t.Errorf("rejected change not logged with reason:\n%s", logs)
	}
}

func TestNoTokenIsReadOnly(t *testing.T) {
	f := newFixture(t, "")
	before := f.state()
	for _, tok := range []string{"", "Bearer ", "Bearer anything"} {
		w := f.do("DELETE", "/api/v1/services/web", "", header("Authorization", tok))
		e := decodeJSON[v1.ErrorResponse](t, w).Error
		if w.Code != http.StatusForbidden || e.Code != v1.CodeForbidden || !strings.Contains(e.Message, "DSRLB_API_TOKEN") {
			t.Errorf("Authorization %q: %d %+v, want 403 %s", tok, w.Code, e, v1.CodeForbidden)
		}
	}
	if after := f.state(); !reflect.DeepEqual(after, before) {
		t.Error("state changed")
	}
}

// setCounters gives the fake two workers with counters for the fixture's
// objects, by their snapshot IDs.
func (f *fixture) setCounters() {
	snap := f.store.Snapshots().Load()
	web, dns := snap.FindService("web"), snap.FindService("dns")
	for w := range 2 {
		c := pipeline.Counters{
			RxPackets: 100, RxBytes: 10000, TxPackets: 90, TxBytes: 9000, ToKernel: 5, FromKernel: 4,
			FlowEntries: 10, FlowHits: 80, FlowMisses: 10, FlowEvictions: 1, Polls: 100, BusyPolls: uint64(50 * (w + 1)),
			Services: make([]pipeline.ServiceCounters, snap.MaxServiceID+1),
			Backends: make([]pipeline.BackendCounters, snap.MaxBackendID+1),
		}
		c.L4ChecksumsCompleted = 3
		c.GSOSegmented, c.GSOSegments = 1, 30
		c.Drops[pipeline.DropNoService] = uint64(3 + w)
		c.Services[web.ID] = pipeline.ServiceCounters{Packets: 60, Bytes: 6000}
		c.Services[dns.ID] = pipeline.ServiceCounters{Packets: 30, Bytes: 3000, NoBackend: 2}
		c.Backends[web.Backends[0].ID] = pipeline.BackendCounters{Packets: 60, Bytes: 6000, NewFlows: 7}
		c.Backends[dns.Backends[0].ID] = pipeline.BackendCounters{Packets: 30, Bytes: 3000, NewFlows: 3}
		f.stats.workers = append(f.stats.workers, c)
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t, testToken)
	f.setCounters()
	w := f.do("GET", "/api/v1/status", "")
	got := decodeJSON[v1.Status](t, w)
	want := v1.Status{Generation: f.store.Generation(), BGP: []v1.BGPSession{}, Services: []v1.ServiceStatus{
		{Name: "web", VIP: "198.51.100.1", Protocol: "tcp", Port: 80, Mode: "l2", MinHealthy: 1, Usable: 1,
			Announced: true, Reason: "2 healthy backends >= min_healthy 1",
			Backends: []v1.BackendStatus{
				{IP: "192.0.2.21", Weight: 1, State: "enabled", Forwarding: "active", Health: "healthy",
					NextHop: "192.0.2.21", NextHopMAC: "02:00:00:00:00:21", NewFlows: 14,
					Probe: &v1.BackendProbe{Type: "tcp", Via: "vip", Target: "198.51.100.1:80 through l2 to 192.0.2.21", LastResult: "ok"}},
				// No MAC for .22 yet: the snapshot takes it down.
				{IP: "192.0.2.22", Weight: 2, State: "enabled", Forwarding: "down", Health: "unhealthy", NextHop: "192.0.2.22",
					Probe:        &v1.BackendProbe{Type: "tcp", Via: "vip", Target: "198.51.100.1:80 through l2 to 192.0.2.22", LastResult: "timeout after 1s"},
					HealthReason: "no answer from the VIP through l2: check 192.0.2.22"},
			}},
		{Name: "dns", VIP: "198.51.100.2", Protocol: "udp", Port: 53, Mode: "ipip", MinHealthy: 1, Usable: 1,
			Reason: "bgp session down",
			Backends: []v1.BackendStatus{
				{IP: "203.0.113.5", Weight: 1, State: "enabled", Forwarding: "active", Health: "unchecked",
					NextHop: "192.0.2.1", NextHopMAC: "02:00:00:00:00:01", NewFlows: 6},
			}},
	}}
	if w.Code != 200 || !reflect.DeepEqual(got, want) {
		t.Errorf("status = %d\n%+v\nwant\n%+v", w.Code, got, want)
	}

	// Without optional dependencies: health unknown, not announced; drain
	// shows in both the config state and the snapshot.
	if err := f.store.Update(func(c *control.Config) error {
		_, err := c.PatchBackend("web", netip.MustParseAddr("192.0.2.21"), v1.BackendPatch{State: ptr("drain")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	bare := New(Options{Store: f.store, Log: zerolog.Nop()})
	w = httptest.NewRecorder()
	bare.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/status", nil))
	st := decodeJSON[v1.Status](t, w)
	b := st.Services[0].Backends[0]
	if st.Services[0].Announced || st.Services[0].Reason != "no BGP speaker" || b.Health != "unknown" ||
		b.State != "drain" || b.Forwarding != "drain" || b.NewFlows != 0 || st.Services[0].Usable != 0 {
		t.Errorf("bare status = %+v", st.Services[0])
	}
}

func TestStats(t *testing.T) {
	f := newFixture(t, testToken)
	f.setCounters()
	f.do("PATCH", "/api/v1/services/web/backends/192.0.2.22", `{"weight":3}`)
	f.do("PATCH", "/api/v1/services/web/backends/192.0.2.22", `{"weight":3000}`)
	w := f.do("GET", "/api/v1/stats", "")
	got := decodeJSON[v1.Stats](t, w)
	if w.Code != 200 {
		t.Fatalf("stats = %d %s", w.Code, w.Body)
	}
	wantTotals := v1.Totals{RxPackets: 200, RxBytes: 20000, TxPackets: 180, TxBytes: 18000, ToKernel: 10, FromKernel: 8, Dropped: 7,
		L4ChecksumsCompleted: 6, GSOSegmented: 2, GSOSegments: 60}
	if got.Totals != wantTotals {
		t.Errorf("totals = %+v, want %+v", got.Totals, wantTotals)
	}
	if len(got.Drops) != int(pipeline.NumDropReasons)-1 || got.Drops["no_service"] != 7 || got.Drops["ttl_exceeded"] != 0 {
		t.Errorf("drops = %v", got.Drops)
	}
	if want := (v1.FlowStats{Entries: 20, Hits: 160, Misses: 20, Evictions: 2}); got.Flows != want {
		t.Errorf("flows = %+v, want %+v", got.Flows, want)
	}
	wantSvc := []v1.ServiceStats{
		{Name: "web", Packets: 120, Bytes: 12000, Backends: []v1.BackendStats{
			{IP: "192.0.2.21", Packets: 120, Bytes: 12000, NewFlows: 14}, {IP: "192.0.2.22"}}},
		{Name: "dns", Packets: 60, Bytes: 6000, NoBackend: 4, Backends: []v1.BackendStats{
			{IP: "203.0.113.5", Packets: 60, Bytes: 6000, NewFlows: 6}}},
	}
	if !reflect.DeepEqual(got.Services, wantSvc) {
		t.Errorf("services = %+v, want %+v", got.Services, wantSvc)
	}
	if len(got.Workers) != 2 || got.Workers[0].BusyRatio != 0.5 || got.Workers[1].BusyRatio != 1 || got.Workers[1].Dropped != 4 || got.Workers[1].Worker != 1 {
		t.Errorf("workers = %+v", got.Workers)
	}
	if got.Changes == nil || *got.Changes != (v1.Changes{Accepted: 1, Rejected: 1}) || got.Generation != f.store.Generation() {
		t.Errorf("changes = %+v, generation %d", got.Changes, got.Generation)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, testToken)
	f.setCounters()
	f.do("DELETE", "/api/v1/services/nope", "")
	w := f.do("GET", "/metrics", "")
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("metrics = %d", w.Code)
	}
	for _, want := range []string{
		`dsrlb_service_packets_total{service="web"} 120`,
		`dsrlb_service_bytes_total{service="dns"} 6000`,
		`dsrlb_service_no_backend_drops_total{service="dns"} 4`,
		`dsrlb_backend_packets_total{backend="192.0.2.21",service="web"} 120`,
		`dsrlb_backend_bytes_total{backend="203.0.113.5",service="dns"} 6000`,
		`dsrlb_backend_new_flows_total{backend="192.0.2.22",service="web"} 0`,
		`dsrlb_drops_total{reason="no_service"} 7`,
		`dsrlb_drops_total{reason="tx_full"} 0`,
		`dsrlb_rx_packets_total 200`,
		`dsrlb_tx_bytes_total 18000`,
		`dsrlb_to_kernel_packets_total 10`,
		`dsrlb_from_kernel_packets_total 8`,
		`dsrlb_l4_checksums_completed_total 6`,
		`dsrlb_gso_superframes_segmented_total 2`,
		`dsrlb_gso_segments_total 60`,
		`dsrlb_flow_entries 20`,
		`dsrlb_flow_hits_total 160`,
		`dsrlb_flow_misses_total 20`,
		`dsrlb_flow_evictions_total 2`,
		`dsrlb_worker_busy_ratio{worker="0"} 0.5`,
		`dsrlb_worker_busy_ratio{worker="1"} 1`,
		`dsrlb_worker_polls_total{worker="1"} 100`,
		fmt.Sprintf(`dsrlb_snapshot_generation %d`, f.store.Generation()),
		`dsrlb_config_changes_total{result="accepted"} 0`,
		`dsrlb_config_changes_total{result="rejected"} 1`,
		`go_goroutines`,
		`process_cpu_seconds_total`,
	} {
		if strings.Contains(want, " ") {
			want += "\n" // the whole value
		}
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, `reason="none"`) {
		t.Error(`metrics export the "none" drop reason`)
	}
}

func TestOpenAPICoversRoutes(t *testing.T) {
	f := newFixture(t, testToken)
	w := f.do("GET", "/api/v1/openapi.json", "")
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi.json: %v, version %q", err, doc.OpenAPI)
	}
	routes := map[string]bool{}
	for _, r := range f.srv.handler.Routes() {
		p := r.Path
		for _, param := range []string{"name", "ip", "id"} {
			p = strings.ReplaceAll(p, ":"+param, "{"+param+"}")
		}
		key := strings.ToLower(r.Method) + " " + p
		routes[key] = true
		if _, ok := doc.Paths[p][strings.ToLower(r.Method)]; !ok {
			t.Errorf("route %s is not documented", key)
		}
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if m != "parameters" && !routes[m+" "+p] {
				t.Errorf("documented %s %s has no route", m, p)
			}
		}
	}
}

func TestServe(t *testing.T) {
	f := newFixture(t, testToken)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz = %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v, want nil after cancel", err)
	}
	if err := f.srv.Run(context.Background(), "127.0.0.1:notaport"); err == nil {
		t.Error("Run on a bad address succeeded")
	}
}

// TestReplaceServices: PUT /api/v1/services replaces the whole list as one
// change; a list with any invalid service changes nothing.
func TestReplaceServices(t *testing.T) {
	f := newFixture(t, testToken)
	put := func(svcs []control.Service) *httptest.ResponseRecorder {
		b, _ := json.Marshal(v1.ServiceList{Services: svcs})
		return f.do("PUT", "/api/v1/services", string(b))
	}
	base := f.store.Config().Services
	gen := f.store.Generation()

	// Swap the VIPs of web and dns (which one service at a time cannot
	// do: each step would clash) and add a service.
	web, dns := base[0].Clone(), base[1].Clone()
	web.VIP, dns.VIP = dns.VIP, web.VIP
	api := control.Service{Name: "api", VIP: "198.51.100.3", Protocol: "tcp", Port: 443, Mode: "gre",
		Backends: []control.Backend{{IP: "203.0.113.7"}}}
	want := []control.Service{web, dns, api}
	w := put(want)
	if w.Code != http.StatusOK {
		t.Fatalf("swap and add: %d %s", w.Code, w.Body)
	}
	if got := decodeJSON[v1.ServiceList](t, w).Services; !reflect.DeepEqual(got, f.store.Config().Services) {
		t.Errorf("answer %+v, stored %+v", got, f.store.Config().Services)
	}
	if got := f.store.Config().Services; !reflect.DeepEqual(got, want) {
		t.Errorf("services = %+v, want %+v", got, want)
	}
	if g := f.store.Generation(); g != gen+1 {
		t.Errorf("generation %d after one replace, want %d", g, gen+1)
	}
	f.checkStateFile()

	clash := web.Clone() // web's VIP, protocol and port under another name
	clash.Name = "web2"
	for _, tc := range []struct {
		desc  string
		svcs  []control.Service
		field string
	}{
		{"one invalid service", []control.Service{web, {Name: "bad", VIP: "198.51.100.300", Protocol: "tcp", Port: 1, Mode: "l2"}}, "services[bad].vip"},
		{"duplicate name", []control.Service{web, web}, "services[web].name"},
		{"VIP clash", []control.Service{web, clash}, "services[web2].vip"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := f.state()
			w := put(tc.svcs)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("%d %s, want 400", w.Code, w.Body)
			}
			if e := decodeJSON[v1.ErrorResponse](t, w).Error; e.Code != v1.CodeValidation || e.Field != tc.field {
				t.Errorf("error %+v, want %s on %s", e, v1.CodeValidation, tc.field)
			}
			if after := f.state(); !reflect.DeepEqual(before, after) {
				t.Errorf("a rejected replace changed the config, state file or generation")
			}
		})
	}

	if w := put(nil); w.Code != http.StatusOK || len(f.store.Config().Services) != 0 {
		t.Errorf("empty list: %d %s, %d services left", w.Code, w.Body, len(f.store.Config().Services))
	}
	if w := f.do("PUT", "/api/v1/services", `{"services":[]}`, header("Authorization", "")); w.Code != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", w.Code)
	}
}

// TestEveryErrorInOneAnswer: a change that does not validate is answered
// with every error of the resulting config, the first also as "error".
func TestEveryErrorInOneAnswer(t *testing.T) {
	f := newFixture(t, testToken)
	for _, tc := range []struct {
		desc, method, path, body string
		want                     []v1.Error
	}{
		{"one service, three errors", "POST", "/api/v1/services",
			`{"name":"api","vip":"198.51.100.300","protocol":"sctp","port":80,"mode":"ipip","backends":[{"ip":"203.0.113.9","weight":5000}]}`,
			[]v1.Error{
				{Code: v1.CodeValidation, Field: "services[api].vip", Message: `not an IPv4 address: "198.51.100.300"`},
				{Code: v1.CodeValidation, Field: "services[api].protocol", Message: `must be tcp or udp, got "sctp"`},
				{Code: v1.CodeValidation, Field: "services[api].backends[203.0.113.9].weight", Message: "must be 0..1000, got 5000"},
			}},
		{"every service replaced, two invalid", "PUT", "/api/v1/services",
			`{"services":[{"name":"web","vip":"198.51.100.1","protocol":"tcp","port":80,"mode":"l2","backends":[{"ip":"203.0.113.30"}]},` +
				`{"name":"dns","vip":"198.51.100.2","protocol":"udp","port":53,"mode":"ipip","backends":[{"ip":"203.0.113.5","state":"off"}]}]}`,
			[]v1.Error{
				{Code: v1.CodeValidation, Field: "services[web].backends[203.0.113.30].ip", Message: "l2 mode needs the backend on a port's subnet"},
				{Code: v1.CodeValidation, Field: "services[dns].backends[203.0.113.5].state", Message: `must be enabled, drain or disabled, got "off"`},
			}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := f.state()
			w := f.do(tc.method, tc.path, tc.body)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("%d %s, want 400", w.Code, w.Body)
			}
			doc := decodeJSON[v1.ErrorResponse](t, w)
			if !reflect.DeepEqual(doc.Errors, tc.want) {
				t.Errorf("errors:\n%+v\nwant:\n%+v", doc.Errors, tc.want)
			}
			if doc.Error != tc.want[0] {
				t.Errorf("error = %+v, want the first, %+v", doc.Error, tc.want[0])
			}
			if after := f.state(); !reflect.DeepEqual(before, after) {
				t.Error("a rejected change changed the config, state file or generation")
			}
		})
	}
	if logs := f.logs.String(); !strings.Contains(logs, `"reason":"services[api].vip: not an IPv4 address: \"198.51.100.300\"; services[api].protocol:`) {
		t.Errorf("the rejection is not logged with every reason:\n%s", logs)
	}
}
