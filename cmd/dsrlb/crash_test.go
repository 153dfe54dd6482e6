package main

// Persistence of REST changes across a clean restart (SIGTERM) and across
// kill -9 in the middle of a stream of changes. The appliance is the real
// `dsrlb run` in a private namespace (helpers in hitless_test.go) with a
// net_null port: these tests need its control plane, not traffic.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
)

const crConfig = `
dataplane:
  eal_args: [--no-huge, --no-pci, -m, "512", --file-prefix, %s, -l, "0,1"]
  ports:
    - {name: eth0, device: "net_null0,no-rx=1", ip: 192.0.2.10/24, gateway: 192.0.2.1, mac: "02:00:00:00:00:10"}
neighbors:
  - {ip: 192.0.2.1, mac: "02:00:00:00:00:01"}
flows: {capacity: 65536}
api: {listen: "%s", token: %s}
services:
  - {name: web, vip: 203.0.113.10, protocol: tcp, port: 80, mode: ipip, backends: [{ip: 10.1.0.1}, {ip: 10.1.0.2, weight: 3}]}
  - {name: dns, vip: 203.0.113.11, protocol: udp, port: 53, mode: l2, backends: [{ip: 192.0.2.21, mac: "02:00:00:00:00:21"}]}
`

// crJSON is the canonical JSON of a list of services, for comparisons (an
// empty list and an empty backend list compare equal to absent ones).
func crJSON(svcs []control.Service) string {
	norm := make([]control.Service, len(svcs))
	for i, s := range svcs {
		norm[i] = s.Clone()
		if len(norm[i].Backends) == 0 {
			norm[i].Backends = []control.Backend{}
		}
	}
	b, err := json.Marshal(norm)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// crStateOK reads the state file, validates it as the appliance would on
// start (the YAML config with the file's services) and returns its
// services.
func crStateOK(t *testing.T, yamlCfg *control.Config, path string) []control.Service {
	t.Helper()
	st, err := control.ReadState(path)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	full := yamlCfg.Clone()
	full.Services = st.Services
	if _, err := full.Validate(); err != nil {
		t.Fatalf("state file %s does not validate: %v", path, err)
	}
	return st.Services
}

// TestRestart: changes through every kind of change endpoint, a clean stop
// (SIGTERM) and a start with the same YAML: GET /api/v1/services answers
// exactly the same as before.
func TestRestart(t *testing.T) {
	api, yamlCfg, app := crSetup(t, "rs")
	start := time.Now()
	app.start()
	t.Logf("started in %v", time.Since(start).Round(time.Millisecond))

	w := func(n int) *int { return &n }
	s := func(v string) *string { return &v }
	steps := []struct {
		method, path string
		body         any
		want         int
	}{
		{http.MethodPost, "/api/v1/services", control.Service{Name: "api", VIP: "203.0.113.12", Protocol: "tcp", Port: 443, Mode: "gre",
			MinHealthy: 1, Backends: []control.Backend{{IP: "10.3.0.1", Weight: w(2)}, {IP: "10.3.0.2"}},
			Health: &control.Health{Type: "tcp", Interval: control.Duration(2 * time.Second),
				Timeout: control.Duration(500 * time.Millisecond), Rise: 2, Fall: 3}}, http.StatusCreated},
		{http.MethodPost, "/api/v1/services/web/backends", control.Backend{IP: "10.1.0.3", Weight: w(5)}, http.StatusCreated},
		{http.MethodPatch, "/api/v1/services/web/backends/10.1.0.1", v1.BackendPatch{State: s("drain")}, http.StatusOK},
		{http.MethodPatch, "/api/v1/services/web/backends/10.1.0.2", v1.BackendPatch{Weight: w(7)}, http.StatusOK},
		{http.MethodPatch, "/api/v1/services/api/backends/10.3.0.2", v1.BackendPatch{Weight: w(0), State: s("disabled")}, http.StatusOK},
		{http.MethodPost, "/api/v1/services/dns/backends", control.Backend{IP: "192.0.2.22", MAC: "02:00:00:00:00:22"}, http.StatusCreated},
		{http.MethodDelete, "/api/v1/services/dns/backends/192.0.2.21", nil, http.StatusNoContent},
		{http.MethodPut, "/api/v1/services/dns", control.Service{Name: "dns", VIP: "203.0.113.11", Protocol: "udp", Port: 5353, Mode: "l2",
			Backends: []control.Backend{{IP: "192.0.2.22", MAC: "02:00:00:00:00:22", Weight: w(4)}}}, http.StatusOK},
		{http.MethodPost, "/api/v1/services", control.Service{Name: "tmp", VIP: "203.0.113.13", Protocol: "udp", Port: 0, Mode: "ipip",
			Backends: []control.Backend{{IP: "10.4.0.1"}}}, http.StatusCreated},
		{http.MethodDelete, "/api/v1/services/tmp", nil, http.StatusNoContent},
		// Rejected changes leave nothing behind.
		{http.MethodPatch, "/api/v1/services/web/backends/10.1.0.3", v1.BackendPatch{Weight: w(5000)}, http.StatusBadRequest},
		{http.MethodPost, "/api/v1/services/web/backends", control.Backend{IP: "10.1.0.3"}, http.StatusConflict},
		{http.MethodDelete, "/api/v1/services/web/backends/10.9.9.9", nil, http.StatusNotFound},
	}
	for _, st := range steps {
		code, body, err := api.do(st.method, st.path, st.body)
		if err != nil || code != st.want {
			t.Fatalf("%s %s: status %d, %v, want %d: %s", st.method, st.path, code, err, st.want, body)
		}
	}
	before := api.getJSON(t, "/api/v1/services", nil)
	var list v1.ServiceList
	if err := json.Unmarshal(before, &list); err != nil {
		t.Fatal(err)
	}
	if crJSON(list.Services) == crJSON(yamlCfg.Services) {
		t.Fatal("the changes did not change the services")
	}
	perService := map[string][]byte{}
	for _, svc := range list.Services {
		perService[svc.Name] = api.getJSON(t, "/api/v1/services/"+svc.Name, nil)
	}

	stop := time.Now()
	if err := app.stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("dsrlb run after SIGTERM: %v (want exit status 0)", err)
	}
	t.Logf("stopped in %v", time.Since(stop).Round(time.Millisecond))
	if got := crJSON(crStateOK(t, yamlCfg, app.statePath)); got != crJSON(list.Services) {
		t.Errorf("state file services:\n%s\nwant what the API answered:\n%s", got, crJSON(list.Services))
	}

	app.start()
	after := api.getJSON(t, "/api/v1/services", nil)
	if !bytes.Equal(before, after) {
		t.Errorf("GET /api/v1/services after restart:\n%s\nbefore:\n%s", after, before)
	}
	for name, b := range perService {
		if got := api.getJSON(t, "/api/v1/services/"+name, nil); !bytes.Equal(got, b) {
			t.Errorf("GET /api/v1/services/%s after restart:\n%s\nbefore:\n%s", name, got, b)
		}
	}
	if err := app.stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Errorf("dsrlb run after SIGTERM: %v", err)
	}
}

