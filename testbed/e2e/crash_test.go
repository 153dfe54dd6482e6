package e2e

// Persistence of REST changes across a clean restart (SIGTERM) and across
// kill -9 in the middle of a stream of changes. The appliance is the real
// `dsrlb run` in a namespace of its own with a net_null port: these tests
// need its control plane, not traffic. What a state file holds is judged
// from the outside: by `dsrlb check --state`, which tells whether `run`
// would restore it, and by its JSON.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// crToken is the API token of the restart and crash tests' appliance.
const crToken = "crash-test-token"

// crConfig is the appliance of the restart and crash tests on host of bed
// b: a net_null port and two services, one IPIP and one L2 with a static
// backend MAC.
func crConfig(b *nsbed.Bed, host string) v1.Config {
	w := func(n int) *int { return &n }
	return v1.Config{
		Dataplane: v1.Dataplane{
			EALArgs: b.EALArgs(host, "0,1"),
			Ports: []v1.Port{{Name: "eth0", Device: "net_null0,no-rx=1",
				IP: "192.0.2.10/24", Gateway: "192.0.2.1", MAC: "02:00:00:00:00:10"}},
		},
		Neighbors: []v1.Neighbor{{IP: "192.0.2.1", MAC: "02:00:00:00:00:01"}},
		Flows:     v1.Flows{Capacity: 65536},
		API:       v1.API{Listen: nsbed.DefaultAPI, Token: crToken},
		Services: []v1.Service{
			{Name: "web", VIP: "203.0.113.10", Protocol: "tcp", Port: 80, Mode: "ipip",
				Backends: []v1.Backend{{IP: "10.1.0.1"}, {IP: "10.1.0.2", Weight: w(3)}}},
			{Name: "dns", VIP: "203.0.113.11", Protocol: "udp", Port: 53, Mode: "l2",
				Backends: []v1.Backend{{IP: "192.0.2.21", MAC: "02:00:00:00:00:21"}}},
		},
	}
}

// crBed is the appliance of a restart or crash test, in a namespace of its
// own, started and stopped by the test with the same config and state
// file.
type crBed struct {
	t    *testing.T
	bed  *nsbed.Bed
	ns   *nsbed.NS
	cfg  v1.Config
	appl *nsbed.Appliance // the running appliance, or the last one
}

