package nsbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// Addresses of the L2 DSR bed: one private /24 segment shared by the
// client, the appliance, the backends and the VIP, so the client reaches
// the VIP on-link and resolves it by ARP (answered by the appliance's
// kernel through its tap; the backends keep quiet).
var (
	L2Subnet      = netip.MustParsePrefix("10.99.0.0/24")
	L2ApplianceIP = netip.MustParseAddr("10.99.0.2")
	L2ClientIP    = netip.MustParseAddr("10.99.0.10")
	L2VIP         = netip.MustParseAddr("10.99.0.100")
)

// L2VLANPCP is the priority code point of the client's frames in the L2
// bed on an 802.1Q trunk (L2Options.VLAN).
const L2VLANPCP = 5

// Ports of the L2 bed's services (backendsrv listens on both).
const (
	HTTPPort = 80
	UDPPort  = 9000
)

// L2BackendIP is the address of backend i (1-based): 10.99.0.10+i.
func L2BackendIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 99, 0, byte(10 + i)})
}

// Binaries are the programs a bed runs.
type Binaries struct {
	Dsrlb, Dsrctl, Backendsrv string
}

// L2Options parametrise StartL2.
type L2Options struct {
	Bins Binaries
	// Backends is the number of backends; default 3.
	Backends int
	// Lcores is the appliance's EAL lcore list; default "0,1" (main lcore
	// and one worker).
	Lcores string
	// Bed configures the underlying Bed.
	Bed Options
	// Config, if set, edits the appliance config (L2Config) before dsrlb
	// starts: an API token, fewer backends in a service than hosts built
	// (a host left out can be added later through the API), ...
	Config func(*v1.Config)
	// IPv6 builds the bed dual-stack (WithL2IPv6): the appliance's port
	// gets ip6 L2ApplianceIP6, every backend the VIP L2VIP6 beside L2VIP,
	// and the config the services "web6" and "echo6" (as "web" and "echo")
	// on L2VIP6 with the backends' IPv6 addresses.
	IPv6 bool
	// VLAN, if not 0, builds L2TrunkTopology with this 802.1Q VLAN ID
	// and gives the client a static neighbour entry for the VIP.
	VLAN int
	// Topology, if set, edits the topology (L2Topology) before it is
	// built: another host, the appliance host in a container's network
	// namespace (Host.PID), ...
	Topology func(*Topology)
	// Start, if set, starts the appliance with cfg in l's host "appl" in
	// place of Bins.Dsrlb (a container of the appliance's image, say; see
	// StartDsrlbCommand). StartL2 then waits until it forwards.
	Start func(ctx context.Context, l *L2, cfg v1.Config) (*Appliance, error)
}

// L2Topology is the L2 DSR testbed: segment "lan"; host "client"; host
// "appl" whose eth0 is raw (driven by DPDK); hosts be1..beN.
func L2Topology(backends int) Topology {
	bits := L2Subnet.Bits()
	t := Topology{
		Segments: []Segment{{Name: "lan"}},
		Hosts: []Host{
			{Name: "client", Links: []Link{{Segment: "lan", Addrs: []netip.Prefix{netip.PrefixFrom(L2ClientIP, bits)}}}},
			{Name: "appl", Links: []Link{{Segment: "lan", Raw: true}}},
		},
	}
	for i := 1; i <= backends; i++ {
		t.Hosts = append(t.Hosts, Host{Name: "be" + strconv.Itoa(i),
			Links: []Link{{Segment: "lan", Addrs: []netip.Prefix{netip.PrefixFrom(L2BackendIP(i), bits)}}}})
	}
	return t
}

// L2TrunkTopology is L2Topology with the appliance's port on an 802.1Q
// trunk: the client sits on an access port of VLAN vlan (its frames tagged
// with PCP L2VLANPCP), the appliance's address on the native VLAN
// (untagged). The backends' switch ports untag what they deliver, so a
// backend is on both: the native VLAN for the appliance's ARP and health
// checks, VLAN vlan for the client's packets the appliance hands on.
func L2TrunkTopology(backends, vlan int) Topology {
	t := L2Topology(backends)
	for i := range t.Hosts {
		h := &t.Hosts[i]
		switch {
		case h.Name == "client":
			h.Links[0].Access = &Access{VLAN: vlan, PCP: L2VLANPCP}
		case strings.HasPrefix(h.Name, "be"):
			h.Links[0].Untag = true
		}
	}
	return t
}