// crChange is one REST change and what it does to a config (the same
// control.Config mutation the API applies), so the client can predict the
// accepted state and whether the change is accepted at all.
type crChange struct {
	method, path string
	body         any
	apply        func(c *control.Config) error
}

// crRandomChange picks a change against cur: services and backends added,
// replaced, patched and removed, and some changes that must be rejected
// (bad weight, l2 backend off-link, duplicates, unknown objects).
func crRandomChange(rng *rand.Rand, cur *control.Config) crChange {
	w := func(n int) *int { return &n }
	svcName := func() string {
		if len(cur.Services) > 0 && rng.Intn(8) != 0 {
			return cur.Services[rng.Intn(len(cur.Services))].Name
		}
		return fmt.Sprintf("s%d", rng.Intn(4))
	}
	backendIP := func(mode string) string {
		if mode == "l2" || rng.Intn(20) == 0 {
			return fmt.Sprintf("192.0.2.%d", 21+rng.Intn(20))
		}
		return fmt.Sprintf("10.1.0.%d", 1+rng.Intn(20))
	}
	newService := func(name string) control.Service {
		mode := []string{"l2", "ipip", "gre"}[rng.Intn(3)]
		n := int(name[len(name)-1]-'0') % 10
		svc := control.Service{Name: name, VIP: fmt.Sprintf("203.0.113.%d", 20+n), Protocol: []string{"tcp", "udp"}[rng.Intn(2)],
			Port: 80 + rng.Intn(3), Mode: mode}
		for i := 0; i < 1+rng.Intn(3); i++ {
			svc.Backends = append(svc.Backends, control.Backend{IP: backendIP(mode), Weight: w(1 + rng.Intn(5))})
		}
		if rng.Intn(4) == 0 {
			svc.Health = &control.Health{Type: "tcp", Interval: control.Duration(time.Duration(1+rng.Intn(5)) * time.Second)}
		}
		return svc
	}
	// existingBackend returns a backend of service name, or a random IP.
	existingBackend := func(name string) string {
		if i := cur.ServiceIndex(name); i >= 0 && len(cur.Services[i].Backends) > 0 && rng.Intn(10) != 0 {
			bs := cur.Services[i].Backends
			return bs[rng.Intn(len(bs))].IP
		}
		return backendIP("ipip")
	}
	modeOf := func(name string) string {
		if i := cur.ServiceIndex(name); i >= 0 {
			return cur.Services[i].Mode
		}
		return "ipip"
	}
	switch r := rng.Intn(100); {
	case r < 12:
		svc := newService(fmt.Sprintf("s%d", rng.Intn(4)))
		return crChange{http.MethodPost, "/api/v1/services", svc, func(c *control.Config) error { return c.AddService(svc) }}
	case r < 20:
		name := svcName()
		return crChange{http.MethodDelete, "/api/v1/services/" + name, nil, func(c *control.Config) error { return c.RemoveService(name) }}
	case r < 26:
		name := svcName()
		svc := newService(name)
		if i := cur.ServiceIndex(name); i >= 0 {
			svc.VIP = cur.Services[i].VIP // mostly a new pool and mode in place
		}
		return crChange{http.MethodPut, "/api/v1/services/" + name, svc, func(c *control.Config) error { return c.ReplaceService(svc) }}
	case r < 55:
		name := svcName()
		b := control.Backend{IP: backendIP(modeOf(name)), Weight: w(rng.Intn(6))}
		if rng.Intn(4) == 0 {
			b.State = []string{"drain", "disabled"}[rng.Intn(2)]
		}
		return crChange{http.MethodPost, "/api/v1/services/" + name + "/backends", b,
			func(c *control.Config) error { return c.AddBackend(name, b) }}
	case r < 85:
		name := svcName()
		ip := existingBackend(name)
		var p v1.BackendPatch
		switch rng.Intn(5) {
		case 0:
			p.Weight = w(5000) // out of range: rejected
		case 1, 2:
			p.Weight = w(rng.Intn(10))
		default:
			st := []string{"enabled", "drain", "disabled"}[rng.Intn(3)]
			p.State = &st
		}
		return crChange{http.MethodPatch, "/api/v1/services/" + name + "/backends/" + ip, p,
			func(c *control.Config) error {
				a, err := netip.ParseAddr(ip)
				if err != nil {
					return err
				}
				_, err = c.PatchBackend(name, a, p)
				return err
			}}
	default:
		name := svcName()
		ip := existingBackend(name)
		return crChange{http.MethodDelete, "/api/v1/services/" + name + "/backends/" + ip, nil,
			func(c *control.Config) error {
				a, err := netip.ParseAddr(ip)
				if err != nil {
					return err
				}
				return c.RemoveBackend(name, a)
			}}
	}
}