// crSetup builds t's bed (torn down when t ends) with the appliance not
// yet started.
func crSetup(t *testing.T, host string) *crBed {
	t.Helper()
	needBins(t)
	bed, err := nsbed.New(bedOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &crBed{t: t, bed: bed}
	t.Cleanup(func() {
		if t.Failed() && c.appl != nil {
			t.Logf("dsrlb log (end):\n%s", c.appl.Proc.Tail(40))
		}
		if err := bed.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	if c.ns, err = bed.NewNS(host, false); err != nil {
		t.Fatal(err)
	}
	c.cfg = crConfig(bed, host)
	return c
}

// start runs `dsrlb run` and waits until its API answers.
func (c *crBed) start() {
	c.t.Helper()
	appl, err := nsbed.StartDsrlb(context.Background(), c.ns, bins.Dsrlb, c.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.appl = appl
}

// statePath is the appliance's state file.
func (c *crBed) statePath() string { return c.bed.StatePath(c.ns.Short) }

// get returns the body of GET path, failing t on any error.
func (c *crBed) get(path string) []byte {
	c.t.Helper()
	code, b, err := c.appl.Do(context.Background(), http.MethodGet, path, nil)
	if err != nil || code != http.StatusOK {
		c.t.Fatalf("GET %s: status %d, %v: %s", path, code, err, b)
	}
	return b
}

// services returns GET /api/v1/services.
func (c *crBed) services() []v1.Service {
	c.t.Helper()
	var list v1.ServiceList
	if err := json.Unmarshal(c.get("/api/v1/services"), &list); err != nil {
		c.t.Fatal(err)
	}
	return list.Services
}

// crJSON is the canonical JSON of a list of services, for comparisons (an
// empty list and an empty backend list compare equal to absent ones).
func crJSON(svcs []v1.Service) string {
	norm := crClone(svcs)
	for i := range norm {
		if norm[i].Backends == nil {
			norm[i].Backends = []v1.Backend{}
		}
	}
	if norm == nil {
		norm = []v1.Service{}
	}
	b, err := json.Marshal(norm)
	if err != nil {
		panic(err) // plain data: cannot happen
	}
	return string(b)
}

// crClone returns a deep copy of svcs.
func crClone(svcs []v1.Service) []v1.Service {
	if svcs == nil {
		return nil
	}
	b, err := json.Marshal(svcs)
	if err != nil {
		panic(err)
	}
	var out []v1.Service
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

// crStateOK checks the state file as the appliance would on start: `dsrlb
// check --state` must say that `run` restores it (it parses, has the
// version and digest of this config's services and validates with the
// config). It returns the file's services.
func (c *crBed) crStateOK() []v1.Service {
	c.t.Helper()
	path := c.statePath()
	out, err := exec.Command(bins.Dsrlb, "check", "--config", c.appl.ConfigPath, "--state", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), path+": run restores its ") {
		c.t.Fatalf("state file %s is not what run would restore: dsrlb check: %v\n%s", path, err, out)
	}
	svcs, err := crReadState(path)
	if err != nil {
		c.t.Fatal(err)
	}
	return svcs
}

// crReadState returns the services of the state file at path, a version 1
// file.
func crReadState(path string) ([]v1.Service, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st struct {
		Version  int          `json:"version"`
		Services []v1.Service `json:"services"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("state file %s: unsupported version %d", path, st.Version)
	}
	return st.Services, nil
}

// valid tells whether the config with services svcs validates, by `dsrlb
// check` on a config file written for the purpose: the check the API runs
// on the whole config after every change.
func (c *crBed) valid(svcs []v1.Service) (bool, error) {
	cfg := c.cfg
	cfg.Services = svcs
	y, err := yaml.Marshal(cfg)
	if err != nil {
		return false, err
	}
	path := c.bed.Path("candidate.yaml")
	if err := os.WriteFile(path, y, 0o644); err != nil {
		return false, err
	}
	out, err := exec.Command(bins.Dsrlb, "check", "--config", path).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false, nil
	default:
		return false, fmt.Errorf("dsrlb check: %v: %s", err, out)
	}
}

// TestRestart: changes through every kind of change endpoint, a clean stop
// (SIGTERM) and a start with the same YAML: GET /api/v1/services answers
// exactly the same as before.
func TestRestart(t *testing.T) {
	c := crSetup(t, "rs")
	ctx := context.Background()
	start := time.Now()
	c.start()
	t.Logf("TIMING started in %v", time.Since(start).Round(time.Millisecond))

	w := func(n int) *int { return &n }
	s := func(v string) *string { return &v }
	steps := []struct {
		method, path string
		body         any
		want         int
	}{
		{http.MethodPost, "/api/v1/services", v1.Service{Name: "api", VIP: "203.0.113.12", Protocol: "tcp", Port: 443, Mode: "gre",
			MinHealthy: 1, Backends: []v1.Backend{{IP: "10.3.0.1", Weight: w(2)}, {IP: "10.3.0.2"}},
			Health: &v1.Health{Type: "tcp", Interval: v1.Duration(2 * time.Second), Timeout: v1.Duration(500 * time.Millisecond), Rise: 2, Fall: 3}}, http.StatusCreated},
		{http.MethodPost, "/api/v1/services/web/backends", v1.Backend{IP: "10.1.0.3", Weight: w(5)}, http.StatusCreated},
		{http.MethodPatch, "/api/v1/services/web/backends/10.1.0.1", v1.BackendPatch{State: s("drain")}, http.StatusOK},
		{http.MethodPatch, "/api/v1/services/web/backends/10.1.0.2", v1.BackendPatch{Weight: w(7)}, http.StatusOK},
		{http.MethodPatch, "/api/v1/services/api/backends/10.3.0.2", v1.BackendPatch{Weight: w(0), State: s("disabled")}, http.StatusOK},
		{http.MethodPost, "/api/v1/services/dns/backends", v1.Backend{IP: "192.0.2.22", MAC: "02:00:00:00:00:22"}, http.StatusCreated},
		{http.MethodDelete, "/api/v1/services/dns/backends/192.0.2.21", nil, http.StatusNoContent},
		{http.MethodPut, "/api/v1/services/dns", v1.Service{Name: "dns", VIP: "203.0.113.11", Protocol: "udp", Port: 5353, Mode: "l2",
			Backends: []v1.Backend{{IP: "192.0.2.22", MAC: "02:00:00:00:00:22", Weight: w(4)}}}, http.StatusOK},
		{http.MethodPost, "/api/v1/services", v1.Service{Name: "tmp", VIP: "203.0.113.13", Protocol: "udp", Port: 0, Mode: "ipip",
			Backends: []v1.Backend{{IP: "10.4.0.1"}}}, http.StatusCreated},
		{http.MethodDelete, "/api/v1/services/tmp", nil, http.StatusNoContent},
		// Rejected changes leave nothing behind.
		{http.MethodPatch, "/api/v1/services/web/backends/10.1.0.3", v1.BackendPatch{Weight: w(5000)}, http.StatusBadRequest},
		{http.MethodPost, "/api/v1/services/web/backends", v1.Backend{IP: "10.1.0.3"}, http.StatusConflict},
		{http.MethodDelete, "/api/v1/services/web/backends/10.9.9.9", nil, http.StatusNotFound},
	}
	for _, st := range steps {
		code, body, err := c.appl.Do(ctx, st.method, st.path, st.body)
		if err != nil || code != st.want {
			t.Fatalf("%s %s: status %d, %v, want %d: %s", st.method, st.path, code, err, st.want, body)
		}
	}
	before := c.get("/api/v1/services")
	var list v1.ServiceList
	if err := json.Unmarshal(before, &list); err != nil {
		t.Fatal(err)
	}
	if crJSON(list.Services) == crJSON(c.cfg.Services) {
		t.Fatal("the changes did not change the services")
	}
	perService := map[string][]byte{}
	for _, svc := range list.Services {
		perService[svc.Name] = c.get("/api/v1/services/" + svc.Name)
	}

	stop := time.Now()
	if err := c.appl.Stop(); err != nil {
		t.Fatalf("dsrlb run after SIGTERM: %v (want exit status 0)", err)
	}
	t.Logf("TIMING stopped in %v", time.Since(stop).Round(time.Millisecond))
	if got := crJSON(c.crStateOK()); got != crJSON(list.Services) {
		t.Errorf("state file services:\n%s\nwant what the API answered:\n%s", got, crJSON(list.Services))
	}

	c.start()
	after := c.get("/api/v1/services")
	if !bytes.Equal(before, after) {
		t.Errorf("GET /api/v1/services after restart:\n%s\nbefore:\n%s", after, before)
	}
	for name, b := range perService {
		if got := c.get("/api/v1/services/" + name); !bytes.Equal(got, b) {
			t.Errorf("GET /api/v1/services/%s after restart:\n%s\nbefore:\n%s", name, got, b)
		}
	}
	if err := c.appl.Stop(); err != nil {
		t.Errorf("dsrlb run after SIGTERM: %v", err)
	}
}

// crChange is one REST change and what it does to the services: one of
// add (a service, or a backend of service name), replace, patch, remove.
type crChange struct {
	method, path string
	body         any

	kind  string // add-service, remove-service, replace-service, add-backend, patch-backend, remove-backend
	name  string // the service
	svc   v1.Service
	be    v1.Backend
	ip    string // the backend
	patch v1.BackendPatch
}

// errCannotApply marks a change the API refuses before validating: an
// object that does not exist (404) or clashes with another (409).
var errCannotApply = errors.New("cannot apply")

// crIndex is the index of service name in svcs, or -1.
func crIndex(svcs []v1.Service, name string) int {
	for i, s := range svcs {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// crApply returns the services after ch, as the REST API makes them
// before it validates the whole config: it checks only that the objects
// named exist, and that a new service's name, a new backend's address and
// a service's (VIP, protocol, port) are not taken (errCannotApply).
func crApply(svcs []v1.Service, ch crChange) ([]v1.Service, error) {
	out := crClone(svcs)
	i := crIndex(out, ch.name)
	if i < 0 && ch.kind != "add-service" {
		return nil, fmt.Errorf("%w: service %q not found", errCannotApply, ch.name)
	}
	vipTaken := func(s v1.Service, skip int) bool {
		vip, err := netip.ParseAddr(s.VIP)
		if err != nil {
			return false // left to validation
		}
		for j, o := range out {
			if ov, err := netip.ParseAddr(o.VIP); err == nil && j != skip && ov == vip && o.Protocol == s.Protocol && o.Port == s.Port {
				return true
			}
		}
		return false
	}
	backend := func(ip string) int {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return -1
		}
		for j, b := range out[i].Backends {
			if ba, err := netip.ParseAddr(b.IP); err == nil && ba == a {
				return j
			}
		}
		return -1
	}
	switch ch.kind {
	case "add-service":
		if i >= 0 || vipTaken(ch.svc, -1) {
			return nil, fmt.Errorf("%w: service %q or its VIP taken", errCannotApply, ch.name)
		}
		out = append(out, crClone([]v1.Service{ch.svc})...)
	case "remove-service":
		out = append(out[:i:i], out[i+1:]...)
	case "replace-service":
		if vipTaken(ch.svc, i) {
			return nil, fmt.Errorf("%w: VIP of %q taken", errCannotApply, ch.name)
		}
		out[i] = crClone([]v1.Service{ch.svc})[0]
	case "add-backend":
		if backend(ch.be.IP) >= 0 {
			return nil, fmt.Errorf("%w: backend %s of %q exists", errCannotApply, ch.be.IP, ch.name)
		}
		out[i].Backends = append(out[i].Backends, crClone([]v1.Service{{Backends: []v1.Backend{ch.be}}})[0].Backends...)
	case "patch-backend", "remove-backend":
		j := backend(ch.ip)
		if j < 0 {
			return nil, fmt.Errorf("%w: backend %s of %q not found", errCannotApply, ch.ip, ch.name)
		}
		if ch.kind == "remove-backend" {
			out[i].Backends = append(out[i].Backends[:j:j], out[i].Backends[j+1:]...)
			break
		}
		if ch.patch.Weight != nil {
			w := *ch.patch.Weight
			out[i].Backends[j].Weight = &w
		}
		if ch.patch.State != nil {
			out[i].Backends[j].State = *ch.patch.State
		}
	default:
		panic("crApply: unknown change " + ch.kind)
	}
	return out, nil
}

// crRandomChange picks a change against cur: services and backends added,
// replaced, patched and removed, and some changes that must be rejected
// (bad weight, l2 backend off-link, duplicates, unknown objects).
func crRandomChange(rng *rand.Rand, cur []v1.Service) crChange {
	w := func(n int) *int { return &n }
	svcName := func() string {
		if len(cur) > 0 && rng.Intn(8) != 0 {
			return cur[rng.Intn(len(cur))].Name
		}
		return fmt.Sprintf("s%d", rng.Intn(4))
	}
	backendIP := func(mode string) string {
		if mode == "l2" || rng.Intn(20) == 0 {
			return fmt.Sprintf("192.0.2.%d", 21+rng.Intn(20))
		}
		return fmt.Sprintf("10.1.0.%d", 1+rng.Intn(20))
	}
	newService := func(name string) v1.Service {
		mode := []string{"l2", "ipip", "gre"}[rng.Intn(3)]
		n := int(name[len(name)-1]-'0') % 10
		svc := v1.Service{Name: name, VIP: fmt.Sprintf("203.0.113.%d", 20+n), Protocol: []string{"tcp", "udp"}[rng.Intn(2)],
			Port: 80 + rng.Intn(3), Mode: mode}
		for i := 0; i < 1+rng.Intn(3); i++ {
			svc.Backends = append(svc.Backends, v1.Backend{IP: backendIP(mode), Weight: w(1 + rng.Intn(5))})
		}
		if rng.Intn(4) == 0 {
			svc.Health = &v1.Health{Type: "tcp", Interval: v1.Duration(time.Duration(1+rng.Intn(5)) * time.Second)}
		}
		return svc
	}
	// existingBackend returns a backend of service name, or a random IP.
	existingBackend := func(name string) string {
		if i := crIndex(cur, name); i >= 0 && len(cur[i].Backends) > 0 && rng.Intn(10) != 0 {
			bs := cur[i].Backends
			return bs[rng.Intn(len(bs))].IP
		}
		return backendIP("ipip")
	}
	modeOf := func(name string) string {
		if i := crIndex(cur, name); i >= 0 {
			return cur[i].Mode
		}
		return "ipip"
	}
	switch r := rng.Intn(100); {
	case r < 12:
		svc := newService(fmt.Sprintf("s%d", rng.Intn(4)))
		return crChange{method: http.MethodPost, path: "/api/v1/services", body: svc, kind: "add-service", name: svc.Name, svc: svc}
	case r < 20:
		name := svcName()
		return crChange{method: http.MethodDelete, path: "/api/v1/services/" + name, kind: "remove-service", name: name}
	case r < 26:
		name := svcName()
		svc := newService(name)
		if i := crIndex(cur, name); i >= 0 {
			svc.VIP = cur[i].VIP // mostly a new pool and mode in place
		}
		return crChange{method: http.MethodPut, path: "/api/v1/services/" + name, body: svc, kind: "replace-service", name: name, svc: svc}
	case r < 55:
		name := svcName()
		b := v1.Backend{IP: backendIP(modeOf(name)), Weight: w(rng.Intn(6))}
		if rng.Intn(4) == 0 {
			b.State = []string{"drain", "disabled"}[rng.Intn(2)]
		}
		return crChange{method: http.MethodPost, path: "/api/v1/services/" + name + "/backends", body: b, kind: "add-backend", name: name, be: b}
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
		return crChange{method: http.MethodPatch, path: "/api/v1/services/" + name + "/backends/" + ip, body: p,
			kind: "patch-backend", name: name, ip: ip, patch: p}
	default:
		name := svcName()
		ip := existingBackend(name)
		return crChange{method: http.MethodDelete, path: "/api/v1/services/" + name + "/backends/" + ip,
			kind: "remove-backend", name: name, ip: ip}
	}
}

// crAnswer is a change sent against the services before and the API's
// answer (code 0: no answer, the appliance was killed); after and applyErr
// are crApply's.
type crAnswer struct {
	ch       crChange
	before   []v1.Service
	after    []v1.Service
	applyErr error
	code     int
	body     []byte
}

// crClient applies random changes one after the other as fast as the API
// answers, until a request fails (the appliance was killed). It tracks the
// last acknowledged services and every change with its answer; the last
// one, unanswered, was in flight at the kill.
type crClient struct {
	appl *nsbed.Appliance
	rng  *rand.Rand

	mu                 sync.Mutex
	acked              []v1.Service
	sent               []crAnswer
	accepted, rejected int
	errs               []string
}

func (c *crClient) run() {
	for {
		c.mu.Lock()
		cur := c.acked
		c.mu.Unlock()
		ch := crRandomChange(c.rng, cur)
		after, applyErr := crApply(cur, ch)
		c.mu.Lock()
		c.sent = append(c.sent, crAnswer{ch: ch, before: cur, after: after, applyErr: applyErr})
		c.mu.Unlock()
		code, body, err := c.appl.Do(context.Background(), ch.method, ch.path, ch.body)
		if err != nil {
			return // killed: this change stays in flight
		}
		c.mu.Lock()
		a := &c.sent[len(c.sent)-1]
		a.code, a.body = code, body
		ok := code >= 200 && code < 300
		if ok && applyErr != nil {
			c.errs = append(c.errs, fmt.Sprintf("%s %s: status %d for a change that cannot apply (%v): %s", ch.method, ch.path, code, applyErr, body))
			c.mu.Unlock()
			return
		}
		if ok {
			c.acked = after
			c.accepted++
		} else {
			c.rejected++
		}
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
// the state file is one `run` restores and holds either the last
// acknowledged state or the one in flight; a restart comes back with it.
// Every answer the API gave is checked too: a change is accepted exactly
// when it applies and the config it makes validates (dsrlb check).
func TestCrash(t *testing.T) {
	c := crSetup(t, "cr")
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))

	want := c.cfg.Services // what the next start must come back with
	var nAcked, nInFlight, nChanges, nRejected, nChecked int
	var checkTime time.Duration
	for it := 0; it <= crIterations; it++ {
		c.start()
		live := c.services()
		if crJSON(live) != crJSON(want) {
			t.Fatalf("start %d: GET /api/v1/services:\n%s\nwant (state file):\n%s", it, crJSON(live), crJSON(want))
		}
		if it == crIterations {
			break
		}
		cl := &crClient{appl: c.appl, rng: rand.New(rand.NewSource(seed + int64(it) + 1)), acked: live}
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
		if err := c.appl.Proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("iteration %d: kill: %v", it, err)
		}
		select {
		case <-c.appl.Proc.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: dsrlb still runs 10s after SIGKILL", it)
		}
		var ee *exec.ExitError
		if err := c.appl.Proc.Err(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
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

		// Every answer against the validation the API runs, and the
		// services the change in flight would make if it was valid.
		checkStart := time.Now()
		inFlight := cl.acked
		for i, a := range cl.sent {
			valid := a.applyErr == nil
			if valid {
				var err error
				if valid, err = c.valid(a.after); err != nil {
					t.Fatalf("iteration %d: %v", it, err)
				}
				nChecked++
			}
			if a.code == 0 {
				if i != len(cl.sent)-1 {
					t.Fatalf("iteration %d: change %d of %d has no answer", it, i, len(cl.sent))
				}
				if valid {
					inFlight = a.after
				}
				continue
			}
			if ok := a.code >= 200 && a.code < 300; ok != valid {
				t.Errorf("iteration %d: %s %s: status %d, predicted valid=%v (%v): %s", it, a.ch.method, a.ch.path, a.code, valid, a.applyErr, a.body)
			}
		}
		checkTime += time.Since(checkStart)

		acc, rej := cl.counts()
		nChanges += acc
		nRejected += rej
		got := c.crStateOK()
		acked, flight := crJSON(cl.acked), crJSON(inFlight)
		outcome := "the last acknowledged state"
		switch crJSON(got) {
		case acked:
			nAcked++
			if acked == flight {
				outcome += " (no valid change was in flight)"
			}
		case flight:
			nInFlight++
			outcome = "the change in flight (applied, not acknowledged)"
		default:
			t.Fatalf("iteration %d: state file after kill -9 holds\n%s\nneither the last acknowledged state\n%s\nnor the one in flight\n%s",
				it, crJSON(got), acked, flight)
		}
		tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(c.statePath()), ".state-*.tmp"))
		t.Logf("iteration %d: %d changes accepted, %d rejected, then SIGKILL; state file = %s; %d temp files left",
			it, acc, rej, outcome, len(tmps))
		want = got
	}
	t.Logf("RESULT %d kills: state file = last acknowledged %d times, = change in flight %d times (%d changes accepted, %d rejected in all)",
		crIterations, nAcked, nInFlight, nChanges, nRejected)
	t.Logf("%d configs the changes would make checked with dsrlb check in %v", nChecked, checkTime.Round(time.Millisecond))
	if err := c.appl.Stop(); err != nil {
		t.Errorf("dsrlb run after SIGTERM: %v", err)
	}
}
