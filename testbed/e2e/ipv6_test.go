package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// TestIPv6KernelSide checks the appliance's kernel side over IPv6 in the
// L2 bed made dual-stack, with the IPv4 services only: the port's ip6 is
// on the tap, neighbour discovery and ICMPv6 echo for it reach the
// appliance's kernel through the exception path and are answered, and that
// kernel learns the client's MAC by neighbour discovery.
func TestIPv6KernelSide(t *testing.T) {
	l := startL2(t, nsbed.L2Options{Backends: 1,
		Topology: nsbed.WithL2IPv6,
		Config: func(c *v1.Config) {
			c.Dataplane.Ports[0].IP6 = netip.PrefixFrom(nsbed.L2ApplianceIP6, nsbed.L2Subnet6.Bits()).String()
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	appl := l.Host("appl")
	tap := "dsr-eth0"

	t.Run("ip6 on the tap", func(t *testing.T) {
		out, err := appl.Run("ip", "-j", "-6", "addr", "show", "dev", tap)
		if err != nil {
			t.Fatal(err)
		}
		var links []struct {
			AddrInfo []struct {
				Local     string `json:"local"`
				PrefixLen int    `json:"prefixlen"`
				Scope     string `json:"scope"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal([]byte(out), &links); err != nil {
			t.Fatal(err)
		}
		var global []string
		for _, l := range links {
			for _, a := range l.AddrInfo {
				if a.Scope == "global" {
					global = append(global, netip.PrefixFrom(netip.MustParseAddr(a.Local), a.PrefixLen).String())
				}
			}
		}
		want := netip.PrefixFrom(nsbed.L2ApplianceIP6, nsbed.L2Subnet6.Bits()).String()
		if len(global) != 1 || global[0] != want {
			t.Errorf("global IPv6 addresses on %s: %v, want [%s]", tap, global, want)
		}
	})

	t.Run("neighbour discovery and echo through the tap", func(t *testing.T) {
		before := mustStats(ctx, t, l.Appliance)
		if out, err := l.Client.Run("ping", "-6", "-c3", "-i0.2", "-W2", nsbed.L2ApplianceIP6.String()); err != nil {
			t.Fatalf("ping -6 %s from the client: %v\n%s", nsbed.L2ApplianceIP6, err, out)
		}
		after := mustStats(ctx, t, l.Appliance)
		d := after.Sub(before)
		mac, err := l.Client.Neighbor(nsbed.L2ApplianceIP6.String())
		if err != nil {
			t.Fatal(err)
		}
		if mac != l.ApplianceMAC {
			t.Errorf("the client resolved %s to %q, want the appliance's %s", nsbed.L2ApplianceIP6, mac, l.ApplianceMAC)
		}
		// Three echo requests and at least one neighbour solicitation or
		// advertisement went to the kernel; its answers came back out.
		t.Logf("appliance delta: rx %d to kernel %d from kernel %d dropped %d", d.Totals.RxPackets, d.Totals.ToKernel, d.Totals.FromKernel, d.Totals.Dropped)
		if d.Totals.ToKernel < 4 || d.Totals.FromKernel < 4 {
			t.Errorf("to kernel +%d, from kernel +%d; want at least 4 each (3 echoes and neighbour discovery)", d.Totals.ToKernel, d.Totals.FromKernel)
		}
		if d.Totals.Dropped != 0 {
			t.Errorf("appliance dropped %d packets: %v", d.Totals.Dropped, d.NonZeroDrops())
		}
		out, err := appl.Run("ip", "-6", "neigh", "show", nsbed.L2ClientIP6.String(), "dev", tap)
		if err != nil {
			t.Fatal(err)
		}
		cmac, err := l.Client.LinkMAC("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "lladdr "+cmac) {
			t.Errorf("appliance kernel's neighbour entry for the client: %q, want lladdr %s", out, cmac)
		}
	})
}