// crClient applies random changes one after the other as fast as the API
// answers, until a request fails (the appliance was killed). It tracks the
// last acknowledged config and the one a request in flight would make.
type crClient struct {
	api *hlAPI
	rng *rand.Rand

	mu                 sync.Mutex
	acked, inFlight    *control.Config
	accepted, rejected int
	errs               []string
}

func (c *crClient) run() {
	for {
		c.mu.Lock()
		cur := c.acked
		c.mu.Unlock()
		ch := crRandomChange(c.rng, cur)
		next := cur.Clone()
		err := ch.apply(next)
		if err == nil {
			_, err = next.Validate()
		}
		valid := err == nil
		if !valid {
			next = cur
		}
		c.mu.Lock()
		c.inFlight = next
		c.mu.Unlock()
		code, body, rerr := c.api.do(ch.method, ch.path, ch.body)
		if rerr != nil {
			return // killed: this change stays in flight
		}
		c.mu.Lock()
		ok := code >= 200 && code < 300
		if ok != valid {
			c.errs = append(c.errs, fmt.Sprintf("%s %s: status %d, predicted valid=%v (%v): %s", ch.method, ch.path, code, valid, err, body))
			c.mu.Unlock()
			return
		}
		if ok {
			c.acked = next
			c.accepted++
		} else {
			c.rejected++
		}
		c.inFlight = c.acked
		c.mu.Unlock()
	}
}

