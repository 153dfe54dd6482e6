package nsbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/bgp/frrtest"
)

// The ECMP bed: two appliances announce the VIP by BGP to an FRR router,
// which spreads client flows over both by ECMP (L4 hash); the services are
// in l2 mode, so the appliances hand frames to backends on their own
// segment, and the backends answer the client through the router.
//
//	client 10.97.1.10/24 ── front ── rtr 10.97.1.1/24   FRR AS 65000, maximum-paths,
//	                                  rtr 10.97.0.1/24   fib_multipath_hash_policy=1
//	                                        │
//	      lan 10.97.0.0/24 ─────────────────┴──────────────────────────────────
//	      applA eth0: raw (DPDK), tap 10.97.0.2   AS 65010 ─┐ eBGP to 10.97.0.1,
//	      applB eth0: raw (DPDK), tap 10.97.0.3   AS 65010 ─┘ announce VIP/32
//	      be1..beN 10.97.0.11..  VIP on lo (dsrctl backend setup --mode l2)
//	      probe 10.97.0.50  test-only host: VIP/32 via one chosen appliance
//
// The VIP 10.200.0.10 is on no segment: the router reaches it only through
// the appliances' BGP announcements. Both appliances run the same services,
// backends and Maglev seed, so a flow maps to the same backend whichever
// appliance the router's hash picks, and a flow that moves from one to the
// other (an appliance withdrawn) keeps its backend.
var (
	ECMPFrontSubnet = netip.MustParsePrefix("10.97.1.0/24")
	ECMPLanSubnet   = netip.MustParsePrefix("10.97.0.0/24")
	ECMPClientIP    = netip.MustParseAddr("10.97.1.10")
	ECMPRouterFront = netip.MustParseAddr("10.97.1.1")
	ECMPRouterLan   = netip.MustParseAddr("10.97.0.1")
	ECMPProbeIP     = netip.MustParseAddr("10.97.0.50")
	ECMPVIP         = netip.MustParseAddr("10.200.0.10")
)

// AS numbers of the ECMP bed. Both appliances share one AS: routers compare
// MED only between paths from the same neighbouring AS (bgp.StandbyMED).
const (
	ECMPRouterASN    = 65000
	ECMPApplianceASN = 65010
)

// ECMPApplianceIP is the address of appliance i (0-based): 10.97.0.2+i.
func ECMPApplianceIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 97, 0, byte(2 + i)})
}

// ECMPBackendIP is the address of backend i (1-based): 10.97.0.10+i.
func ECMPBackendIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 97, 0, byte(10 + i)})
}

// ECMPApplianceName is the host name of appliance i: applA, applB, ...
func ECMPApplianceName(i int) string { return "appl" + string(rune('A'+i)) }

// ECMPHealth is the health monitor of the ECMP bed's service: HTTP GET /
// every second, up after 2 passes, down after 2 failures.
var ECMPHealth = v1.Health{Type: "http", Port: HTTPPort, Path: "/", Expect: []int{200},
	Interval: v1.Duration(time.Second), Timeout: v1.Duration(500 * time.Millisecond), Rise: 2, Fall: 2}

// ECMPOptions parametrise StartECMP.
type ECMPOptions struct {
	Bins Binaries
	// Backends is the number of backends; default 3.
	Backends int
	// EAL gives appliance i's lcore arguments; default {"-l", "0,1"} for
	// every appliance (main lcore 0, one worker on lcore 1). Lcore ids are
	// per process, so both appliances' workers then busy-poll CPU 1;
	// {"--lcores", "0@1,1@0"} for one of them puts its worker on CPU 0.
	EAL [2][]string
	// Drain is bgp.drain; default 3 s.
	Drain time.Duration
	// HoldTime is the BGP hold time the appliances offer, in seconds;
	// default 9.
	HoldTime int
	// Bed configures the underlying Bed.
	Bed Options
	// IPv6 builds the bed dual-stack (WithECMPIPv6) and adds the service
	// "web6" on ECMPVIP6 with the backends' IPv6 addresses: the appliances
	// announce its /128 in the IPv6 unicast family, next hop their ip6.
	IPv6 bool
}

