package nsbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// Addresses of the L3 DSR bed. The client, the appliance and a router
// share the front segment; the backends sit on another subnet behind the
// router. The VIPs are on neither: the client routes them to the
// appliance's port address, as a network would after a BGP announcement.
var (
	L3FrontSubnet   = netip.MustParsePrefix("10.96.1.0/24")
	L3BackSubnet    = netip.MustParsePrefix("10.96.2.0/24")
	L3VIPSubnet     = netip.MustParsePrefix("10.96.0.0/24")
	L3RouterFrontIP = netip.MustParseAddr("10.96.1.1")
	L3RouterBackIP  = netip.MustParseAddr("10.96.2.1")
	L3ApplianceIP   = netip.MustParseAddr("10.96.1.2")
	L3ClientIP      = netip.MustParseAddr("10.96.1.10")
)

// L3Modes are the encapsulations of the L3 bed, one VIP each.
var L3Modes = []string{"ipip", "gre"}

// L3VIP is the VIP of the L3 bed's services in mode: 10.96.0.10 for ipip,
// 10.96.0.20 for gre. Each mode has its own VIP so that the client's
// kernel keeps a separate path MTU for each.
func L3VIP(mode string) netip.Addr {
	switch mode {
	case "ipip":
		return netip.MustParseAddr("10.96.0.10")
	case "gre":
		return netip.MustParseAddr("10.96.0.20")
	}
	panic("nsbed: no L3 VIP for mode " + mode)
}

// L3Overhead is the envelope's size in mode: 20 bytes of outer IPv4 header
// (RFC 2003), plus a 4-byte GRE header for gre (RFC 2784).
func L3Overhead(mode string) int {
	if mode == "gre" {
		return 24
	}
	return 20
}

// DPDK devices for the appliance's raw veth (eth0).
//
// net_af_packet is the testbed's usual NIC. It has one quirk a real NIC
// lacks: DPDK 22.11 joins its sockets to a PACKET_FANOUT group with
// PACKET_FANOUT_FLAG_DEFRAG, so the appliance's kernel reassembles IPv4
// fragments before the PMD reads them, and the data plane never sees a
// fragment (it gets the reassembled datagram). net_pcap (libpcap on the
// interface, inbound only) hands over frames as they were on the wire;
// it is slower, and used where fragments matter.
const (
	L3AFPacketDevice = "net_af_packet0,iface=eth0"
	L3PcapDevice     = "net_pcap0,iface=eth0,phy_mac=1"
)

// L3BackendIP is the address of backend i (1-based): 10.96.2.10+i.
func L3BackendIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 96, 2, byte(10 + i)})
}

// L3Options parametrise StartL3.
type L3Options struct {
	Bins Binaries
	// Backends is the number of backends; default 3.
	Backends int
	// Lcores is the appliance's EAL lcore list; default "0,1".
	Lcores string
	// MTU is the MTU of every link and of the appliance's port; default
	// 1500, so an envelope around a full-sized client packet does not fit.
	MTU int
	// Device is the DPDK device of the appliance's port; default
	// L3AFPacketDevice.
	Device string
	// Bed configures the underlying Bed.
	Bed Options
	// Config, if set, edits the appliance config (L3Config) before dsrlb
	// starts.
	Config func(*v1.Config)
	// PeerOffloadsOff turns the offloads of the switch port facing the
	// appliance off (Link.PeerOffloadsOff); by default it keeps the
	// kernel's.
	PeerOffloadsOff bool
	// IPv6 builds the bed dual-stack (WithL3IPv6): the appliance's port
	// gets ip6 L3ApplianceIP6 and gateway6 L3RouterFrontIP6, every backend
	// the VIPs L3VIP6(mode) beside L3VIP(mode), and the config, per mode
	// M, the services "web6-M" and "echo6-M" on L3VIP6(M) with the
	// backends' IPv6 addresses, and "web46" (ipip) on the IPv4 VIP
	// L3VIP46 with the same IPv6 backends.
	IPv6 bool
}