// L2Config is the appliance config of the L2 bed: port eth0 (DPDK
// net_af_packet on the raw veth) with the appliance address; service "web"
// (tcp/80, HTTP health check) and "echo" (udp/9000, TCP health check on
// port 80), both l2 mode on the VIP with every backend.
func L2Config(b *Bed, backends int, lcores string) v1.Config {
	return v1.Config{
		Dataplane: v1.Dataplane{
			EALArgs:   b.EALArgs("appl", lcores),
			Workers:   1,
			IdleSleep: BedIdleSleep,
			Ports: []v1.Port{{Name: "eth0", Device: "net_af_packet0,iface=eth0",
				IP: netip.PrefixFrom(L2ApplianceIP, L2Subnet.Bits()).String()}},
		},
		Services: webAndEcho("", L2VIP.String(), "l2", backendList(backends, L2BackendIP)),
		API:      v1.API{Listen: DefaultAPI},
	}
}

// L2 is a running L2 DSR bed.
type L2 struct {
	*Net
	Client       *NS
	Appliance    *Appliance
	ApplianceMAC string // of its DPDK port (and tap)
	Backends     Backends
	// Ready is how long the appliance took from start to every backend
	// active.
	Ready time.Duration
}

// StartL2 builds the L2 DSR bed, configures the backends for DSR, starts
// backendsrv on each and dsrlb on the appliance, and waits until every
// backend forwards. On error everything is torn down again.
func StartL2(ctx context.Context, o L2Options) (l *L2, err error) {
	if o.Backends == 0 {
		o.Backends = 3
	}
	if o.Lcores == "" {
		o.Lcores = "0,1"
	}
	topo := L2Topology(o.Backends)
	if o.VLAN != 0 {
		topo = L2TrunkTopology(o.Backends, o.VLAN)
	}
	if o.IPv6 {
		WithL2IPv6(&topo)
	}
	if o.Topology != nil {
		o.Topology(&topo)
	}
	n, err := buildNet(o.Bed, "testbed "+L2Subnet.String(), topo)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Bed.Close()
		}
	}()
	l = &L2{Net: n, Client: n.Host("client")}
	vips := []dsrVIP{{L2VIP, "l2"}}
	if o.IPv6 {
		vips = append(vips, dsrVIP{L2VIP6, "l2"})
	}
	if l.Backends, err = setupBackends(n, o.Bins.Dsrctl, o.Backends, L2BackendIP, vips...); err != nil {
		return nil, err
	}
	if o.IPv6 {
		for i, be := range l.Backends {
			be.IP6 = L2BackendIP6(i + 1)
		}
	}
	for _, be := range l.Backends {
		if err := be.Serve(ctx, o.Bins.Backendsrv); err != nil {
			return nil, err
		}
	}
	appl := n.Host("appl")
	if l.ApplianceMAC, err = appl.LinkMAC("eth0"); err != nil {
		return nil, err
	}
	if o.VLAN != 0 {
		// The appliance's kernel answers ARP on the native VLAN only, and
		// the client's ARP requests are tagged.
		if _, err := l.Client.Run("ip", "neigh", "replace", L2VIP.String(), "lladdr", l.ApplianceMAC, "dev", "eth0", "nud", "permanent"); err != nil {
			return nil, err
		}
	}
	cfg := L2Config(n.Bed, o.Backends, o.Lcores)
	if o.IPv6 {
		cfg.Dataplane.Ports[0].IP6 = netip.PrefixFrom(L2ApplianceIP6, L2Subnet6.Bits()).String()
		cfg.Services = append(cfg.Services, webAndEcho("6", L2VIP6.String(), "l2", backendList(o.Backends, L2BackendIP6))...)
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	start := time.Now()
	if o.Start == nil {
		l.Appliance, err = startActive(ctx, appl, o.Bins.Dsrlb, cfg)
	} else if l.Appliance, err = o.Start(ctx, l, cfg); err == nil {
		err = waitActive(ctx, l.Appliance)
	}
	if err != nil {
		return nil, err
	}
	l.Ready = time.Since(start)
	return l, nil
}

