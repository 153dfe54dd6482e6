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
