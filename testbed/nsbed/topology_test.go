package nsbed

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRoutedTopology builds a two-segment bed with a router, the shape of
// the L3 DSR bed, and checks that a client reaches a server across it and
// that Close leaves nothing behind.
func TestRoutedTopology(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b, err := New(Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := netip.MustParsePrefix
	n, err := b.Build(Topology{
		Segments: []Segment{{Name: "front"}, {Name: "back", MTU: 1400}},
		Hosts: []Host{
			{Name: "client", Links: []Link{{Segment: "front", Addrs: []netip.Prefix{p("10.98.1.10/24")}}},
				Routes: []Route{{Via: netip.MustParseAddr("10.98.1.1")}}},
			{Name: "rtr", Forwarding: true, Links: []Link{
				{Segment: "front", Addrs: []netip.Prefix{p("10.98.1.1/24")}},
				{Segment: "back", Addrs: []netip.Prefix{p("10.98.2.1/24")}}}},
			{Name: "srv", Links: []Link{{Segment: "back", Addrs: []netip.Prefix{p("10.98.2.20/24")}}},
				Routes: []Route{{Dst: p("10.98.1.0/24"), Via: netip.MustParseAddr("10.98.2.1")}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := n.Host("client").Run("ping", "-c1", "-W2", "10.98.2.20"); err != nil {
		t.Fatalf("client cannot reach srv through rtr: %v\n%s", err, out)
	}
	out, err := n.Host("srv").Run("ip", "-o", "link", "show", "eth0")
	if err != nil || !strings.Contains(out, "mtu 1400") {
		t.Errorf("srv eth0: got %q (%v), want mtu 1400 from the segment", out, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := n.Host("client").DialContext(ctx, "tcp", "10.98.2.20:1"); err == nil {
		c.Close()
		t.Errorf("dial to a closed port succeeded")
	} else if !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial from the client namespace: got %v, want connection refused from srv", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	list, _ := run(nil, "ip", "netns", "list")
	if strings.Contains(list, b.Prefix()) {
		t.Errorf("namespaces left after Close:\n%s", list)
	}
	if _, err := os.Stat(b.Dir()); !os.IsNotExist(err) {
		t.Errorf("work dir %s left after Close", b.Dir())
	}
}

// TestRoutedTopologyIPv6 is TestRoutedTopology over IPv6 beside IPv4: the
// addresses are usable at once (no DAD), the router forwards IPv6, and an
// IPv6 address on a host without IPv6 is refused.
func TestRoutedTopologyIPv6(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b, err := New(Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	n, err := b.Build(Topology{
		Segments: []Segment{{Name: "front"}, {Name: "back"}},
		Hosts: []Host{
			{Name: "client", IPv6: true, Links: []Link{{Segment: "front", Addrs: []netip.Prefix{p("10.98.1.10/24"), p("fd00:98:1::10/64")}}},
				Routes: []Route{{Via: a("10.98.1.1")}, {Via: a("fd00:98:1::1")}}},
			{Name: "rtr", IPv6: true, Forwarding: true, Links: []Link{
				{Segment: "front", Addrs: []netip.Prefix{p("10.98.1.1/24"), p("fd00:98:1::1/64")}},
				{Segment: "back", Addrs: []netip.Prefix{p("10.98.2.1/24"), p("fd00:98:2::1/64")}}}},
			{Name: "srv", IPv6: true, Links: []Link{{Segment: "back", Addrs: []netip.Prefix{p("10.98.2.20/24"), p("fd00:98:2::20/64")}}},
				Routes: []Route{{Via: a("10.98.2.1")}, {Via: a("fd00:98:2::1")}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"10.98.2.20", "fd00:98:2::20"} {
		if out, err := n.Host("client").Run("ping", "-c1", "-W2", dst); err != nil {
			t.Errorf("client cannot reach srv %s through rtr: %v\n%s", dst, err, out)
			for _, h := range []string{"client", "rtr", "srv"} {
				o1, _ := n.Host(h).Run("ip", "-6", "addr")
				o2, _ := n.Host(h).Run("ip", "-6", "route")
				o3, _ := n.Host(h).Run("ip", "-6", "neigh")
				t.Logf("%s:\n%s\n%s\n%s", h, o1, o2, o3)
			}
		}
	}
	if out, err := n.Host("client").Run("ip", "-6", "addr", "show", "dev", "eth0"); err != nil || strings.Contains(out, "tentative") {
		t.Errorf("client eth0: got %q (%v), want no tentative address", out, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := n.Host("client").DialContext(ctx, "tcp", "[fd00:98:2::20]:1"); err == nil {
		c.Close()
		t.Errorf("dial to a closed port succeeded")
	} else if !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial over IPv6: got %v, want connection refused from srv", err)
	}

	b2, err := New(Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	_, err = b2.Build(Topology{Segments: []Segment{{Name: "lan"}},
		Hosts: []Host{{Name: "h", Links: []Link{{Segment: "lan", Addrs: []netip.Prefix{p("fd00:98:1::10/64")}}}}}})
	if err == nil || !strings.Contains(err.Error(), "IPv6 off") {
		t.Errorf("IPv6 address on a host without IPv6: got %v, want an error", err)
	}
}

// TestIPv6Addresses pins the IPv6 addresses of the beds' hosts, each the
// counterpart of its IPv4 one.
func TestIPv6Addresses(t *testing.T) {
	for _, tc := range []struct{ got, want netip.Addr }{
		{L2BackendIP6(1), netip.MustParseAddr("fd00:99::11")},
		{L3BackendIP6(3), netip.MustParseAddr("fd00:96:2::13")},
		{ECMPBackendIP6(2), netip.MustParseAddr("fd00:97::12")},
		{ECMPApplianceIP6(1), netip.MustParseAddr("fd00:97::3")},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
	for _, tc := range []struct {
		host string
		i    int
		ok   bool
	}{{"be1", 1, true}, {"be12", 12, true}, {"client", 0, false}, {"bex", 0, false}, {"rtr", 0, false}} {
		if i, ok := backendIndex(tc.host); i != tc.i || ok != tc.ok {
			t.Errorf("backendIndex(%q) = %d %v, want %d %v", tc.host, i, ok, tc.i, tc.ok)
		}
	}
}

// TestWithIPv6 checks what the dual-stack editors give each host of the
// L2, L3 and ECMP topologies: IPv6 on, and the IPv6 counterpart of every
// IPv4 address (none on the appliances' raw links).
func TestWithIPv6(t *testing.T) {
	l2, l3, ecmp := L2Topology(2), L3Topology(2, 1500), ECMPTopology(2)
	WithL2IPv6(&l2)
	WithL3IPv6(&l3)
	WithECMPIPv6(&ecmp)
	for _, tc := range []struct {
		desc string
		topo Topology
		want map[string]string // host -> its IPv6 addresses, space-separated
	}{
		{"l2", l2, map[string]string{"client": "fd00:99::10/64", "appl": "", "be1": "fd00:99::11/64", "be2": "fd00:99::12/64"}},
		{"l3", l3, map[string]string{"client": "fd00:96:1::10/64", "appl": "", "rtr": "fd00:96:1::1/64 fd00:96:2::1/64",
			"be1": "fd00:96:2::11/64", "be2": "fd00:96:2::12/64"}},
		{"ecmp", ecmp, map[string]string{"client": "fd00:97:1::10/64", "applA": "", "applB": "", "rtr": "fd00:97:1::1/64 fd00:97::1/64",
			"probe": "", "be1": "fd00:97::11/64", "be2": "fd00:97::12/64"}},
	} {
		for _, h := range tc.topo.Hosts {
			var got []string
			for _, l := range h.Links {
				for _, a := range l.Addrs {
					if a.Addr().Is6() {
						got = append(got, a.String())
					}
				}
			}
			if want, ok := tc.want[h.Name]; !ok || strings.Join(got, " ") != want || !h.IPv6 {
				t.Errorf("%s: host %s: IPv6 %v, addresses %q; want IPv6 on, %q", tc.desc, h.Name, h.IPv6, got, want)
			}
		}
	}
}
