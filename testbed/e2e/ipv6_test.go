package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
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

// TestIPv6L2DSR drives real traffic from an IPv6 client through the
// appliance to IPv6 backends in l2 mode, in the dual-stack L2 bed, and
// checks what it checks for IPv4 (balance, DSR evidence on the wire,
// counters) plus neighbour discovery: only the appliance answers it for
// the VIP, the backends, which hold the VIP on lo, never do. The same
// backends serve the IPv4 VIP: one dual-stack service.
func TestIPv6L2DSR(t *testing.T) {
	l := startL2(t, nsbed.L2Options{IPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	vip6 := nsbed.L2VIP6.String()

	t.Run("kernel side and IPv6 next hops", func(t *testing.T) {
		// Watch every neighbour advertisement the client receives while
		// it resolves the VIP afresh.
		na, err := l.Client.StartCapture("eth0", "icmp6 and ip6[40] == 136", 128)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Client.Run("ip", "-6", "neigh", "flush", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		for _, ip := range []string{nsbed.L2ApplianceIP6.String(), vip6} {
			if out, err := l.Client.Run("ping", "-6", "-c1", "-W2", ip); err != nil {
				t.Errorf("ping -6 %s from the client: %v\n%s", ip, err, out)
			}
		}
		if _, err := na.Stop(); err != nil {
			t.Fatal(err)
		}
		rows, err := na.Fields(ctx, "icmpv6.type == 136", "eth.src", "icmpv6.nd.na.target_address")
		if err != nil {
			t.Fatal(err)
		}
		byMAC := l.Backends.ByMAC()
		answeredVIP := 0
		for _, r := range rows {
			if len(r) < 2 {
				continue
			}
			if byMAC[r[0]] != "" && r[1] == vip6 {
				t.Errorf("backend %s advertised the VIP %s (neighbour advertisement from %s)", byMAC[r[0]], vip6, r[0])
			}
			if r[1] == vip6 && r[0] == l.ApplianceMAC {
				answeredVIP++
			}
		}
		t.Logf("neighbour advertisements at the client: %v", rows)
		if answeredVIP == 0 {
			t.Errorf("no neighbour advertisement for %s from the appliance (%s)", vip6, l.ApplianceMAC)
		}
		if mac, err := l.Client.Neighbor(vip6); err != nil || mac != l.ApplianceMAC {
			t.Errorf("the client resolved %s to %q (%v), want the appliance's %s", vip6, mac, err, l.ApplianceMAC)
		}
		// The IPv6 backends' next hops are their MACs, from the
		// appliance kernel's IPv6 neighbour table.
		st, err := l.Appliance.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		macOf := map[string]string{}
		for _, b := range l.Backends {
			macOf[b.IP.String()], macOf[b.IP6.String()] = b.MAC, b.MAC
		}
		v6 := 0
		for _, svc := range st.Services {
			for _, b := range svc.Backends {
				if strings.Contains(b.IP, ":") {
					v6++
				}
				if b.NextHopMAC != macOf[b.IP] {
					t.Errorf("%s/%s: next hop MAC %q, want the backend's %s", svc.Name, b.IP, b.NextHopMAC, macOf[b.IP])
				}
			}
		}
		if want := 2 * len(l.Backends); v6 != want {
			t.Errorf("%d IPv6 backends in the status, want %d (web6 and echo6)", v6, want)
		}
	})

	ev, err := l.StartEvidence6()
	if err != nil {
		t.Fatal(err)
	}
	before := mustStats(ctx, t, l.Appliance)
	var requests uint64

	t.Run("IPv6: separate connections spread over every backend", func(t *testing.T) {
		const n = 150
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL6("/"), n)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Requests)
		checkCurlMany(t, "curl -6", got, n, l.Backends)
		for a := range got.ClientAddrs {
			if !strings.HasPrefix(a, "["+nsbed.L2ClientIP6.String()+"]:") {
				t.Errorf("a backend saw client address %s, want the client's IPv6 %s", a, nsbed.L2ClientIP6)
				break
			}
		}
	})

	t.Run("IPv6: udp flows answered from the VIP", func(t *testing.T) {
		const flows, per = 30, 3
		got, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr6(), flows, per)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Sent)
		checkUDPFlows(t, "udp6", got, l.UDPAddr6(), flows, per, l.Backends)
	})

	t.Run("IPv6: 1 MiB upload arrives intact", func(t *testing.T) {
		got, err := nsbed.Upload(ctx, l.Client, l.URL6("/upload"), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("upload of %d bytes to %s: sha256 %s…", got.Sent, got.Backend, got.SHA256[:12])
		if !got.OK() {
			t.Errorf("backend %s got %d bytes sha256 %s, sent %d bytes sha256 %s", got.Backend, got.Echoed, got.EchoedSHA256, got.Sent, got.SHA256)
		}
	})

	t.Run("IPv6: answers bypass the appliance", func(t *testing.T) {
		checkDSREvidence(ctx, t, "IPv6", ev, l.Backends)
	})

	t.Run("dual stack: the IPv4 and the IPv6 VIP, the same backends", func(t *testing.T) {
		const n = 60
		for _, u := range []struct{ label, url string }{{"IPv4", l.URL("/")}, {"IPv6", l.URL6("/")}} {
			got, err := nsbed.CurlMany(ctx, l.Client, u.url, n)
			if err != nil {
				t.Fatal(err)
			}
			requests += uint64(got.Requests)
			checkCurlMany(t, u.label, got, n, l.Backends)
		}
	})

	after := mustStats(ctx, t, l.Appliance)
	t.Run("appliance counters see requests, never answers", func(t *testing.T) {
		delta := after.Sub(before)
		t.Logf("appliance delta: rx %d tx %d to kernel %d from kernel %d dropped %d; services %v",
			delta.Totals.RxPackets, delta.Totals.TxPackets, delta.Totals.ToKernel, delta.Totals.FromKernel, delta.Totals.Dropped, delta.Services)
		for _, p := range nsbed.CounterProblems(delta, requests) {
			t.Error(p)
		}
		var web6 uint64
		for _, b := range delta.Services["web6"].Backends {
			web6 += b.NewFlows
		}
		if web6 == 0 {
			t.Errorf("web6 counted no new flows")
		}
	})

	t.Run("dsrlb stops cleanly", func(t *testing.T) {
		if err := l.Appliance.Stop(); err != nil {
			t.Error(err)
		}
	})
}

