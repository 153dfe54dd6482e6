package main

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/dsrlb/dsrlb/api"
	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
)

const token = "dsrctl-test-token"

// services is an apply file using every service and backend field.
const services = `services:
  - name: web
    vip: 198.51.100.1
    protocol: tcp
    port: 80
    mode: l2
    backends:
      - ip: 192.0.2.21
        mac: "02:00:00:00:00:21"
      - ip: 192.0.2.22
        weight: 5
        state: drain
    min_healthy: 1
    health:
      type: http
      path: /healthz
      expect: [200, 204]
      interval: 1s
      timeout: 500ms
      rise: 3
      fall: 2
  - name: dns
    vip: 198.51.100.2
    protocol: udp
    port: 0
    mode: gre
    backends:
      - ip: 203.0.113.5
        weight: 0
`

type env struct {
	t      *testing.T
	store  *control.Store
	events *control.Events // keeps the latest 5
	vars   map[string]string
	dir    string
}

func newEnv(t *testing.T) *env {
	cfg := &control.Config{
		Dataplane: control.Dataplane{Ports: []control.Port{{Name: "eth0", Device: "net_null0", IP: "192.0.2.10/24", Gateway: "192.0.2.1"}}},
		Services: []control.Service{{Name: "old", VIP: "198.51.100.9", Protocol: "tcp", Port: 22, Mode: "ipip",
			Backends: []control.Backend{{IP: "203.0.113.9"}}}},
	}
	dir := t.TempDir()
	store, err := control.NewStore(cfg, control.StoreOptions{StatePath: filepath.Join(dir, "state.json"), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	events := control.NewEvents(5)
	srv := httptest.NewServer(api.New(api.Options{Store: store, Token: token, Log: zerolog.Nop(), Events: events}).Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, store: store, events: events, dir: dir, vars: map[string]string{"DSRLB_API": srv.URL, "DSRLB_API_TOKEN": token}}
}

// run runs dsrctl args and returns its exit code and output.
func (e *env) run(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	cmd := args[0]
	if _, ok := commands[cmd]; !ok {
		e.t.Fatalf("command %q not registered", cmd)
	}
	code := runAPI(cmd, args[1:], &out, &errOut, func(k string) string { return e.vars[k] })
	return code, out.String(), errOut.String()
}

// mustRun runs dsrctl args and fails unless it exits 0.
func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.run(args...)
	if code != 0 {
		e.t.Fatalf("dsrctl %s = exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (e *env) file(name, content string) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// normal makes services comparable (nil and empty slices alike).
func normal(svcs []control.Service) []control.Service {
	return (&control.Config{Services: svcs}).Clone().Services
}

func TestApplyRoundTrip(t *testing.T) {
	e := newEnv(t)
	f := e.file("services.yaml", services)
	var want v1.ServiceList
	if err := yaml.Unmarshal([]byte(services), &want); err != nil {
		t.Fatal(err)
	}

	if out := e.mustRun("apply", "-f", f); out != "service/web created\nservice/dns created\n" {
		t.Errorf("first apply printed %q", out)
	}
	if e.store.Config().ServiceIndex("old") < 0 {
		t.Error("apply without --prune deleted a service")
	}
	if out := e.mustRun("apply", "-f", f, "--prune"); out != "service/old deleted\nservice/web unchanged\nservice/dns unchanged\n" {
		t.Errorf("apply --prune printed %q", out)
	}
	var got v1.ServiceList
	if err := json.Unmarshal([]byte(e.mustRun("get", "services", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normal(got.Services), normal(want.Services)) {
		t.Errorf("get services -o json = %+v\nwant %+v", got.Services, want.Services)
	}

	// Applying the same file again changes nothing.
	gen := e.store.Generation()
	if out := e.mustRun("apply", "--prune", "-f", f); out != "service/web unchanged\nservice/dns unchanged\n" {
		t.Errorf("re-apply printed %q", out)
	}
	if e.store.Generation() != gen {
		t.Error("re-apply published a new snapshot")
	}

	// A changed service is replaced, in place.
	f2 := e.file("changed.yaml", strings.Replace(services, "port: 0", "port: 53", 1))
	if out := e.mustRun("apply", "-f", f2); out != "service/web unchanged\nservice/dns replaced\n" {
		t.Errorf("apply changed printed %q", out)
	}
	if s, _ := e.store.Config().Service("dns"); s.Port != 53 {
		t.Errorf("dns port = %d, want 53", s.Port)
	}
}

func TestCommands(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", e.file("s.yaml", services))
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"get", "services"}, []string{"NAME", "web   198.51.100.1  tcp       80    l2    2", "dns   198.51.100.2  udp       all   gre   1"}},
		{[]string{"get", "service", "web"}, []string{"service web: 198.51.100.1 tcp port 80, mode l2", "192.0.2.22  5       drain    -"}},
		{[]string{"get", "service", "web", "-o", "json"}, []string{`"name": "web"`, `"weight": 5`}},
		{[]string{"get", "status"}, []string{"ANNOUNCED", "no BGP speaker", "192.0.2.21", "unresolved"}},
		{[]string{"get", "status", "-o", "json"}, []string{`"forwarding": "down"`}},
		{[]string{"get", "stats"}, []string{"RX-PACKETS", "WORKER", "generation"}},
		{[]string{"stats", "-o", "json"}, []string{`"drops": {`, `"no_service": 0`}},
		{[]string{"drain", "web", "192.0.2.21"}, []string{"draining"}},
		{[]string{"delete", "backend", "web", "192.0.2.22"}, []string{"backend 192.0.2.22 of service/web deleted"}},
		{[]string{"delete", "service", "dns"}, []string{"service/dns deleted"}},
	} {
		out := e.mustRun(c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("dsrctl %s: output lacks %q:\n%s", strings.Join(c.args, " "), w, out)
			}
		}
	}
	web, _ := e.store.Config().Service("web")
	if len(web.Backends) != 1 || web.Backends[0].State != "drain" || e.store.Config().ServiceIndex("dns") >= 0 {
		t.Errorf("after drain and deletes: %+v", e.store.Config().Services)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	bad := e.file("bad.yaml", strings.Replace(services, "weight: 5", "weight: 5000", 1))
	for _, c := range []struct {
		desc string
		vars map[string]string // overrides
		args []string
		code int
		msg  string
	}{
		{"wrong token", map[string]string{"DSRLB_API_TOKEN": "nope"}, []string{"delete", "service", "old"}, 1, "401 unauthorized: invalid bearer token"},
		{"no token", map[string]string{"DSRLB_API_TOKEN": ""}, []string{"drain", "old", "203.0.113.9"}, 1, "missing bearer token"},
		{"token flag wins", map[string]string{"DSRLB_API_TOKEN": token}, []string{"delete", "service", "old", "--token", "x"}, 1, "invalid bearer token"},
		{"validation", nil, []string{"apply", "-f", bad}, 1, "(field services[web].backends[192.0.2.22].weight)"},
		{"not found", nil, []string{"drain", "old", "203.0.113.99"}, 1, "404 not_found"},
		{"get missing", nil, []string{"get", "service", "nope"}, 1, `service "nope": not found`},
		{"transport", nil, []string{"get", "services", "--api", "http://127.0.0.1:1"}, 1, "connect"},
		{"missing file", nil, []string{"apply", "-f", filepath.Join(e.dir, "none.yaml")}, 1, "no such file"},
		{"unknown key", nil, []string{"apply", "-f", e.file("u.yaml", "services:\n  - name: x\n    vips: 1.2.3.4\n")}, 1, "field vips not found"},
		{"no services key", nil, []string{"apply", "--prune", "-f", e.file("e.yaml", "")}, 1, "no services: list"},
		{"duplicate", nil, []string{"apply", "-f", e.file("d.yaml", "services:\n  - name: x\n  - name: x\n")}, 1, "appears twice"},
		{"get nothing", nil, []string{"get"}, 2, "usage: dsrctl get"},
		{"get what", nil, []string{"get", "pods"}, 2, `cannot get "pods"`},
		{"get service without name", nil, []string{"get", "service"}, 2, "usage: dsrctl get service NAME"},
		{"get services extra", nil, []string{"get", "services", "web"}, 2, "usage"},
		{"apply without file", nil, []string{"apply"}, 2, "usage: dsrctl apply -f FILE"},
		{"bad output", nil, []string{"get", "services", "-o", "yaml"}, 2, "-o must be table or json"},
		{"unknown flag", nil, []string{"stats", "--nope"}, 2, "flag provided but not defined"},
		{"delete what", nil, []string{"delete", "thing", "x"}, 2, "usage: dsrctl delete"},
		{"drain without IP", nil, []string{"drain", "old"}, 2, "usage: dsrctl drain NAME IP"},
		{"help", nil, []string{"get", "-h"}, 0, "-api"},
	} {
		t.Run(c.desc, func(t *testing.T) {
			before := e.store.Config()
			saved := e.vars
			e.vars = map[string]string{}
			for k, v := range saved {
				e.vars[k] = v
			}
			for k, v := range c.vars {
				e.vars[k] = v
			}
			code, out, errOut := e.run(c.args...)
			e.vars = saved
			if code != c.code || !strings.Contains(errOut, c.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q (stdout %q)", code, errOut, c.code, c.msg, out)
			}
			if !reflect.DeepEqual(e.store.Config(), before) {
				t.Error("config changed")
			}
		})
	}
}

// TestApplyIsAtomic: services may trade VIPs in one apply (each move alone
// would clash), and an apply with one invalid service changes nothing.
func TestApplyIsAtomic(t *testing.T) {
	e := newEnv(t)
	svc := func(name, vip string, weight int) string {
		return "  - {name: " + name + ", vip: " + vip + ", protocol: tcp, port: 80, mode: ipip, backends: [{ip: 203.0.113.5, weight: " +
			strconv.Itoa(weight) + "}]}\n"
	}
	e.mustRun("apply", "-f", e.file("a.yaml", "services:\n"+svc("web", "198.51.100.1", 1)+svc("api", "198.51.100.3", 1)))
	swapped := e.file("b.yaml", "services:\n"+svc("web", "198.51.100.3", 1)+svc("api", "198.51.100.1", 1))
	if out := e.mustRun("apply", "-f", swapped); out != "service/web replaced\nservice/api replaced\n" {
		t.Errorf("swap printed %q", out)
	}
	web, _ := e.store.Config().Service("web")
	api, _ := e.store.Config().Service("api")
	if web.VIP != "198.51.100.3" || api.VIP != "198.51.100.1" {
		t.Errorf("after the swap web has %s, api %s", web.VIP, api.VIP)
	}

	gen := e.store.Generation()
	before := e.store.Config()
	bad := e.file("c.yaml", "services:\n"+svc("web", "198.51.100.3", 7)+svc("api", "198.51.100.1", 5000)+svc("new", "198.51.100.4", 1))
	code, out, errOut := e.run("apply", "-f", bad, "--prune")
	if code != 1 || !strings.Contains(errOut, "nothing changed") || !strings.Contains(errOut, "services[api].backends[203.0.113.5].weight") || out != "" {
		t.Errorf("invalid apply: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if e.store.Generation() != gen || !reflect.DeepEqual(e.store.Config(), before) {
		t.Errorf("an invalid apply changed the services: %+v", e.store.Config().Services)
	}
}

// TestApplyEveryError: apply prints every error of the answer, or of the
// file, one per line with the file's line where the field is in it.
func TestApplyEveryError(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		desc, file string
		want       string // stderr
	}{
		{"the API's errors, located in the file", `services:
  - name: web
    vip: 198.51.100.1
    protocol: tcp
    port: 80
    mode: l2
    backends:
      - {ip: 192.0.2.21, weight: 5000}
      - {ip: 203.0.113.30}
  - {name: dns, vip: 198.51.100.2, protocol: sctp, port: 53, mode: gre, backends: []}
`, `dsrctl apply: apply: nothing changed: 400 validation_failed: 3 errors:
  F:8: services[web].backends[192.0.2.21].weight: must be 0..1000, got 5000
  F:9: services[web].backends[203.0.113.30].ip: l2 mode needs the backend on a port's subnet
  F:10: services[dns].protocol: must be tcp or udp, got "sctp"
`},
		{"one error, as before, and where", "services:\n  - {name: web, vip: 198.51.100.1, protocol: tcp, port: 80, mode: nat, backends: []}\n",
			"dsrctl apply: apply: nothing changed: 400 validation_failed: must be l2, ipip or gre, got \"nat\" (field services[web].mode) at F:2\n"},
		{"the file's own errors", "services:\n  - name: web\n    vips: 198.51.100.1\n    port: eighty\n  - name: web\n",
			"dsrctl apply: F:3: services[web].vips: field vips not found; want one of backends, health, limits, min_healthy, mode, name, port, protocol, vip\n" +
				"F:4: services[web].port: want an integer, got \"eighty\"\n"},
		{"a name twice", "services:\n  - name: web\n  - name: dns\n  - name: web\n",
			"dsrctl apply: F:4: services[web].name: service \"web\" appears twice\n"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := e.file("f.yaml", tc.file)
			before := e.store.Config()
			code, out, errOut := e.run("apply", "-f", f)
			if want := strings.ReplaceAll(tc.want, "F:", f+":"); code != 1 || errOut != want || out != "" {
				t.Errorf("exit %d, stdout %q, stderr\n%s\nwant exit 1 and\n%s", code, out, errOut, want)
			}
			if !reflect.DeepEqual(e.store.Config(), before) {
				t.Error("config changed")
			}
		})
	}
}

// TestStatusProbes: `get status` prints how each monitored backend is
// probed and why the unhealthy ones are down.
func TestStatusProbes(t *testing.T) {
	var b strings.Builder
	probes(&b, []v1.ServiceStatus{{Name: "web", Backends: []v1.BackendStatus{
		{IP: "10.1.2.3", Health: "unhealthy", Probe: &v1.BackendProbe{Type: "http", Via: "vip", Target: "192.0.2.1:80 through ipip to 10.1.2.3", LastResult: "timeout after 500ms"},
			HealthReason: "no answer from the VIP 192.0.2.1:80 through ipip within 500ms: check the VIP on lo and the decapsulator on 10.1.2.3"},
		{IP: "10.1.2.4", Health: "healthy", Probe: &v1.BackendProbe{Type: "http", Via: "vip", Target: "192.0.2.1:80 through ipip to 10.1.2.4", LastResult: "ok"}},
		{IP: "10.1.2.5", Health: "unchecked"},
	}}})
	out := b.String()
	for _, w := range []string{
		"SERVICE\tBACKEND\tPROBE\tVIA\tTARGET\tLAST-RESULT",
		"web\t10.1.2.3\thttp\tvip\t192.0.2.1:80 through ipip to 10.1.2.3\ttimeout after 500ms",
		"web\t10.1.2.4\thttp\tvip\t192.0.2.1:80 through ipip to 10.1.2.4\tok",
		"UNHEALTHY\nweb 10.1.2.3: no answer from the VIP 192.0.2.1:80 through ipip within 500ms: check the VIP on lo and the decapsulator on 10.1.2.3",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "10.1.2.5") {
		t.Errorf("a backend without a monitor is listed:\n%s", out)
	}
}