// L3Topology is the L3 DSR testbed:
//
//	front (10.96.1.0/24): client .10, appl (raw, DPDK), rtr .1
//	back  (10.96.2.0/24): rtr .1, be1..beN .11..
//
// The client routes the VIPs (10.96.0.0/24) to the appliance; the router
// forwards between the segments and routes the VIPs to the appliance too;
// backends have their default route via the router, so their answers,
// from a VIP, reach the client through it without touching the appliance.
// The router does no reverse path filtering: those answers arrive on its
// back link although it routes the VIPs out of the front one (on a host
// whose initial namespace has rp_filter on, new namespaces inherit it).
func L3Topology(backends, mtu int) Topology {
	front, back := L3FrontSubnet.Bits(), L3BackSubnet.Bits()
	t := Topology{
		Segments: []Segment{{Name: "front", MTU: mtu}, {Name: "back", MTU: mtu}},
		Hosts: []Host{
			{Name: "client", Links: []Link{{Segment: "front", Addrs: []netip.Prefix{netip.PrefixFrom(L3ClientIP, front)}}},
				Routes: []Route{{Dst: L3VIPSubnet, Via: L3ApplianceIP}}},
			{Name: "appl", Links: []Link{{Segment: "front", Raw: true}}},
			{Name: "rtr", Forwarding: true, Links: []Link{
				{Segment: "front", Addrs: []netip.Prefix{netip.PrefixFrom(L3RouterFrontIP, front)}},
				{Segment: "back", Addrs: []netip.Prefix{netip.PrefixFrom(L3RouterBackIP, back)}}},
				Routes: []Route{{Dst: L3VIPSubnet, Via: L3ApplianceIP}},
				Sysctls: []string{
					"net.ipv4.conf.all.rp_filter", "0",
					"net.ipv4.conf.eth0.rp_filter", "0",
					"net.ipv4.conf.eth1.rp_filter", "0",
				}},
		},
	}
	for i := 1; i <= backends; i++ {
		t.Hosts = append(t.Hosts, Host{Name: "be" + strconv.Itoa(i),
			Links:  []Link{{Segment: "back", Addrs: []netip.Prefix{netip.PrefixFrom(L3BackendIP(i), back)}}},
			Routes: []Route{{Via: L3RouterBackIP}}})
	}
	return t
}

// L3Config is the appliance config of the L3 bed: port eth0 (DPDK device
// on the raw veth) with the appliance address, the router as
// gateway and the given MTU; per mode M of L3Modes, service "web-M"
// (tcp/80, HTTP health check) and "echo-M" (udp/9000, TCP health check on
// port 80) on L3VIP(M) with every backend, reached through the gateway.
func L3Config(b *Bed, backends int, lcores string, mtu int, device string) v1.Config {
	bes := backendList(backends, L3BackendIP)
	cfg := v1.Config{
		Dataplane: v1.Dataplane{
			EALArgs:   b.EALArgs("appl", lcores),
			Workers:   1,
			IdleSleep: BedIdleSleep,
			Ports: []v1.Port{{Name: "eth0", Device: device,
				IP:      netip.PrefixFrom(L3ApplianceIP, L3FrontSubnet.Bits()).String(),
				Gateway: L3RouterFrontIP.String(), MTU: mtu}},
		},
		API: v1.API{Listen: DefaultAPI},
	}
	for _, mode := range L3Modes {
		cfg.Services = append(cfg.Services, webAndEcho("-"+mode, L3VIP(mode).String(), mode, bes)...)
	}
	return cfg
}

// L3 is a running L3 DSR bed.
type L3 struct {
	*Net
	Client, Router *NS
	Appliance      *Appliance
	ApplianceMAC   string // of its DPDK port (and tap)
	// RouterMAC is the MAC of the router's front link: the Ethernet
	// destination of every envelope.
	RouterMAC string
	Backends  Backends
	// MTU is the MTU of every link and of the appliance's port.
	MTU int
	// Ready is how long the appliance took from start to every backend
	// active.
	Ready time.Duration
	bins  Binaries
	// modes are the encapsulations the bed's services use (Modes).
	modes []string
}

// Modes are the encapsulations of the bed's services, one VIP each:
// L3Modes, or fewer in a bed built on this one (the tier-2 bed's ipip).
func (l *L3) Modes() []string { return l.modes }

