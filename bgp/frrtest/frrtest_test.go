package frrtest

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBGPConfigString(t *testing.T) {
	got := BGPConfig{
		ASN: 65000, RouterID: "10.252.0.1",
		Neighbors: []Peer{{Address: "10.252.0.2", ASN: 65010, Password: "k", IPv6: true}, {Address: "10.252.0.3", ASN: 65011, Passive: true}},
	}.String()
	for _, want := range []string{
		"router bgp 65000\n",
		" bgp router-id 10.252.0.1\n",
		" no bgp ebgp-requires-policy\n",
		" bgp bestpath as-path multipath-relax\n",
		" neighbor 10.252.0.2 remote-as 65010\n",
		" neighbor 10.252.0.2 password k\n",
		" neighbor 10.252.0.3 passive\n",
		"  maximum-paths 4\n",
		" address-family ipv6 unicast\n  neighbor 10.252.0.2 activate\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "neighbor 10.252.0.3 activate") {
		t.Errorf("IPv4-only neighbour activated for IPv6:\n%s", got)
	}
}

func TestRouter(t *testing.T) {
	Require(t)
	r := NewNetns(t, UniqueName("r"))
	a := NewNetns(t, UniqueName("a"))
	Veth(t, r, "eth0", netip.MustParsePrefix("10.252.0.1/24"), a, "eth0", netip.MustParsePrefix("10.252.0.2/24"))
	start := time.Now()
	rt := Start(t, r.Name, BGPConfig{ASN: 65000, RouterID: "10.252.0.1",
		Neighbors: []Peer{{Address: "10.252.0.2", ASN: 65010}}}.String())
	t.Logf("router answering after %v", time.Since(start))

	n, err := rt.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	if got := n["10.252.0.2"]; got.RemoteAS != 65010 || got.LocalAS != 65000 || got.State == "Established" {
		t.Errorf("neighbour 10.252.0.2: got %+v, want remote AS 65010, local 65000, not established", got)
	}
	connected := netip.MustParsePrefix("10.252.0.0/24")
	routes, err := rt.Route(connected)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Protocol != "connected" || !routes[0].Installed {
		t.Errorf("route %s: got %+v, want one installed connected route", connected, routes)
	}
	if k, err := rt.KernelRoute(connected); err != nil || !strings.Contains(k, "dev eth0") {
		t.Errorf("kernel route %s: got %q, %v", connected, k, err)
	}
	if p, err := rt.BGPPaths(netip.MustParsePrefix("10.253.0.10/32")); err != nil || len(p) != 0 {
		t.Errorf("BGP paths of an unknown prefix: got %v, %v; want none", p, err)
	}
	if err := rt.Configure("router bgp 65000", "neighbor 10.252.0.3 remote-as 65011"); err != nil {
		t.Fatal(err)
	}
	if n, err := rt.Neighbors(); err != nil || n["10.252.0.3"].RemoteAS != 65011 {
		t.Errorf("after Configure: got %+v, %v; want neighbour 10.252.0.3", n, err)
	}

	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := rt.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(RunDir, r.Name)); !os.IsNotExist(err) {
		t.Errorf("%s/%s still there after Stop (%v)", RunDir, r.Name, err)
	}
	if _, err := rt.Vtysh("show version"); err == nil {
		t.Error("vtysh still answers after Stop")
	}
}