// ECMPAppliance is one appliance of the ECMP bed. Appliance is nil while
// it is stopped.
type ECMPAppliance struct {
	Name string
	IP   netip.Addr
	IP6  netip.Addr // in a bed with IPv6
	NS   *NS
	MAC  string
	*Appliance
}

// ECMP is a running ECMP bed.
type ECMP struct {
	*Net
	Client, Probe, RouterNS *NS
	// Router is the FRR instance in RouterNS.
	Router     *frrtest.Router
	Appliances [2]*ECMPAppliance
	Backends   Backends
	opts       ECMPOptions
}

// ECMPTopology is the ECMP bed's topology: segments "front" and "lan";
// hosts client, rtr (forwarding, L4 multipath hash), applA and applB (raw
// eth0), probe and be1..beN.
func ECMPTopology(backends int) Topology {
	fbits, lbits := ECMPFrontSubnet.Bits(), ECMPLanSubnet.Bits()
	t := Topology{
		Segments: []Segment{{Name: "front"}, {Name: "lan"}},
		Hosts: []Host{
			{Name: "client", Links: []Link{{Segment: "front", Addrs: []netip.Prefix{netip.PrefixFrom(ECMPClientIP, fbits)}}},
				Routes: []Route{{Via: ECMPRouterFront}}},
			{Name: "rtr", Forwarding: true, Links: []Link{
				{Segment: "front", Addrs: []netip.Prefix{netip.PrefixFrom(ECMPRouterFront, fbits)}},
				{Segment: "lan", Addrs: []netip.Prefix{netip.PrefixFrom(ECMPRouterLan, lbits)}},
			}, Sysctls: []string{
				// Hash multipath routes on the 5-tuple (L4), not only on
				// the addresses: one client's flows then spread over
				// every appliance.
				"net.ipv4.fib_multipath_hash_policy", "1",
				// Backends answer from the VIP, which this router
				// routes back towards the appliances.
				"net.ipv4.conf.all.rp_filter", "0",
				"net.ipv4.conf.default.rp_filter", "0",
			}},
			{Name: ECMPApplianceName(0), Links: []Link{{Segment: "lan", Raw: true}}},
			{Name: ECMPApplianceName(1), Links: []Link{{Segment: "lan", Raw: true}}},
			{Name: "probe", Links: []Link{{Segment: "lan", Addrs: []netip.Prefix{netip.PrefixFrom(ECMPProbeIP, lbits)}}}},
		},
	}
	for i := 1; i <= backends; i++ {
		t.Hosts = append(t.Hosts, Host{Name: "be" + strconv.Itoa(i),
			Links:  []Link{{Segment: "lan", Addrs: []netip.Prefix{netip.PrefixFrom(ECMPBackendIP(i), lbits)}}},
			Routes: []Route{{Via: ECMPRouterLan}}})
	}
	return t
}

// ECMPRouterConfig is FRR's bgpd.conf: both appliances as passive eBGP
// neighbours (the appliances dial), ECMP over up to 4 paths, AS-path
// multipath-relax.
func ECMPRouterConfig() string { return ecmpRouterConfig(false) }

// ecmpRouterConfig is ECMPRouterConfig, the sessions activated for the
// IPv6 unicast family too when ipv6.
func ecmpRouterConfig(ipv6 bool) string {
	var peers []frrtest.Peer
	for i := range 2 {
		peers = append(peers, frrtest.Peer{Address: ECMPApplianceIP(i).String(), ASN: ECMPApplianceASN, Passive: true, IPv6: ipv6})
	}
	return frrtest.BGPConfig{ASN: ECMPRouterASN, RouterID: ECMPRouterLan.String(), Neighbors: peers, MaximumPaths: 4}.String()
}