// Close tears the bed down.
func (l *L2) Close() error { return l.Bed.Close() }

// URL is http://VIP<path>.
func (l *L2) URL(path string) string { return "http://" + L2VIP.String() + path }

// UDPAddr is VIP:9000.
func (l *L2) UDPAddr() string { return net.JoinHostPort(L2VIP.String(), strconv.Itoa(UDPPort)) }

// BackendNames returns be1..beN.
func (l *L2) BackendNames() []string { return l.Backends.Names() }

// Missing returns the backends absent from got (a per-backend tally).
func (l *L2) Missing(got map[string]int) []string { return l.Backends.Missing(got) }

// Evidence captures, while traffic runs, what proves that answers bypass
// the appliance: on the appliance's NIC every TCP or UDP packet from the
// VIP (there must be none; ICMP echo replies from the appliance's own
// kernel are fine), and at the client the SYN-ACKs and UDP answers from the
// VIP (their source MACs must be backends').
type Evidence struct {
	appl, clnt *Capture
	client     *NS
	vip        netip.Addr
	backends   Backends
	applMAC    string
}

// notProbeAnswer is a capture filter that leaves out the backends' answers
// to the appliance's health probes through the VIP (health.via: vip):
// they come from the VIP, to the appliance's port address at a probe
// source port (16384..32767, below the hosts' ephemeral ports), and cross
// its NIC by design.
const notProbeAnswer = "not dst portrange 16384-32767"

// StartEvidence starts both captures.
func (l *L2) StartEvidence() (*Evidence, error) {
	return StartDSREvidence(l.Host("appl"), l.Client, L2VIP, l.Backends, l.ApplianceMAC)
}

// StartDSREvidence starts the captures of an L2 DSR setup built otherwise
// than by StartL2 (a compose lab, say): on eth0 of appl, the namespace of
// the appliance's NIC, and on eth0 of client. The backends' MACs (bes)
// and the appliance's (applianceMAC) tell the senders of answers apart.
func StartDSREvidence(appl, client *NS, vip netip.Addr, bes Backends, applianceMAC string) (*Evidence, error) {
	// pcap-filter's tcp[] cannot look past an IPv6 header: ip6[53] is the
	// TCP flags byte behind a 40-byte IPv6 header (13 into the TCP header).
	family, syn := "ip", "tcp[tcpflags] & tcp-syn != 0"
	if vip.Is6() {
		family, syn = "ip6", "(tcp and ip6[53] & 2 != 0)"
	}
	a, err := appl.StartCapture("eth0", family+" src host "+vip.String()+" and (tcp or udp) and "+notProbeAnswer, 96)
	if err != nil {
		return nil, err
	}
	c, err := client.StartCapture("eth0", family+" src host "+vip.String()+" and (udp or "+syn+")", 96)
	if err != nil {
		return nil, err
	}
	return &Evidence{appl: a, clnt: c, client: client, vip: vip, backends: bes, applMAC: applianceMAC}, nil
}

// DSRReport is what the captures and the client's neighbour table showed.
type DSRReport struct {
	// ApplianceFromVIP counts TCP and UDP packets from the VIP on the
	// appliance's NIC.
	ApplianceFromVIP int
	// ClientFromVIP counts SYN-ACKs and UDP answers from the VIP at the
	// client; ByBackend splits them by the backend whose MAC sent them,
	// FromAppliance and FromUnknown count the rest.
	ClientFromVIP int
	ByBackend     map[string]int
	FromAppliance int
	FromUnknown   int
	// VIPNeighbor is the MAC the client's kernel resolved the VIP to.
	VIPNeighbor string
	// ApplianceMAC is the appliance's, which VIPNeighbor must be.
	ApplianceMAC string
	// CaptureDrops are packets the captures lost.
	CaptureDrops int
}