// TestIPv6L3DSR drives real traffic from an IPv6 client through IPIP
// (IPv6 in IPv6, RFC 2473) and GRE-over-IPv6 services to IPv6 backends on a
// subnet behind a router, and from an IPv4 client to the same backends
// (IPv4 in IPv6), backends that decapsulate with the eBPF program
// `dsrctl backend setup` attaches, in the dual-stack L3 bed. Path MTU: the
// appliance answers a client packet that no longer fits with ICMPv6 Packet
// Too Big (RFC 4443) carrying 1500 minus the envelope; the client's kernel
// lowers its path MTU to the VIP, and a 1 MiB upload then goes through.
// The switch port facing the appliance has its offloads off, as in
// TestL3DSR, so the appliance sees the client's full-sized packets.
func TestIPv6L3DSR(t *testing.T) {
	l := startL3(t, nsbed.L3Options{IPv6: true, PeerOffloadsOff: true})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	t.Run("kernel side and the IPv6 gateway as next hop", func(t *testing.T) {
		checkRoutedKernelSide(ctx, t, l, nsbed.L3ApplianceIP6, nsbed.L3VIP6("ipip"), nsbed.L3VIP6("gre"))
	})

	// The envelopes as the router receives them from the appliance.
	env, err := l.Router.StartCapture("eth0", "ip6 src host "+nsbed.L3ApplianceIP6.String()+" and (ip6 proto 41 or ip6 proto 47)", 160)
	if err != nil {
		t.Fatal(err)
	}
	before := mustStats(ctx, t, l.Appliance)
	var requests uint64
	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/IPv6: separate connections spread over every backend", func(t *testing.T) {
			const n = 100
			got, err := nsbed.CurlMany(ctx, l.Client, l.URL6(mode, "/"), n)
			if err != nil {
				t.Fatal(err)
			}
			requests += uint64(got.Requests)
			checkCurlMany(t, mode+" curl -6", got, n, l.Backends)
		})
		t.Run(mode+"/IPv6: udp flows answered from the VIP", func(t *testing.T) {
			const flows, per = 20, 3
			got, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr6(mode), flows, per)
			if err != nil {
				t.Fatal(err)
			}
			requests += uint64(got.Sent)
			checkUDPFlows(t, mode+" udp6", got, l.UDPAddr6(mode), flows, per, l.Backends)
		})
	}
	t.Run("IPv6 envelopes on the wire (tshark)", func(t *testing.T) {
		checkEnvelopes6(ctx, t, l, env)
	})
	t.Run("appliance counters see requests, never answers", func(t *testing.T) {
		delta := mustStats(ctx, t, l.Appliance).Sub(before)
		t.Logf("appliance delta: rx %d tx %d to kernel %d from kernel %d dropped %d; services %v",
			delta.Totals.RxPackets, delta.Totals.TxPackets, delta.Totals.ToKernel, delta.Totals.FromKernel, delta.Totals.Dropped, delta.Services)
		for _, p := range nsbed.CounterProblems(delta, requests) {
			t.Error(p)
		}
	})

	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/IPv6 path MTU: 1 MiB upload after Packet Too Big", func(t *testing.T) {
			checkPathMTUUpload(ctx, t, l, mode, nsbed.L3VIP6(mode), l.URL6(mode, "/upload"), nsbed.L3Overhead6(mode), packetTooBig)
		})
	}

	// IPv4 clients, IPv6 backends: IPv4 in IPv6. A client packet with DF
	// that no longer fits gets fragmentation needed with the MTU minus
	// the 40-byte IPv6 envelope.
	url46 := "http://" + nsbed.L3VIP46.String()
	t.Run("IPv4 in IPv6: separate connections spread over every backend", func(t *testing.T) {
		const n = 60
		got, err := nsbed.CurlMany(ctx, l.Client, url46+"/", n)
		if err != nil {
			t.Fatal(err)
		}
		checkCurlMany(t, "curl to the IPv4 VIP of IPv6 backends", got, n, l.Backends)
	})
	t.Run("IPv4 in IPv6 path MTU: 1 MiB upload after fragmentation needed", func(t *testing.T) {
		checkPathMTUUpload(ctx, t, l, "ipip (IPv4 in IPv6)", nsbed.L3VIP46, url46+"/upload", nsbed.L3Overhead6("ipip"), fragNeeded)
	})

	t.Run("dsrlb stops cleanly", func(t *testing.T) {
		if err := l.Appliance.Stop(); err != nil {
			t.Error(err)
		}
	})
}

