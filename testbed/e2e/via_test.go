package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// Health checks through the DSR path (`health.via`). The beds' "web"
// services keep the default (tcp and http monitors probe through the VIP),
// their "echo" services probe the same backends' own addresses (via:
// backend, a tcp monitor on port 80): each fault below takes the backend
// down in the first and goes unnoticed by the second, in the same run.

const (
	viaInterval = time.Second // webAndEcho's monitors: interval 1s, timeout 500ms, rise 1, fall 3
	viaFall     = 3
)

// viaConfig edits a bed's config: "web" services need 2 healthy backends
// to announce their VIP, "echo" services probe via: backend, and a BGP
// speaker (its peer, an unused address of the bed, never answers) makes
// the status say whether the VIP would be announced.
func viaConfig(appl, peer netip.Addr) func(*v1.Config) {
	return func(c *v1.Config) {
		for i := range c.Services {
			s := &c.Services[i]
			switch {
			case strings.HasPrefix(s.Name, "web"):
				s.MinHealthy = 2
			case strings.HasPrefix(s.Name, "echo"):
				s.Health.Via = "backend"
			}
		}
		c.BGP = &v1.BGP{ASN: 65010, RouterID: appl.String(), Drain: v1.Duration(100 * time.Millisecond),
			Peers: []v1.BGPPeer{{Address: peer.String(), ASN: 65000}}}
	}
}

// viaFault is a fault made on one backend, and how to undo it.
type viaFault struct {
	name        string
	apply, undo func() error
	// reason is what the status must say of the backend while it is down.
	reason string
	// missing is what `dsrctl backend check` on the backend must name
	// first while the fault lasts.
	missing string
	// ip is the backend's address in the services: be.IP when unset.
	ip netip.Addr
}

// backendStatus finds backend ip of service svc in st.
func backendStatus(st *v1.Status, svc string, ip netip.Addr) (*v1.ServiceStatus, *v1.BackendStatus) {
	for i := range st.Services {
		s := &st.Services[i]
		if s.Name != svc {
			continue
		}
		for j := range s.Backends {
			if s.Backends[j].IP == ip.String() {
				return s, &s.Backends[j]
			}
		}
	}
	return nil, nil
}