// ECMPConfig is appliance i's config: port eth0 (net_af_packet) with its
// address, service "web" (tcp/80, l2, HTTP health check ECMPHealth,
// min_healthy 1) on the VIP with every backend, Maglev seed 7, and BGP to
// the router with role ("active" or "standby") and standby method
// standbyBy ("med" or "prepend"). Everything but the identity (address,
// router id, EAL file prefix and lcores, role) is the same for every
// appliance; that is what keeps a flow on one backend across them.
func ECMPConfig(b *Bed, i, backends int, eal []string, role, standbyBy string, drain time.Duration, holdTime int) v1.Config {
	bes := backendList(backends, ECMPBackendIP)
	name, ip := ECMPApplianceName(i), ECMPApplianceIP(i)
	health := ECMPHealth
	args := []string{"--no-huge", "--no-pci", "-m", "512", "--file-prefix", b.prefix + name}
	return v1.Config{
		Dataplane: v1.Dataplane{
			EALArgs:   append(args, eal...),
			Workers:   1,
			IdleSleep: BedIdleSleep,
			Ports: []v1.Port{{Name: "eth0", Device: "net_af_packet0,iface=eth0",
				IP: netip.PrefixFrom(ip, ECMPLanSubnet.Bits()).String(), Gateway: ECMPRouterLan.String()}},
		},
		Services: []v1.Service{{Name: "web", VIP: ECMPVIP.String(), Protocol: "tcp", Port: HTTPPort, Mode: "l2",
			Backends: bes, MinHealthy: 1, Health: &health}},
		Maglev: v1.Maglev{Seed: 7},
		BGP: &v1.BGP{ASN: ECMPApplianceASN, RouterID: ip.String(), Role: role, Standby: standbyBy, Drain: v1.Duration(drain),
			Peers: []v1.BGPPeer{{Address: ECMPRouterLan.String(), ASN: ECMPRouterASN, HoldTime: holdTime}}},
		API: v1.API{Listen: DefaultAPI},
	}
}