// TestECMPIPv6 runs the dual-stack ECMP bed: both appliances announce the
// IPv6 VIP as a /128 in the IPv6 unicast family with their ip6 as next hop;
// FRR installs it with both as ECMP next hops, IPv6 clients reach the
// backends through either, and the /128 leaves the router when every
// backend fails (the same health rule as the IPv4 /32) and returns when
// they do.
func TestECMPIPv6(t *testing.T) {
	if testing.Short() {
		t.Skip("two appliances and FRR; skipped in -short mode")
	}
	e := startECMP(t, func(o *nsbed.ECMPOptions) { o.IPv6 = true })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	A, B := e.Appliances[0], e.Appliances[1]
	vip6 := e.VIPPrefix6()
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.Logf("router state:\n%s", e.FRRDiag())
			out, _ := e.Router.Vtysh("show bgp ipv6 unicast "+vip6.String(), "show ipv6 route "+vip6.String())
			t.Logf("%s", out)
			t.Logf("appliances:\n%s", e.Diag(context.Background()))
			t.FailNow()
		}
	}

	step("FRR installs the /128 from both appliances", func(t *testing.T) {
		if _, err := e.WaitNexthopsOf(vip6, 15*time.Second, A.IP6, B.IP6); err != nil {
			t.Fatal(err)
		}
		paths, err := e.Router.BGPPaths(vip6)
		if err != nil {
			t.Fatal(err)
		}
		var nhs []string
		for _, p := range paths {
			for _, nh := range p.Nexthops {
				if nh.Scope == "global" || nh.Scope == "" {
					nhs = append(nhs, nh.IP)
				}
			}
			if !p.Valid || p.ASPath.String != "65010" {
				t.Errorf("path %+v: want valid, AS path 65010", p)
			}
		}
		slices.Sort(nhs)
		want := []string{A.IP6.String(), B.IP6.String()}
		slices.Sort(want)
		if !slices.Equal(nhs, want) {
			t.Errorf("BGP paths of %s: global next hops %v, want %v", vip6, nhs, want)
		}
		k, err := e.Router.KernelRoute(vip6)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("router kernel: %s", k)
		for _, a := range []netip.Addr{A.IP6, B.IP6} {
			if !strings.Contains(k, "via "+a.String()) {
				t.Errorf("router kernel route %q lacks next hop %s", k, a)
			}
		}
	})

	step("IPv6 clients through both appliances", func(t *testing.T) {
		before, err := e.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		const n = 120
		got, err := nsbed.CurlMany(ctx, e.Client, e.URL6("/"), n)
		if err != nil {
			t.Fatal(err)
		}
		checkCurlMany(t, "curl -6 via ECMP", got, n, e.Backends)
		after, err := e.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range e.Appliances {
			d := after[i].Sub(before[i])
			t.Logf("%s: web6 +%d packets", a.Name, d.Services["web6"].Packets)
			if d.Services["web6"].Packets == 0 {
				t.Errorf("%s carried no web6 packet: the router's ECMP did not use it", a.Name)
			}
		}
	})

	step("/128 withdrawn when every backend fails, back after rise", func(t *testing.T) {
		if err := e.StopBackends(); err != nil {
			t.Fatal(err)
		}
		d, err := e.WaitNexthopsOf(vip6, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING /128 withdrawn from the router %v after every backend stopped", d.Round(time.Millisecond))
		if budget := ecmpFall*ecmpInterval + ecmpSlack; d > budget {
			t.Errorf("/128 withdrawn after %v, want within %v", d, budget)
		}
		if err := e.StartBackends(ctx); err != nil {
			t.Fatal(err)
		}
		d, err = e.WaitNexthopsOf(vip6, 15*time.Second, A.IP6, B.IP6)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING /128 back with both next hops %v after the backends restarted", d.Round(time.Millisecond))
	})
}