// waitHealth polls the status until backend ip of svc has health want,
// and returns how long that took and the status then; it fails t after
// limit.
func waitHealth(ctx context.Context, t *testing.T, appl *nsbed.Appliance, svc string, ip netip.Addr, want string, limit time.Duration) (time.Duration, *v1.Status) {
	t.Helper()
	start := time.Now()
	for {
		st, err := appl.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if _, b := backendStatus(st, svc, ip); b != nil && b.Health == want && (want != "healthy" || b.Forwarding == "active") {
			return time.Since(start), st
		}
		if time.Since(start) > limit {
			_, b := backendStatus(st, svc, ip)
			t.Fatalf("%s/%s not %s after %v: %+v", svc, ip, want, limit, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkViaFault makes fault on backend be of bes and checks: be goes down
// in service web (probed through the VIP) within fall x interval + 1 s,
// with a reason that names the fault, while in service echo (via: backend)
// it stays healthy; be still answers on its own address but gets none of
// the client's new connections to url, which the others all serve; the
// VIP stays announced (min_healthy 2 of 3). Undone, be comes back.
// neighbour is a host that reaches be's own address.
func checkViaFault(ctx context.Context, t *testing.T, appl *nsbed.Appliance, client, neighbour *nsbed.NS, url, web, echo string,
	bes nsbed.Backends, be *nsbed.Backend, fault viaFault) {
	if err := fault.apply(); err != nil {
		t.Fatalf("%s: %v", fault.name, err)
	}
	undone := false
	defer func() {
		if !undone {
			_ = fault.undo()
		}
	}()
	ip := fault.ip
	if !ip.IsValid() {
		ip = be.IP
	}
	took, st := waitHealth(ctx, t, appl, web, ip, "unhealthy", 10*time.Second)
	bound := viaFall*viaInterval + time.Second
	t.Logf("%s on %s: %s down after %v (bound %v)", fault.name, be.Name, web, took.Round(10*time.Millisecond), bound)
	if took > bound {
		t.Errorf("%s/%s went down after %v, want at most fall x interval + 1s = %v", web, be.Name, took, bound)
	}
	svc, b := backendStatus(st, web, ip)
	t.Logf("status of %s/%s: probe %+v, reason %q", web, be.Name, *b.Probe, b.HealthReason)
	if b.Probe == nil || b.Probe.Via != "vip" || !strings.Contains(b.HealthReason, fault.reason) {
		t.Errorf("%s/%s: probe %+v, reason %q; want via vip and a reason containing %q", web, be.Name, b.Probe, b.HealthReason, fault.reason)
	}
	// The event of the transition carries the same reason.
	var evs v1.EventList
	if err := appl.Get(ctx, "/api/v1/events", &evs); err != nil {
		t.Fatal(err)
	}
	object := "service " + web + "/backend " + ip.String()
	found := false
	for _, e := range evs.Events {
		if e.Kind == v1.EventHealth && e.Object == object && e.Data["state"] == "down" && strings.Contains(e.Reason, fault.reason) {
			found = true
		}
	}
	if !found {
		t.Errorf("no health event %q down with a reason containing %q in %+v", object, fault.reason, evs.Events)
	}
	// dsrctl backend check on the backend names what is missing.
	out, err := be.NS.Run(bins.Dsrctl, "backend", "check", "--vip", svc.VIP, "--mode", svc.Mode, "--port", "80", "--dev", be.Iface)
	t.Logf("dsrctl backend check on %s: %v\n%s", be.Name, err, out)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "MISSING  "+fault.missing) {
		t.Errorf("dsrctl backend check on %s: %v, want exit code 1 naming %q", be.Name, err, fault.missing)
	}
	if !svc.Announced {
		t.Errorf("VIP %s withdrawn with 2 of 3 backends up (min_healthy 2): %s", svc.VIP, svc.Reason)
	}
	// via: backend does not see the fault.
	if _, e := backendStatus(st, echo, ip); e == nil || e.Health != "healthy" || e.Forwarding != "active" || e.Probe == nil || e.Probe.Via != "backend" {
		t.Errorf("%s/%s (via: backend): %+v, want healthy and active: the fault is invisible to it", echo, be.Name, e)
	}
	// Its own address still answers (asked from a host on its subnet).
	own, err := nsbed.CurlMany(ctx, neighbour, "http://"+netip.AddrPortFrom(ip, 80).String()+"/", 1)
	if err != nil || own.OK != 1 || own.PerBackend[be.Name] != 1 {
		t.Errorf("%s's own address: %+v %v, want it to answer", be.Name, own, err)
	}
	// New connections go to the others only, and all succeed.
	const n = 30
	got, err := nsbed.CurlMany(ctx, client, url, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d requests while %s is down: %s", fault.name, n, be.Name, got.Spread())
	if got.OK != n || got.PerBackend[be.Name] != 0 {
		t.Errorf("got %d of %d answers, %d from %s; want all, none from it (errors %v)", got.OK, n, got.PerBackend[be.Name], be.Name, got.Errors)
	}
	for _, o := range bes {
		if o != be && got.PerBackend[o.Name] == 0 {
			t.Errorf("%s answered nothing (spread %s)", o.Name, got.Spread())
		}
	}
	undone = true
	if err := fault.undo(); err != nil {
		t.Fatalf("undo %s: %v", fault.name, err)
	}
	took, _ = waitHealth(ctx, t, appl, web, ip, "healthy", 10*time.Second)
	t.Logf("%s undone: %s/%s up after %v", fault.name, web, be.Name, took.Round(10*time.Millisecond))
}

// checkProbeSources checks, from the backends' own counts, that each
// received probes through every VIP of vips from source ports of one block
// of its own: no probe reached a backend it was not for. It also checks the
// appliance's per-backend probe counters.
func checkProbeSources(ctx context.Context, t *testing.T, w *nsbed.ProbeWatch, appl *nsbed.Appliance, vips ...netip.Addr) {
	t.Helper()
	seen, err := w.Seen()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe source ports seen by the backends: %v", seen)
	for _, p := range nsbed.ProbeProblems(seen, vips...) {
		t.Error(p)
	}
	var st v1.Stats
	if err := appl.Get(ctx, "/api/v1/stats", &st); err != nil {
		t.Fatal(err)
	}
	if st.Totals.ProbesSent == 0 || st.Totals.ProbeReplies == 0 || st.Drops["probe_unmatched"] != 0 {
		t.Errorf("probes sent %d, replies %d, unmatched %d; want some, some, none", st.Totals.ProbesSent, st.Totals.ProbeReplies, st.Drops["probe_unmatched"])
	}
	for _, s := range st.Services {
		for _, b := range s.Backends {
			if strings.HasPrefix(s.Name, "web") && b.Probes == 0 {
				t.Errorf("%s/%s: no probe sent by the appliance's count", s.Name, b.IP)
			}
			if strings.HasPrefix(s.Name, "echo") && b.Probes != 0 {
				t.Errorf("%s/%s (via: backend): %d probes through the VIP", s.Name, b.IP, b.Probes)
			}
		}
	}
}

// vipOffLoL2 is the fault of an L2 bed's VIP vip (either family) removed
// from lo on backend be, which the services know by its address of vip's
// family.
func vipOffLoL2(be *nsbed.Backend, vip netip.Addr) viaFault {
	pfx := netip.PrefixFrom(vip, vip.BitLen()).String()
	lo := func(op string) func() error {
		return func() error { _, err := be.NS.Run("ip", "addr", op, pfx, "dev", "lo"); return err }
	}
	f := viaFault{name: "VIP removed from lo", apply: lo("del"), undo: lo("add"),
		reason:  fmt.Sprintf("no answer from the VIP %s through l2", netip.AddrPortFrom(vip, 80)),
		missing: fmt.Sprintf("VIP %s on lo", pfx)}
	if vip.Is6() {
		f.name, f.ip = "IPv6 VIP removed from lo", be.IP6
	}
	return f
}

// TestHealthViaVIPL2: in L2 DSR a backend without the VIP on lo (its own
// address still answers) is taken down by the monitor through the VIP
// and not by the one of its own address.
func TestHealthViaVIPL2(t *testing.T) {
	peer := netip.MustParseAddr("10.99.0.254")
	token := newAPIToken(t) // checkUnresolvedNotProbed adds a backend
	l := startL2(t, nsbed.L2Options{Config: func(c *v1.Config) {
		viaConfig(nsbed.L2ApplianceIP, peer)(c)
		c.API.Token = token
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w, err := nsbed.WatchProbes(l.Backends, nsbed.L2ApplianceIP, nsbed.L2VIP)
	if err != nil {
		t.Fatal(err)
	}
	be := l.Backends[0]
	checkViaFault(ctx, t, l.Appliance, l.Client, l.Client, l.URL("/"), "web", "echo", l.Backends, be, vipOffLoL2(be, nsbed.L2VIP))
	checkProbeSources(ctx, t, w, l.Appliance, nsbed.L2VIP)
	checkUnresolvedNotProbed(ctx, t, l.Appliance, "web", netip.MustParseAddr("10.99.0.253"))
}

// checkUnresolvedNotProbed adds ghost, an address of the bed no host has,
// to service svc (probed through the VIP): it stays down with the reason
// that its next hop is not resolved, and the appliance sends it no probe
// and drops none as no_route (it did at start, before the fix, for the
// backends whose ARP answer had not come yet).
func checkUnresolvedNotProbed(ctx context.Context, t *testing.T, appl *nsbed.Appliance, svc string, ghost netip.Addr) {
	t.Helper()
	if err := appl.Change(ctx, http.MethodPost, "/api/v1/services/"+svc+"/backends", map[string]string{"ip": ghost.String()}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(viaFall*viaInterval + time.Second) // probe rounds that would have reached it
	st, err := appl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, b := backendStatus(st, svc, ghost)
	if b == nil || b.Health == "healthy" || !strings.Contains(b.HealthReason, "the next hop to "+ghost.String()+" is not resolved") {
		t.Errorf("%s/%s (no such host): %+v, want down, its next hop not resolved", svc, ghost, b)
	} else {
		t.Logf("%s/%s (no such host): health %s, reason %q", svc, ghost, b.Health, b.HealthReason)
	}
	var stats v1.Stats
	if err := appl.Get(ctx, "/api/v1/stats", &stats); err != nil {
		t.Fatal(err)
	}
	if n := stats.Drops["no_route"]; n != 0 {
		t.Errorf("%d probes dropped as no_route since the start, want none", n)
	}
	for _, s := range stats.Services {
		for _, sb := range s.Backends {
			if s.Name == svc && sb.IP == ghost.String() && sb.Probes != 0 {
				t.Errorf("%s/%s: %d probes sent to a next hop not resolved", svc, ghost, sb.Probes)
			}
		}
	}
}

// TestHealthViaVIPL2IPv6: the same over IPv6 in the dual-stack L2 bed: a
// backend without the IPv6 VIP on lo (its own IPv6 address, and the IPv4
// VIP, still answer) is taken down in web6, probed through the IPv6 VIP
// from the port's ip6, and not in echo6 (via: backend); the probes reach
// the one backend each is for, over both families.
func TestHealthViaVIPL2IPv6(t *testing.T) {
	peer := netip.MustParseAddr("10.99.0.254")
	l := startL2(t, nsbed.L2Options{IPv6: true, Config: viaConfig(nsbed.L2ApplianceIP, peer)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w6, err := nsbed.WatchProbes6(l.Backends, nsbed.L2ApplianceIP6, nsbed.L2VIP6)
	if err != nil {
		t.Fatal(err)
	}
	w4, err := nsbed.WatchProbes(l.Backends, nsbed.L2ApplianceIP, nsbed.L2VIP)
	if err != nil {
		t.Fatal(err)
	}
	be := l.Backends[0]
	checkViaFault(ctx, t, l.Appliance, l.Client, l.Client, l.URL6("/"), "web6", "echo6", l.Backends, be, vipOffLoL2(be, nsbed.L2VIP6))
	checkProbeSources(ctx, t, w6, l.Appliance, nsbed.L2VIP6)
	checkProbeSources(ctx, t, w4, l.Appliance, nsbed.L2VIP)
}

// TestHealthViaVIPL3: in IPIP and GRE DSR a backend without the VIP on lo,
// then one without the decapsulator for the VIP (VIP still on lo), is
// taken down by the monitor through the VIP and not by the one of its own
// address.
func TestHealthViaVIPL3(t *testing.T) {
	peer := netip.MustParseAddr("10.96.1.254")
	l := startL3(t, nsbed.L3Options{Config: viaConfig(nsbed.L3ApplianceIP, peer)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var vips []netip.Addr
	for _, mode := range nsbed.L3Modes {
		vips = append(vips, nsbed.L3VIP(mode))
	}
	w, err := nsbed.WatchProbes(l.Backends, nsbed.L3ApplianceIP, vips...)
	if err != nil {
		t.Fatal(err)
	}
	for i, mode := range nsbed.L3Modes {
		be := l.Backends[i]
		vip := nsbed.L3VIP(mode)
		addr := vip.String() + "/32"
		lo := func(op string) func() error {
			return func() error { _, err := be.NS.Run("ip", "addr", op, addr, "dev", "lo"); return err }
		}
		t.Run(mode, func(t *testing.T) {
			checkViaFault(ctx, t, l.Appliance, l.Client, l.Router, l.URL(mode, "/"), "web-"+mode, "echo-"+mode, l.Backends, be, viaFault{
				name: "VIP removed from lo", apply: lo("del"), undo: lo("add"),
				reason:  fmt.Sprintf("no answer from the VIP %s:80 through %s", vip, mode),
				missing: fmt.Sprintf("VIP %s/32 on lo", vip),
			})
			checkViaFault(ctx, t, l.Appliance, l.Client, l.Router, l.URL(mode, "/"), "web-"+mode, "echo-"+mode, l.Backends, be, viaFault{
				name: "decapsulator removed",
				// teardown takes the VIP off the decapsulator (and lo,
				// which gets it back): only the decapsulation is missing.
				apply: func() error {
					if _, err := be.NS.Run(bins.Dsrctl, "backend", "teardown", "--vip", vip.String(), "--mode", mode, "--dev", be.Iface); err != nil {
						return err
					}
					return lo("add")()
				},
				undo: func() error {
					return nsbed.SetupDSRBackend(be.NS, bins.Dsrctl, vip, mode, be.Iface)
				},
				reason:  fmt.Sprintf("check the VIP on lo and the decapsulator on %s", be.IP),
				missing: fmt.Sprintf("decapsulator on %s for %s %s", be.Iface, vip, mode),
			})
		})
	}
	checkProbeSources(ctx, t, w, l.Appliance, vips...)
}