func (c *crClient) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accepted, c.rejected
}

// crIterations is how many times TestCrash kills the appliance.
const crIterations = 8

// TestCrash: a client applies changes in a tight loop while the appliance
// is killed with SIGKILL at a random moment, several times. After each kill
// the state file parses and validates and holds either the last
// acknowledged state or the one in flight; a restart comes back with it.
func TestCrash(t *testing.T) {
	api, yamlCfg, app := crSetup(t, "cr")
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))

	want := yamlCfg.Services // what the next start must come back with
	var nAcked, nInFlight, nChanges, nRejected int
	for it := 0; it <= crIterations; it++ {
		app.start()
		var live v1.ServiceList
		api.getJSON(t, "/api/v1/services", &live)
		if crJSON(live.Services) != crJSON(want) {
			t.Fatalf("start %d: GET /api/v1/services:\n%s\nwant (state file):\n%s", it, crJSON(live.Services), crJSON(want))
		}
		if it == crIterations {
			break
		}
		model := yamlCfg.Clone()
		model.Services = live.Services
		cl := &crClient{api: api, rng: rand.New(rand.NewSource(seed + int64(it) + 1)), acked: model, inFlight: model}
		done := make(chan struct{})
		go func() {
			defer close(done)
			cl.run()
		}()
		// Let some changes through, then kill at a random moment.
		deadline := time.Now().Add(10 * time.Second)
		for a, _ := cl.counts(); a < 5 && time.Now().Before(deadline); a, _ = cl.counts() {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rng.Int63n(int64(300 * time.Millisecond))))
		err := app.stop(syscall.SIGKILL, 10*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("iteration %d: dsrlb did not die of SIGKILL: %v", it, err)
		}
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("iteration %d: the client did not notice the kill", it)
		}
		for _, e := range cl.errs {
			t.Errorf("iteration %d: %s", it, e)
		}
		acc, rej := cl.counts()
		nChanges += acc
		nRejected += rej
		got := crStateOK(t, yamlCfg, app.statePath)
		acked, inFlight := crJSON(cl.acked.Services), crJSON(cl.inFlight.Services)
		outcome := "the last acknowledged state"
		switch crJSON(got) {
		case acked:
			nAcked++
			if acked == inFlight {
				outcome += " (no valid change was in flight)"
			}
		case inFlight:
			nInFlight++
			outcome = "the change in flight (applied, not acknowledged)"
		default:
			t.Fatalf("iteration %d: state file after kill -9 holds\n%s\nneither the last acknowledged state\n%s\nnor the one in flight\n%s",
				it, crJSON(got), acked, inFlight)
		}
		tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(app.statePath), ".state-*.tmp"))
		t.Logf("iteration %d: %d changes accepted, %d rejected, then SIGKILL; state file = %s; %d temp files left",
			it, acc, rej, outcome, len(tmps))
		want = got
	}
	t.Logf("%d kills: state file = last acknowledged %d times, = change in flight %d times (%d changes accepted, %d rejected in all)",
		crIterations, nAcked, nInFlight, nChanges, nRejected)
	if err := app.stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Errorf("dsrlb run after SIGTERM: %v", err)
	}
}

// crSetup gives a restart or crash test, in a namespace of its own, its API client, parsed
// config and (not yet started) appliance.
func crSetup(t *testing.T, tag string) (*hlAPI, *control.Config, *hlAppliance) {
	t.Helper()
	hlNeedRoot(t)
	bin := hlBuild(t)
	ns := hlNewNS(t, tag)
	api := hlNewAPI(ns, hlAPIListen, hlToken)
	cfgText := fmt.Sprintf(crConfig, ns.name, hlAPIListen, hlToken)
	yamlCfg, err := control.ParseYAML([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	return api, yamlCfg, hlNewAppliance(t, bin, ns, cfgText, api)
}
