package bgp

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/bgp/frrtest"
	"github.com/rs/zerolog"
)

// TestFRR runs the speaker against a real FRR 8.4 router.
//
// Topology: two network namespaces joined by a veth,
//
//	router  ns …-r  eth0 10.252.0.1/24 fd00:252::1/64   FRR zebra+bgpd, AS 65000
//	speaker ns …-a  eth0 10.252.0.2/24 fd00:252::2/64   dsrlb speaker,   AS 65010
//
// The namespace question: GoBGP opens its sockets from its own goroutines,
// on whatever OS thread they run, and the Go runtime starts new threads from
// a template thread, not from a thread that called setns. So setns on a
// locked thread cannot confine GoBGP. Instead the test re-executes its own
// binary with "ip netns exec <speaker ns>" and -test.run=^TestFRR$ (marked
// by an environment variable): that child process lives entirely in the
// speaker's namespace and runs the speaker in-process with ordinary Go
// assertions, while it reaches FRR through vtysh (unix sockets, no
// namespace needed) and "ip -n <router ns>". The parent owns the
// namespaces and the FRR processes and removes them in t.Cleanup even if
// the child fails or hangs; the child's output is relayed into this test's
// log.
func TestFRR(t *testing.T) {
	if ns := os.Getenv(frrChildEnv); ns != "" {
		frrChild(t, ns)
		return
	}
	if testing.Short() {
		t.Skip("starts FRR; skipped in -short mode")
	}
	frrtest.Require(t)
	r := frrtest.NewNetns(t, frrtest.UniqueName("r"))
	a := frrtest.NewNetns(t, frrtest.UniqueName("a"))
	frrtest.Veth(t, r, "eth0", netip.MustParsePrefix("10.252.0.1/24"), a, "eth0", netip.MustParsePrefix("10.252.0.2/24"))
	if err := r.AddAddr("eth0", netip.MustParsePrefix("fd00:252::1/64")); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("eth0", netip.MustParsePrefix("fd00:252::2/64")); err != nil {
		t.Fatal(err)
	}
	frrtest.Start(t, r.Name, frrtest.BGPConfig{
		ASN: 65000, RouterID: "10.252.0.1",
		Neighbors: []frrtest.Peer{{Address: "10.252.0.2", ASN: 65010, IPv6: true}},
	}.String())

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := a.Command(ctx, exe, "-test.run=^TestFRR$", "-test.v", "-test.count=1", "-test.timeout=45s")
	cmd.Env = append(os.Environ(), frrChildEnv+"="+r.Name)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log("child: " + sc.Text())
		}
	}()
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("speaker process in %s: %v", a.Name, err)
	}
}

// frrChildEnv names the router namespace in the re-executed child.
const frrChildEnv = "DSRLB_BGP_FRR_CHILD"

var (
	frrVIP  = netip.MustParsePrefix("10.253.0.10/32")
	frrVIP6 = netip.MustParsePrefix("2001:db8:253::10/128")
)