// Finish stops the captures and dissects them.
func (e *Evidence) Finish(ctx context.Context) (*DSRReport, error) {
	r := &DSRReport{ByBackend: map[string]int{}, ApplianceMAC: e.applMAC}
	for _, c := range []*Capture{e.appl, e.clnt} {
		d, err := c.Stop()
		if err != nil {
			return nil, err
		}
		r.CaptureDrops += d
	}
	rows, err := e.appl.Fields(ctx, "", "frame.number")
	if err != nil {
		return nil, err
	}
	r.ApplianceFromVIP = len(rows)
	rows, err = e.clnt.Fields(ctx, "", "eth.src")
	if err != nil {
		return nil, err
	}
	byMAC := e.backends.ByMAC()
	for _, row := range rows {
		r.ClientFromVIP++
		switch mac := row[0]; {
		case byMAC[mac] != "":
			r.ByBackend[byMAC[mac]]++
		case mac == e.applMAC:
			r.FromAppliance++
		default:
			r.FromUnknown++
		}
	}
	r.VIPNeighbor, err = e.client.Neighbor(e.vip.String())
	return r, err
}

// Problems lists what in r contradicts direct server return.
func (r *DSRReport) Problems() []string {
	var p []string
	if r.ApplianceFromVIP != 0 {
		p = append(p, fmt.Sprintf("%d TCP/UDP packets from the VIP crossed the appliance's NIC", r.ApplianceFromVIP))
	}
	if r.ClientFromVIP == 0 {
		p = append(p, "the client capture saw no answer from the VIP")
	}
	if r.FromAppliance != 0 {
		p = append(p, fmt.Sprintf("%d answers from the VIP reached the client from the appliance's MAC", r.FromAppliance))
	}
	if r.FromUnknown != 0 {
		p = append(p, fmt.Sprintf("%d answers from the VIP came from unknown MACs", r.FromUnknown))
	}
	if r.VIPNeighbor != r.ApplianceMAC {
		p = append(p, fmt.Sprintf("the client resolved the VIP to %q, want the appliance's %s", r.VIPNeighbor, r.ApplianceMAC))
	}
	if r.CaptureDrops != 0 {
		p = append(p, fmt.Sprintf("captures dropped %d packets", r.CaptureDrops))
	}
	return p
}

// CounterProblems lists what in the appliance's counters over a traffic run
// (delta) contradicts DSR: every packet the NIC received must be either for
// a service (or answered with fragmentation needed or Packet Too Big) or for the kernel (ARP,
// health-check answers), none dropped, so no answer from a backend can have
// reached it; and the services must have seen at least minServicePackets.
// A TCP super-frame the appliance cut into segments (from a peer with
// TSO/GSO) counts as its segments.
func CounterProblems(delta *Stats, minServicePackets uint64) []string {
	var p []string
	t := &delta.Totals
	svc := delta.ServicePackets()
	rx := t.RxPackets - t.GSOSegmented + t.GSOSegments
	if got := svc + t.FragNeededSent + t.PacketTooBigSent + t.ToKernel + t.ProbeReplies + t.Dropped; got != rx {
		p = append(p, fmt.Sprintf("rx %d - super-frames %d + their segments %d != service packets %d + frag-needed %d + packet too big %d + to kernel %d + probe answers %d + dropped %d",
			t.RxPackets, t.GSOSegmented, t.GSOSegments, svc, t.FragNeededSent, t.PacketTooBigSent, t.ToKernel, t.ProbeReplies, t.Dropped))
	}
	if delta.Totals.Dropped != 0 {
		drops := delta.NonZeroDrops()
		slices.Sort(drops)
		p = append(p, fmt.Sprintf("appliance dropped %d packets: %v", delta.Totals.Dropped, drops))
	}
	if svc < minServicePackets {
		p = append(p, fmt.Sprintf("services counted %d packets, want at least %d", svc, minServicePackets))
	}
	return p
}