// checkEnvelopes6 stops env, the router's capture of the appliance's IPv6
// envelopes, and checks each with tshark: outer source the appliance's
// ip6, outer destination a backend's IPv6 address, hop limit 64, next
// header 41 (IPv6 in IPv6, RFC 2473) for ipip and 47 for gre with GRE
// protocol 0x86dd (RFC 2784), the inner destination the mode's IPv6 VIP;
// and that every backend got envelopes of each mode.
func checkEnvelopes6(ctx context.Context, t *testing.T, l *nsbed.L3, env *nsbed.Capture) {
	t.Helper()
	if drops, err := env.Stop(); err != nil || drops != 0 {
		t.Fatalf("capture: %v, %d dropped", err, drops)
	}
	rows, err := env.Fields(ctx, "", "ipv6.src", "ipv6.dst", "ipv6.hlim", "ipv6.nxt", "gre.proto")
	if err != nil {
		t.Fatal(err)
	}
	backendOf := map[string]string{}
	for _, b := range l.Backends {
		backendOf[b.IP6.String()] = b.Name
	}
	wantNxt := map[string]string{"ipip": "41", "gre": "47"}
	modeOf := map[string]string{nsbed.L3VIP6("ipip").String(): "ipip", nsbed.L3VIP6("gre").String(): "gre"}
	perMode := map[string]map[string]int{"ipip": {}, "gre": {}}
	bad := 0
	for _, r := range rows {
		for len(r) < 5 {
			r = append(r, "")
		}
		src, dst, hlim, nxt := strings.Split(r[0], ","), strings.Split(r[1], ","), strings.Split(r[2], ","), strings.Split(r[3], ",")
		if len(src) != 2 || len(dst) != 2 || len(hlim) != 2 || len(nxt) < 1 {
			t.Errorf("envelope %v: want exactly an outer and an inner IPv6 header", r)
			bad++
			continue
		}
		mode := modeOf[dst[1]]
		switch {
		case mode == "":
			t.Errorf("envelope %v: inner destination %s is no IPv6 VIP of the bed", r, dst[1])
		case src[0] != nsbed.L3ApplianceIP6.String() || backendOf[dst[0]] == "" || hlim[0] != "64" || nxt[0] != wantNxt[mode]:
			t.Errorf("%s envelope %v: want outer %s -> a backend, hop limit 64, next header %s", mode, r, nsbed.L3ApplianceIP6, wantNxt[mode])
		case mode == "gre" && r[4] != "0x86dd":
			t.Errorf("gre envelope %v: GRE protocol %q, want 0x86dd", r, r[4])
		default:
			perMode[mode][backendOf[dst[0]]]++
			continue
		}
		if bad++; bad > 5 {
			t.Fatalf("more than 5 bad envelopes")
		}
	}
	for _, mode := range nsbed.L3Modes {
		t.Logf("%s: router received IPv6 envelopes (appliance ip6 -> backend, hop limit 64, next header %s): %s", mode, wantNxt[mode], nsbed.Spread(perMode[mode]))
		if miss := l.Missing(perMode[mode]); len(miss) != 0 {
			t.Errorf("%s: no IPv6 envelope to backends %v", mode, miss)
		}
	}
}