// StartECMP builds the ECMP bed, starts FRR on the router, sets the
// backends up for L2 DSR with backendsrv, and starts both appliances as
// active. It returns once both appliances forward to every backend and the
// router has the VIP with both as next hops. On error everything is torn
// down again.
func StartECMP(ctx context.Context, o ECMPOptions) (e *ECMP, err error) {
	if o.Backends == 0 {
		o.Backends = 3
	}
	for i := range o.EAL {
		if len(o.EAL[i]) == 0 {
			o.EAL[i] = []string{"-l", "0,1"}
		}
	}
	if o.Drain == 0 {
		o.Drain = 3 * time.Second
	}
	if o.HoldTime == 0 {
		o.HoldTime = 9
	}
	if _, err := os.Stat(frrtest.BGPDPath); err != nil {
		return nil, fmt.Errorf("nsbed: FRR is needed for the ECMP bed (apt-get install frr): %w", err)
	}
	topo := ECMPTopology(o.Backends)
	if o.IPv6 {
		WithECMPIPv6(&topo)
	}
	n, err := buildNet(o.Bed, "ECMP testbed", topo)
	if err != nil {
		return nil, err
	}
	bed := n.Bed
	defer func() {
		if err != nil {
			bed.Close()
		}
	}()
	e = &ECMP{Net: n, Client: n.Host("client"), Probe: n.Host("probe"), RouterNS: n.Host("rtr"), opts: o}
	self := e // for the teardown below: e is nil after a failed start
	// At teardown the appliances are killed first (SIGKILL: nothing is
	// measured then, and SIGTERM would cost each its drain time), then
	// FRR stops; Close then stops the other processes and deletes the
	// namespaces.
	bed.OnClose(func() {
		if self.Router != nil {
			if err := self.Router.Stop(); err != nil {
				bed.Logf("ECMP: %v", err)
			}
			if !bed.keep {
				os.RemoveAll(self.Router.Dir)
			}
		}
	})
	bed.OnClose(func() {
		for _, a := range self.Appliances {
			if a != nil && a.Appliance != nil && !a.Proc.Exited() {
				_ = a.Proc.Signal(syscall.SIGKILL)
			}
		}
	})
	e.Router, err = frrtest.Launch(e.RouterNS.Name, ecmpRouterConfig(o.IPv6), frrtest.Options{})
	if err != nil {
		return nil, err
	}
	bed.Logf("rtr: FRR zebra+bgpd (config and logs in %s)", e.Router.Dir)
	vips := []dsrVIP{{ECMPVIP, "l2"}}
	if o.IPv6 {
		vips = append(vips, dsrVIP{ECMPVIP6, "l2"})
	}
	if e.Backends, err = setupBackends(n, o.Bins.Dsrctl, o.Backends, ECMPBackendIP, vips...); err != nil {
		return nil, err
	}
	if o.IPv6 {
		for i, be := range e.Backends {
			be.IP6 = ECMPBackendIP6(i + 1)
		}
	}
	if err := e.StartBackends(ctx); err != nil {
		return nil, err
	}
	for i := range e.Appliances {
		ns := n.Host(ECMPApplianceName(i))
		mac, err := ns.LinkMAC("eth0")
		if err != nil {
			return nil, err
		}
		e.Appliances[i] = &ECMPAppliance{Name: ns.Short, IP: ECMPApplianceIP(i), NS: ns, MAC: mac}
		if o.IPv6 {
			e.Appliances[i].IP6 = ECMPApplianceIP6(i)
		}
	}
	if err := allAtOnce(len(e.Appliances), func(i int) error {
		return e.StartAppliance(ctx, i, "active", "med")
	}); err != nil {
		return nil, err
	}
	if _, err := e.WaitNexthops(30*time.Second, e.Appliances[0].IP, e.Appliances[1].IP); err != nil {
		return nil, err
	}
	if o.IPv6 {
		if _, err := e.WaitNexthopsOf(e.VIPPrefix6(), 30*time.Second, e.Appliances[0].IP6, e.Appliances[1].IP6); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Close tears the bed down.
func (e *ECMP) Close() error { return e.Bed.Close() }

// URL is http://VIP<path>.
func (e *ECMP) URL(path string) string { return "http://" + ECMPVIP.String() + path }

// VIPPrefix is the VIP as the /32 the appliances announce.
func (e *ECMP) VIPPrefix() netip.Prefix { return netip.PrefixFrom(ECMPVIP, 32) }

// StartAppliance (re)starts dsrlb on appliance i with a BGP role ("active"
// or "standby") and standby method ("med" or "prepend"), and waits until it
// forwards to every backend (health rise included). Its state file is
// removed first, so the config file is all it starts from.
func (e *ECMP) StartAppliance(ctx context.Context, i int, role, standbyBy string) error {
	a := e.Appliances[i]
	if a.Appliance != nil && !a.Proc.Exited() {
		return fmt.Errorf("nsbed: %s is still running", a.Name)
	}
	_ = os.Remove(e.Bed.StatePath(a.Name))
	cfg := ECMPConfig(e.Bed, i, len(e.Backends), e.opts.EAL[i], role, standbyBy, e.opts.Drain, e.opts.HoldTime)
	if e.opts.IPv6 {
		withECMPIPv6Config(&cfg, i, len(e.Backends))
	}
	app, err := startActive(ctx, a.NS, e.opts.Bins.Dsrlb, cfg)
	if app != nil {
		a.Appliance = app
	}
	return err
}

// SignalStop sends SIGTERM to appliance i and returns at once; the
// appliance withdraws its VIPs, waits its drain time and exits. Wait for
// it with Proc.Done and check with Stop.
func (e *ECMP) SignalStop(i int) error {
	a := e.Appliances[i]
	if a.Appliance == nil || a.Proc.Exited() {
		return fmt.Errorf("nsbed: %s is not running", a.Name)
	}
	return a.Proc.Signal(syscall.SIGTERM)
}

// Nexthops returns the next hops of the VIP that zebra installed in the
// router's kernel, sorted (none while the VIP is not routed, and also
// while zebra is replacing the route: see WaitNexthops).
func (e *ECMP) Nexthops() ([]netip.Addr, error) {
	nh, _, err := e.vipRoute(e.VIPPrefix())
	return nh, err
}

// vipRoute returns the installed next hops of the VIP's BGP route and
// whether zebra has a BGP route for it at all (installed or queued).
func (e *ECMP) vipRoute(vip netip.Prefix) (nexthops []netip.Addr, present bool, err error) {
	routes, err := e.Router.Route(vip)
	if err != nil {
		return nil, false, err
	}
	for _, r := range routes {
		if r.Protocol != "bgp" {
			continue
		}
		present = true
		if !r.Installed {
			continue
		}
		for _, nh := range r.FIBNexthops() {
			if a, err := netip.ParseAddr(nh); err == nil {
				nexthops = append(nexthops, a)
			}
		}
	}
	slices.SortFunc(nexthops, netip.Addr.Compare)
	return slices.Compact(nexthops), present, nil
}

// WaitNexthops polls the router (every 25 ms) until the VIP's installed
// next hops are exactly want and returns how long that took. With no want
// it waits until the VIP is not routed at all: zebra has no BGP route for
// it and the router's kernel no route (a route being replaced shows no
// installed next hop for a moment, which is not a withdrawal).
func (e *ECMP) WaitNexthops(timeout time.Duration, want ...netip.Addr) (time.Duration, error) {
	return e.WaitNexthopsOf(e.VIPPrefix(), timeout, want...)
}

// WaitNexthopsOf is WaitNexthops for the route to vip (VIPPrefix6, say).
func (e *ECMP) WaitNexthopsOf(vip netip.Prefix, timeout time.Duration, want ...netip.Addr) (time.Duration, error) {
	want = slices.Clone(want)
	slices.SortFunc(want, netip.Addr.Compare)
	var last []netip.Addr
	var lastKernel string
	d, err := poll(timeout, func() (bool, error) {
		got, present, err := e.vipRoute(vip)
		if err != nil {
			return false, err
		}
		last = got
		if len(want) > 0 {
			return slices.Equal(got, want), nil
		}
		if present {
			return false, nil
		}
		lastKernel, err = e.Router.KernelRoute(vip)
		return err == nil && lastKernel == "", err
	})
	if err != nil {
		return d, fmt.Errorf("%s next hops on the router: got %v (kernel %q), want %v: %w", vip, last, lastKernel, want, err)
	}
	return d, nil
}

// KernelRoute returns the VIP's route in the router's kernel as "ip
// route" prints it ("" when absent).
func (e *ECMP) KernelRoute() (string, error) { return e.Router.KernelRoute(e.VIPPrefix()) }

// StopBackends stops backendsrv on every backend at once and waits until
// all have exited.
func (e *ECMP) StopBackends() error {
	return allAtOnce(len(e.Backends), func(i int) error {
		return e.Backends[i].Proc.Stop(3 * time.Second)
	})
}

// StartBackends starts backendsrv on every backend (HTTP on port 80, over
// IPv6 too in a bed with IPv6) and waits until each accepts connections.
func (e *ECMP) StartBackends(ctx context.Context) error {
	return allAtOnce(len(e.Backends), func(i int) error {
		be := e.Backends[i]
		host := "0.0.0.0"
		if be.IP6.IsValid() {
			host = "::"
		}
		p, err := StartBackendsrv(ctx, be.NS, e.opts.Bins.Backendsrv, be.Name,
			net.JoinHostPort(host, strconv.Itoa(HTTPPort)), "")
		be.Proc = p
		return err
	})
}

// ProbeVia routes the VIP from the probe host straight to appliance i
// (ip route replace VIP/32 via appliance), bypassing the router's ECMP
// choice. The backends answer the probe on-link.
func (e *ECMP) ProbeVia(i int) error {
	_, err := e.Probe.Run("ip", "route", "replace", e.VIPPrefix().String(), "via", e.Appliances[i].IP.String(), "dev", "eth0")
	return err
}

// Stats returns the stats of every running appliance (nil for a stopped
// one).
func (e *ECMP) Stats(ctx context.Context) ([2]*Stats, error) {
	var out [2]*Stats
	for i, a := range e.Appliances {
		if a.Appliance == nil || a.Proc.Exited() {
			continue
		}
		s, err := a.Stats(ctx)
		if err != nil {
			return out, fmt.Errorf("%s: %w", a.Name, err)
		}
		out[i] = s
	}
	return out, nil
}

// FRRDiag returns what the router knows about the VIP and its neighbours,
// for failure reports.
func (e *ECMP) FRRDiag() string {
	var b strings.Builder
	for _, cmd := range []string{"show bgp summary", "show bgp ipv4 unicast " + e.VIPPrefix().String(), "show ip route " + e.VIPPrefix().String()} {
		out, err := e.Router.Vtysh(cmd)
		fmt.Fprintf(&b, "--- %s\n%s", cmd, out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

// pollEvery is how often poll asks the router. Each question is a vtysh
// process; asking every 10 ms (frrtest.WaitFor) keeps a 2-core machine
// busy enough to delay the appliances' own health checks.
const pollEvery = 25 * time.Millisecond

// poll is frrtest.WaitFor at pollEvery.
func poll(timeout time.Duration, cond func() (bool, error)) (time.Duration, error) {
	return frrtest.WaitEvery(timeout, pollEvery, cond)
}

// Poll polls cond every 25 ms until it holds (returning the time taken)
// or timeout passes; use it for conditions that ask the router.
func (e *ECMP) Poll(timeout time.Duration, cond func() (bool, error)) (time.Duration, error) {
	return poll(timeout, cond)
}

// Diag returns, for failure reports, what each appliance's namespace and
// API say about losses: TCP retransmissions of its kernel (health checks
// and BGP), drops on its veth and tap, its data plane's drop counters and
// its backends' health.
func (e *ECMP) Diag(ctx context.Context) string {
	var b strings.Builder
	for _, a := range e.Appliances {
		fmt.Fprintf(&b, "=== %s\n", a.Name)
		out, _ := a.NS.Run("nstat", "-az", "TcpRetransSegs", "TcpExtTCPSynRetrans", "TcpExtTCPTimeouts", "TcpActiveOpens", "TcpAttemptFails")
		b.WriteString(out)
		out, _ = a.NS.Run("ip", "-s", "link")
		b.WriteString(out)
		if a.Appliance == nil || a.Proc.Exited() {
			continue
		}
		if st, err := a.Stats(ctx); err == nil {
			fmt.Fprintf(&b, "totals %+v drops %v\n", st.Totals, st.NonZeroDrops())
		}
		if st, err := a.Status(ctx); err == nil {
			for _, s := range st.Services {
				for _, be := range s.Backends {
					fmt.Fprintf(&b, "%s/%s forwarding=%s health=%s\n", s.Name, be.IP, be.Forwarding, be.Health)
				}
			}
		}
	}
	return b.String()
}

// HealthFlaps counts the backends appliance i has seen go from up to
// down so far (over all its runs, from its log). A difference across a
// test step that stopped no backend tells that the appliance wrongly saw
// one fail, which moves that appliance's flows.
func (e *ECMP) HealthFlaps(i int) int {
	a := e.Appliances[i]
	if a.Appliance == nil {
		return 0
	}
	b, err := os.ReadFile(a.Proc.Log)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"event":"health_change"`) && strings.Contains(line, `"from":"up"`) && strings.Contains(line, `"state":"down"`) {
			n++
		}
	}
	return n
}

// WaitAllActive waits until every running appliance forwards to every
// backend: the precondition for a flow to get the same backend on each.
func (e *ECMP) WaitAllActive(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, a := range e.Appliances {
		if a.Appliance == nil || a.Proc.Exited() {
			continue
		}
		if _, err := a.WaitActive(ctx); err != nil {
			return err
		}
	}
	return nil
}