// StartL3 builds the L3 DSR bed, makes every backend a DSR backend of both
// VIPs with `dsrctl backend setup --mode ipip|gre` (the eBPF decapsulator),
// starts backendsrv on each and dsrlb on the appliance, and waits until
// every backend forwards. On error everything is torn down again.
func StartL3(ctx context.Context, o L3Options) (l *L3, err error) {
	if o.Backends == 0 {
		o.Backends = 3
	}
	if o.Lcores == "" {
		o.Lcores = "0,1"
	}
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Device == "" {
		o.Device = L3AFPacketDevice
	}
	topo := L3Topology(o.Backends, o.MTU)
	if o.PeerOffloadsOff {
		topo = topo.WithPeerOffloadsOff("appl")
	}
	if o.IPv6 {
		WithL3IPv6(&topo)
	}
	n, err := buildNet(o.Bed, fmt.Sprintf("L3 testbed: front %s, back %s, VIPs %s", L3FrontSubnet, L3BackSubnet, L3VIPSubnet), topo)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Bed.Close()
		}
	}()
	l = &L3{Net: n, Client: n.Host("client"), Router: n.Host("rtr"), MTU: o.MTU, bins: o.Bins, modes: L3Modes}
	var vips []dsrVIP
	for _, mode := range L3Modes {
		vips = append(vips, dsrVIP{L3VIP(mode), mode})
		if o.IPv6 {
			vips = append(vips, dsrVIP{L3VIP6(mode), mode})
		}
	}
	if o.IPv6 {
		vips = append(vips, dsrVIP{L3VIP46, "ipip"})
	}
	if l.Backends, err = setupBackends(n, o.Bins.Dsrctl, o.Backends, L3BackendIP, vips...); err != nil {
		return nil, err
	}
	if o.IPv6 {
		for i, be := range l.Backends {
			be.IP6 = L3BackendIP6(i + 1)
		}
	}
	for _, be := range l.Backends {
		if err := be.Serve(ctx, o.Bins.Backendsrv); err != nil {
			return nil, err
		}
	}
	cfg := L3Config(n.Bed, o.Backends, o.Lcores, o.MTU, o.Device)
	if o.IPv6 {
		p := &cfg.Dataplane.Ports[0]
		p.IP6, p.Gateway6 = netip.PrefixFrom(L3ApplianceIP6, L3FrontSubnet6.Bits()).String(), L3RouterFrontIP6.String()
		for _, mode := range L3Modes {
			cfg.Services = append(cfg.Services, webAndEcho("6-"+mode, L3VIP6(mode).String(), mode, backendList(o.Backends, L3BackendIP6))...)
		}
		cfg.Services = append(cfg.Services, webAndEcho("46", L3VIP46.String(), "ipip", backendList(o.Backends, L3BackendIP6))[0])
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	if err := l.startAppliance(ctx, cfg); err != nil {
		return nil, err
	}
	return l, nil
}

// startAppliance learns the MACs of the router's and the appliance's
// front links, starts dsrlb with cfg on the appliance and waits until it
// forwards to every backend of cfg (setting Appliance and Ready).
func (l *L3) startAppliance(ctx context.Context, cfg v1.Config) error {
	var err error
	if l.RouterMAC, err = l.Router.LinkMAC("eth0"); err != nil {
		return err
	}
	appl := l.Host("appl")
	if l.ApplianceMAC, err = appl.LinkMAC("eth0"); err != nil {
		return err
	}
	start := time.Now()
	if l.Appliance, err = startActive(ctx, appl, l.bins.Dsrlb, cfg); err != nil {
		return err
	}
	l.Ready = time.Since(start)
	return nil
}

// Close tears the bed down.
func (l *L3) Close() error { return l.Bed.Close() }

// URL is http://L3VIP(mode)<path>.
func (l *L3) URL(mode, path string) string { return "http://" + L3VIP(mode).String() + path }

// UDPAddr is L3VIP(mode):9000.
func (l *L3) UDPAddr(mode string) string {
	return net.JoinHostPort(L3VIP(mode).String(), strconv.Itoa(UDPPort))
}

// BackendNames returns be1..beN.
func (l *L3) BackendNames() []string { return l.Backends.Names() }

// Missing returns the backends absent from got (a per-backend tally).
func (l *L3) Missing(got map[string]int) []string { return l.Backends.Missing(got) }

// Decap sums the eBPF decapsulator counters of every backend
// (`dsrctl backend status`), and lists the backends that have no
// decapsulator attached to their data interface or that miss a VIP.
func (l *L3) Decap() (perBackend map[string]DecapStatus, problems []string, err error) {
	perBackend = map[string]DecapStatus{}
	for _, b := range l.Backends {
		st, err := b.NS.DecapStatus(l.bins.Dsrctl)
		if err != nil {
			return nil, nil, err
		}
		var found *DecapStatus
		for i := range st {
			if st[i].Interface == b.Iface && !st[i].Stale {
				found = &st[i]
			}
		}
		if found == nil {
			problems = append(problems, fmt.Sprintf("%s: no decapsulator on %s (status %+v)", b.Name, b.Iface, st))
			continue
		}
		for _, mode := range l.Modes() {
			if _, ok := found.VIPs[L3VIP(mode).String()]; !ok {
				problems = append(problems, fmt.Sprintf("%s: decapsulator on %s lacks VIP %s (has %v)", b.Name, b.Iface, L3VIP(mode), found.VIPs))
			}
		}
		perBackend[b.Name] = *found
	}
	return perBackend, problems, nil
}