// frrChild is TestFRR inside the speaker's namespace; routerNS is FRR's.
func frrChild(t *testing.T, routerNS string) {
	rt := frrtest.Attach(routerNS)
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	cfg := Config{
		ASN:      65010,
		RouterID: netip.MustParseAddr("10.252.0.2"),
		NextHop:  netip.MustParseAddr("10.252.0.2"),
		NextHop6: netip.MustParseAddr("fd00:252::2"),
		Peers:    []Peer{{Address: netip.MustParseAddr("10.252.0.1"), ASN: 65000, HoldTime: 9 * time.Second}},
	}

	start := time.Now()
	s, err := New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait(t, "speaker sees the session established", 20*time.Second, func() bool {
		ps := s.Peers()
		return len(ps) == 1 && ps[0].State == "established"
	})
	rt.WaitEstablished(t, "10.252.0.2", 5*time.Second)
	t.Logf("TIMING session established %v after New", time.Since(start).Round(time.Millisecond))
	if ps := s.Peers()[0]; ps.HoldTime != 9*time.Second || ps.ASN != 65000 {
		t.Errorf("peer status: got %+v, want hold time 9s (min of 9 and FRR's 180), asn 65000", ps)
	}

	t.Run("announce and withdraw IPv4", func(t *testing.T) {
		start := time.Now()
		if err := s.Set([]netip.Prefix{frrVIP}); err != nil {
			t.Fatal(err)
		}
		var kernel string
		wait(t, "kernel route via 10.252.0.2 in the router namespace", 10*time.Second, func() bool {
			kernel, _ = rt.KernelRoute(frrVIP)
			return strings.Contains(kernel, "via 10.252.0.2") && strings.Contains(kernel, "proto bgp")
		})
		t.Logf("TIMING announce: Set to kernel route %v (%q)", time.Since(start).Round(time.Microsecond), kernel)
		routes, err := rt.Route(frrVIP)
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) != 1 || routes[0].Protocol != "bgp" || !routes[0].Installed ||
			strings.Join(routes[0].FIBNexthops(), ",") != "10.252.0.2" {
			t.Errorf("show ip route json: got %+v, want one installed bgp route via 10.252.0.2", routes)
		}
		paths, err := rt.BGPPaths(frrVIP)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != 1 || paths[0].MED != ActiveMED || paths[0].ASPath.String != "65010" {
			t.Errorf("show bgp json: got %+v, want one path, MED 0, AS path 65010", paths)
		}
		if ps := s.Peers()[0]; ps.PrefixesSent != 1 {
			t.Errorf("PrefixesSent: got %d, want 1", ps.PrefixesSent)
		}

		start = time.Now()
		if err := s.Set(nil); err != nil {
			t.Fatal(err)
		}
		wait(t, "kernel route gone", 10*time.Second, func() bool {
			kernel, _ = rt.KernelRoute(frrVIP)
			return kernel == ""
		})
		t.Logf("TIMING withdraw: Set(nil) to kernel route gone %v", time.Since(start).Round(time.Microsecond))
		if routes, err := rt.Route(frrVIP); err != nil || len(routes) != 0 {
			t.Errorf("show ip route json after withdraw: got %+v, %v; want none", routes, err)
		}
	})

	t.Run("announce and withdraw IPv6", func(t *testing.T) {
		start := time.Now()
		if err := s.Set([]netip.Prefix{frrVIP6}); err != nil {
			t.Fatal(err)
		}
		var kernel string
		wait(t, "IPv6 kernel route via fd00:252::2", 10*time.Second, func() bool {
			kernel, _ = rt.KernelRoute(frrVIP6)
			return strings.Contains(kernel, "via fd00:252::2") && strings.Contains(kernel, "proto bgp")
		})
		t.Logf("TIMING announce IPv6: Set to kernel route %v (%q)", time.Since(start).Round(time.Microsecond), kernel)
		routes, err := rt.Route(frrVIP6)
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) != 1 || routes[0].Protocol != "bgp" || !routes[0].Installed ||
			strings.Join(routes[0].FIBNexthops(), ",") != "fd00:252::2" {
			t.Errorf("show ipv6 route json: got %+v; want one installed bgp /128 via fd00:252::2", routes)
		}
		// The path came in the IPv6 unicast family (RFC 4760) with the
		// configured global next hop only.
		paths, err := rt.BGPPaths(frrVIP6)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != 1 || paths[0].MED != ActiveMED || paths[0].ASPath.String != "65010" || !paths[0].Valid ||
			len(paths[0].Nexthops) != 1 || paths[0].Nexthops[0].IP != "fd00:252::2" || paths[0].Nexthops[0].AFI != "ipv6" ||
			paths[0].Nexthops[0].Scope != "global" {
			t.Errorf("show bgp ipv6 unicast json: got %+v, want one valid path, MED 0, AS path 65010, next hop fd00:252::2 (ipv6, global)", paths)
		}
		if ps := s.Peers()[0]; ps.PrefixesSent != 1 {
			t.Errorf("PrefixesSent: got %d, want 1", ps.PrefixesSent)
		}
		start = time.Now()
		if err := s.Set(nil); err != nil {
			t.Fatal(err)
		}
		wait(t, "IPv6 kernel route gone", 10*time.Second, func() bool {
			kernel, _ = rt.KernelRoute(frrVIP6)
			return kernel == ""
		})
		t.Logf("TIMING withdraw IPv6: Set(nil) to kernel route gone %v", time.Since(start).Round(time.Microsecond))
	})

	kernelVia := func(p netip.Prefix, nh string) func() bool {
		return func() bool {
			k, _ := rt.KernelRoute(p)
			return strings.Contains(k, "via "+nh) && strings.Contains(k, "proto bgp")
		}
	}

	t.Run("standby by MED", func(t *testing.T) {
		if err := s.Set([]netip.Prefix{frrVIP}); err != nil {
			t.Fatal(err)
		}
		wait(t, "active route in the kernel", 10*time.Second, kernelVia(frrVIP, "10.252.0.2"))
		if err := s.SetRole(RoleStandby); err != nil {
			t.Fatal(err)
		}
		var paths []frrtest.BGPPath
		d := wait(t, "MED 100 at FRR", 10*time.Second, func() bool {
			paths, _ = rt.BGPPaths(frrVIP)
			return len(paths) == 1 && paths[0].MED == StandbyMEDValue
		})
		t.Logf("TIMING role change to standby seen by FRR after %v: MED %d, AS path %q", d.Round(time.Microsecond), paths[0].MED, paths[0].ASPath.String)
		// The only path, standby or not, is still the route: the
		// attribute change is an implicit replacement, no withdrawal.
		wait(t, "standby route in the kernel", 10*time.Second, kernelVia(frrVIP, "10.252.0.2"))
	})

	// Close withdraws and sends a Cease; FRR drops the route.
	start = time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	d := wait(t, "route gone from FRR after Close", 10*time.Second, func() bool {
		p, err := rt.BGPPaths(frrVIP)
		k, _ := rt.KernelRoute(frrVIP)
		return err == nil && len(p) == 0 && k == ""
	})
	t.Logf("TIMING Close to route gone from FRR's BGP table and kernel %v", d.Round(time.Microsecond))
	wait(t, "FRR to see the session down", 10*time.Second, func() bool {
		n, err := rt.Neighbors()
		return err == nil && n["10.252.0.2"].State != "Established"
	})

	t.Run("standby by prepend", func(t *testing.T) {
		pc := cfg
		pc.Role, pc.StandbyBy = RoleStandby, StandbyPrepend
		start := time.Now()
		s2, err := New(pc, logger)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if err := s2.Set([]netip.Prefix{frrVIP}); err != nil {
			t.Fatal(err)
		}
		var paths []frrtest.BGPPath
		want := "65010 65010 65010 65010"
		wait(t, "prepended path at FRR", 20*time.Second, func() bool {
			paths, _ = rt.BGPPaths(frrVIP)
			return len(paths) == 1 && paths[0].ASPath.String == want
		})
		wait(t, "prepended route in the kernel", 10*time.Second, kernelVia(frrVIP, "10.252.0.2"))
		t.Logf("TIMING new speaker to route in FRR's kernel %v", time.Since(start).Round(time.Millisecond))
		if paths[0].MED != ActiveMED {
			t.Errorf("MED of a prepending standby: got %d, want %d", paths[0].MED, ActiveMED)
		}
	})
}

// wait polls cond every 5 ms and returns how long it took to hold.
func wait(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}
