package control

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/dsrlb/dsrlb/control/health"
	"github.com/dsrlb/dsrlb/pipeline"
)

// Typed is a validated config with defaults filled in and every address
// parsed. Build it with Config.Validate.
type Typed struct {
	EALArgs   []string
	Workers   int
	IdleSleep time.Duration
	Ports     []TypedPort
	Neighbors map[netip.Addr]pipeline.MAC
	Services  []TypedService
	FlowCap   int
	Timeouts  pipeline.FlowTimeouts
	// FlowRate is flows.new_flows_per_second (per worker), 0 for none.
	FlowRate  uint32
	MaglevSz  uint32
	Seed      uint32
	APIListen string
	APIToken  string
	BGP       *TypedBGP // nil: no BGP speaker
	BGPDrain  time.Duration

	// ICMPErrorRate is dataplane.icmp_errors_per_second (per worker):
	// pipeline.DefaultICMPErrorsPerSecond when omitted, 0 for none.
	ICMPErrorRate uint32
}

// TypedPort is a validated dataplane port.
type TypedPort struct {
	Name, Device string
	Addr         netip.Addr
	Prefix       netip.Prefix
	Gateway      netip.Addr // invalid when none
	// IP6 is the port's IPv6 address with its prefix length, not masked
	// (2001:db8:0:1::10/64): IP6.Addr() is the source of IPv6 envelopes,
	// IP6.Contains tells an on-link IPv6 address. Invalid when the port
	// has no IPv6 address.
	IP6 netip.Prefix
	// Gateway6 is the next hop of IPv6 backends off IP6's subnet: on that
	// subnet or link-local. Invalid when none.
	Gateway6 netip.Addr
	MTU      int
	MAC      pipeline.MAC // zero: use the device's
	// KernelFrames: the device reads a kernel interface (see
	// KernelFramesDevice), so frames may arrive as the peer's kernel left
	// them for its offloads.
	KernelFrames bool
}

// KernelFramesDevice reports whether DPDK device string dev reads the
// frames of a kernel interface rather than a wire: net_af_packet (alias
// eth_af_packet), or net_pcap on a live interface (iface=, rx_iface=,
// rx_iface_in=). Such a port receives the peer kernels' socket buffers
// before their offloads ran: TCP and UDP checksums holding only the
// pseudo-header sum (CHECKSUM_PARTIAL), GSO/GRO super-frames.
func KernelFramesDevice(dev string) bool {
	name, args, _ := strings.Cut(dev, ",")
	switch {
	case strings.HasPrefix(name, "net_af_packet"), strings.HasPrefix(name, "eth_af_packet"):
		return true
	case strings.HasPrefix(name, "net_pcap"), strings.HasPrefix(name, "eth_pcap"):
		for _, kv := range strings.Split(args, ",") {
			k, _, _ := strings.Cut(strings.TrimSpace(kv), "=")
			if k == "iface" || k == "rx_iface" || k == "rx_iface_in" {
				return true
			}
		}
	}
	return false
}

// TypedService is a validated service.
type TypedService struct {
	Name       string
	VIP        netip.Addr
	Proto      uint8
	Port       uint16
	Mode       pipeline.Mode
	Backends   []TypedBackend
	MinHealthy int
	Health     *health.Config // nil: not monitored
	// NewFlowLimit is limits.new_flows_per_second, for the whole
	// appliance; 0 for none.
	NewFlowLimit uint32
}

// TypedBackend is a validated backend.
type TypedBackend struct {
	IP     netip.Addr
	Weight uint32
	MAC    pipeline.MAC // zero: resolve
	State  AdminState
}

// AdminState is a backend's state as the operator set it (Backend.State);
// its health and next hop decide the rest in Compile.
type AdminState uint8

const (
	// AdminEnabled takes new flows (the default).
	AdminEnabled AdminState = iota
	// AdminDrain keeps established flows and takes no new ones.
	AdminDrain
	// AdminDisabled takes no flows at all.
	AdminDisabled
)

// adminStates are the config names of the AdminState values.
var adminStates = [...]string{AdminEnabled: "enabled", AdminDrain: "drain", AdminDisabled: "disabled"}

// String returns the config name of s: enabled, drain or disabled.
func (s AdminState) String() string { return enumName(adminStates[:], s) }

// TypedBGP is a validated BGP section: every field the speaker needs,
// parsed and checked, so that starting it cannot fail on the config.
type TypedBGP struct {
	ASN       uint32
	RouterID  netip.Addr
	Role      BGPRole
	StandbyBy StandbyMethod
	// ListenPort is the port to accept sessions on; 0: only dial the peers.
	ListenPort uint16
	Peers      []TypedPeer
}

// TypedPeer is a validated BGP neighbour; its address is unique in the
// section.
type TypedPeer struct {
	Address  netip.Addr
	ASN      uint32
	HoldTime time.Duration // 0: the speaker's default; else whole seconds, 3s..65535s
	Password string        // TCP MD5 key, at most MaxBGPPassword bytes; "": none
	Port     uint16        // 0: 179
}

// BGPRole is whether the appliance attracts traffic first (active) or
// only without an active one (standby).
type BGPRole uint8

const (
	// BGPActive announces with the best attributes (the default).
	BGPActive BGPRole = iota
	// BGPStandby announces made less preferred, by its StandbyMethod.
	BGPStandby
)

var bgpRoles = [...]string{BGPActive: "active", BGPStandby: "standby"}

// String returns the config name of r: active or standby.
func (r BGPRole) String() string { return enumName(bgpRoles[:], r) }

// StandbyMethod is how a standby appliance makes its announcements worse.
type StandbyMethod uint8

const (
	// StandbyMED sets a worse MED (the default).
	StandbyMED StandbyMethod = iota
	// StandbyPrepend prepends the local ASN to the AS path.
	StandbyPrepend
)

var standbyMethods = [...]string{StandbyMED: "med", StandbyPrepend: "prepend"}

// String returns the config name of m: med or prepend.
func (m StandbyMethod) String() string { return enumName(standbyMethods[:], m) }

// enumName returns the config name of v, an enum whose names are indexed
// by value.
func enumName[T ~uint8](names []string, v T) string {
	if int(v) < len(names) {
		return names[v]
	}
	return "unknown"
}

// parseEnum returns the index of s in names, the config names of an enum
// indexed by value; "" is the first (the default).
func parseEnum[T ~uint8](names []string, s string) (T, bool) {
	if s == "" {
		return 0, true
	}
	for i, n := range names {
		if n == s {
			return T(i), true
		}
	}
	return 0, false
}

// Limits of config values.
const (
	MaxWeight   = 1000
	MaxBackends = 4096
	MaxServices = 4096
	// MaxBGPPassword is the longest TCP MD5 key, in bytes (Linux's
	// TCP_MD5SIG_MAXKEYLEN).
	MaxBGPPassword = 80
	// MinMTU6 is the smallest MTU of a port with an IPv6 address: a
	// 1280-byte IPv6 packet (the least every IPv6 link carries, RFC 8200)
	// in GRE over IPv6.
	MinMTU6 = pipeline.IPv6MinMTU + pipeline.IPv6HeaderSize + 4
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate checks c as a whole and returns its typed form. The error is a
// FieldErrors listing every offending object and field, in the order of
// the config; a check whose input already failed (a backend's subnet when
// a port's address is bad) is skipped rather than reported twice.
func (c *Config) Validate() (*Typed, error) {
	var l errList
	t := &Typed{EALArgs: c.Dataplane.EALArgs, Workers: c.Dataplane.Workers, Neighbors: map[netip.Addr]pipeline.MAC{}}
	dp := rootField("dataplane")
	if t.Workers == 0 {
		t.Workers = 1
	}
	if t.Workers < 1 || t.Workers > 64 {
		l.add(dp.key("workers"), "must be 1..64, got %d", c.Dataplane.Workers)
	}
	t.IdleSleep = time.Duration(c.Dataplane.IdleSleep)
	if t.IdleSleep < 0 || t.IdleSleep > 10*time.Millisecond {
		l.add(dp.key("idle_sleep"), "must be 0..10ms, got %v", t.IdleSleep)
	}
	t.ICMPErrorRate = pipeline.DefaultICMPErrorsPerSecond
	if r := c.Dataplane.ICMPErrorsPerSecond; r != nil {
		t.ICMPErrorRate = validateRate(*r, dp.key("icmp_errors_per_second"), &l)
	}
	own := t.validatePorts(c.Dataplane.Ports, &l)
	t.validateNeighbors(c.Neighbors, &l)
	t.validateServices(c.Services, own, &l)
	t.validateFlows(&c.Flows, &l)
	t.MaglevSz = c.Maglev.TableSize
	if t.MaglevSz == 0 {
		t.MaglevSz = pipeline.DefaultMaglevSize
	}
	if !pipeline.IsMaglevSize(t.MaglevSz) {
		l.add(rootField("maglev").key("table_size"), "must be one of %v", pipeline.MaglevSizes())
	}
	t.Seed = c.Maglev.Seed
	t.APIListen = c.API.Listen
	if t.APIListen == "" {
		t.APIListen = "127.0.0.1:8080"
	}
	if _, _, err := net.SplitHostPort(t.APIListen); err != nil {
		l.add(rootField("api").key("listen"), "want host:port, got %q", c.API.Listen)
	}
	t.APIToken = c.API.Token
	if c.BGP != nil {
		t.BGP = validateBGP(c.BGP, &l)
		t.BGPDrain = time.Duration(c.BGP.Drain)
		if c.BGP.Drain == 0 {
			t.BGPDrain = 5 * time.Second
		}
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	return t, nil
}

// validatePorts checks the dataplane ports into t.Ports and returns the
// ports' own addresses (address to port name). t.Ports stays empty when
// any port is invalid, so that backends are not also reported unreachable.
func (t *Typed) validatePorts(ports []Port, l *errList) map[netip.Addr]string {
	own := map[netip.Addr]string{}
	pf := rootField("dataplane").key("ports")
	if len(ports) == 0 {
		l.add(pf, "at least one port is required")
		return own
	}
	if len(ports) > pipeline.MaxPorts {
		l.add(pf, "at most %d ports, got %d", pipeline.MaxPorts, len(ports))
		return own
	}
	before := l.count()
	var typed []TypedPort
	for i, p := range ports {
		f := pf.item(i, p.Label())
		if !nameRE.MatchString(p.Name) {
			l.add(f.key("name"), "must match %s", nameRE)
		}
		for _, q := range typed {
			if q.Name == p.Name {
				l.add(f.key("name"), "duplicate port name")
				break
			}
		}
		if p.Device == "" {
			l.add(f.key("device"), "required")
		}
		tp := TypedPort{Name: p.Name, Device: p.Device, MTU: p.MTU, KernelFrames: KernelFramesDevice(p.Device)}
		pfx, err := netip.ParsePrefix(p.IP)
		ipOK := err == nil && pfx.Addr().Is4()
		switch {
		case !ipOK:
			l.add(f.key("ip"), "want IPv4 address/prefix like 192.0.2.10/24, got %q", p.IP)
		case pfx.Addr().IsUnspecified() || pfx.Addr().IsMulticast():
			l.add(f.key("ip"), "%v cannot be a port address", pfx.Addr())
			ipOK = false
		}
		if ipOK {
			tp.Addr, tp.Prefix = pfx.Addr(), pfx.Masked()
			if _, dup := own[tp.Addr]; dup {
				l.add(f.key("ip"), "address %v used by another port", tp.Addr)
			}
			own[tp.Addr] = p.Name
		}
		if p.Gateway != "" {
			gw, ok := parseAddr4(p.Gateway)
			switch {
			case !ok:
				l.add(f.key("gateway"), "not an IPv4 address: %q", p.Gateway)
			case ipOK && !tp.Prefix.Contains(gw):
				l.add(f.key("gateway"), "%v is not on the port's subnet %v", gw, tp.Prefix)
			}
			tp.Gateway = gw
		}
		validatePort6(p, f, &tp, own, l)
		if tp.MTU == 0 {
			tp.MTU = 1500
		}
		if tp.MTU < 576 || tp.MTU > 9000 {
			l.add(f.key("mtu"), "must be 576..9000, got %d", p.MTU)
		} else if tp.IP6.IsValid() && tp.MTU < MinMTU6 {
			l.add(f.key("mtu"), "must be at least %d on a port with ip6 (IPv6's 1280 and the longest envelope, 44 bytes), got %d", MinMTU6, p.MTU)
		}
		if p.MAC != "" {
			m, err := ParseMAC(p.MAC)
			if err != nil {
				l.add(f.key("mac"), "%v", err)
			}
			tp.MAC = m
		}
		typed = append(typed, tp)
	}
	if l.count() == before {
		t.Ports = typed
	}
	return own
}

// validatePort6 checks port p's IPv6 address and gateway (both optional)
// at f into tp, and records the address in own.
func validatePort6(p Port, f fieldPath, tp *TypedPort, own map[netip.Addr]string, l *errList) {
	ip6OK := false
	if p.IP6 != "" {
		pfx, err := netip.ParsePrefix(p.IP6)
		a := pfx.Addr()
		switch {
		case err != nil || !a.Is6() || a.Is4In6():
			l.add(f.key("ip6"), "want IPv6 address/prefix like 2001:db8:0:1::10/64, got %q", p.IP6)
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast():
			l.add(f.key("ip6"), "%v cannot be a port address (a global or unique local unicast address)", a)
		default:
			ip6OK = true
			tp.IP6 = pfx
			if _, dup := own[a]; dup {
				l.add(f.key("ip6"), "address %v used by another port", a)
			}
			own[a] = p.Name
		}
	}
	if p.Gateway6 == "" {
		return
	}
	gw, err := netip.ParseAddr(p.Gateway6)
	switch {
	case err != nil || !gw.Is6() || gw.Is4In6() || gw.Zone() != "":
		l.add(f.key("gateway6"), "not an IPv6 address: %q", p.Gateway6)
		return
	case p.IP6 == "":
		l.add(f.key("gateway6"), "needs the port's ip6")
	case gw.IsUnspecified() || gw.IsMulticast() || gw.IsLoopback():
		l.add(f.key("gateway6"), "%v cannot be a gateway", gw)
	case ip6OK && gw == tp.IP6.Addr():
		l.add(f.key("gateway6"), "%v is the port's own address", gw)
	case ip6OK && !gw.IsLinkLocalUnicast() && !tp.IP6.Contains(gw):
		l.add(f.key("gateway6"), "%v is neither on the port's subnet %v nor link-local", gw, tp.IP6.Masked())
	}
	tp.Gateway6 = gw
}

// hasIP6 reports whether a port has an IPv6 address.
func (t *Typed) hasIP6() bool {
	for _, p := range t.Ports {
		if p.IP6.IsValid() {
			return true
		}
	}
	return false
}

func (t *Typed) validateNeighbors(nbs []Neighbor, l *errList) {
	for i, n := range nbs {
		f := rootField("neighbors").item(i, "")
		a, msg := parseAddr(n.IP)
		ipOK := msg == ""
		if !ipOK {
			l.add(f.key("ip"), "%s", msg)
		}
		m, err := ParseMAC(n.MAC)
		if err != nil {
			l.add(f.key("mac"), "%v", err)
		}
		if !ipOK || err != nil {
			continue
		}
		if _, dup := t.Neighbors[a]; dup {
			l.add(f.key("ip"), "duplicate neighbor %v", a)
			continue
		}
		t.Neighbors[a] = m
	}
}

func (t *Typed) validateServices(svcs []Service, own map[netip.Addr]string, l *errList) {
	sf := rootField("services")
	if len(svcs) > MaxServices {
		l.add(sf, "at most %d services", MaxServices)
	}
	names := map[string]bool{}
	type svcKey struct {
		vip   netip.Addr
		proto uint8
		port  uint16
	}
	keys := map[svcKey]string{}
	for i := range svcs {
		s := &svcs[i]
		f := sf.item(i, s.Label())
		ts, keyOK := t.validateService(s, f, own, l)
		if nameRE.MatchString(s.Name) {
			if names[s.Name] {
				l.add(f.key("name"), "duplicate service name")
			}
			names[s.Name] = true
		}
		if keyOK {
			k := svcKey{ts.VIP, ts.Proto, ts.Port}
			if other, dup := keys[k]; dup {
				l.add(f.key("vip"), "%v %s port %d is already served by %q", ts.VIP, s.Protocol, ts.Port, other)
			}
			keys[k] = ts.Name
		}
		t.Services = append(t.Services, *ts)
	}
	probed := 0
	for _, ts := range t.Services {
		if ts.Health != nil && ts.Health.ProbesVia() == health.ViaVIP {
			probed += len(ts.Backends)
		}
	}
	if probed > pipeline.MaxProbeTargets {
		l.add(sf, "%d backends are probed through the VIP (health.via: vip, the default), at most %d: probe some via: backend",
			probed, pipeline.MaxProbeTargets)
	}
}

// validateService checks service s at f. keyOK tells whether its VIP,
// protocol and port are valid, so that clashes with other services can be
// checked.
func (t *Typed) validateService(s *Service, f fieldPath, own map[netip.Addr]string, l *errList) (ts *TypedService, keyOK bool) {
	if !nameRE.MatchString(s.Name) {
		l.add(f.key("name"), "must match %s", nameRE)
	}
	ts = &TypedService{Name: s.Name, MinHealthy: s.MinHealthy}
	before := l.count()
	vip, msg := parseAddr(s.VIP)
	switch {
	case msg != "":
		l.add(f.key("vip"), "%s", msg)
	case vip.IsUnspecified() || vip.IsMulticast() || vip.IsLoopback() || vip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || vip.IsLinkLocalUnicast():
		l.add(f.key("vip"), "%v cannot be a VIP", vip)
	case own[vip] != "":
		l.add(f.key("vip"), "%v is the address of port %s", vip, own[vip])
	case vip.Is6() && len(t.Ports) > 0 && !t.hasIP6():
		// The tap answers neighbour discovery for the VIP and the
		// appliance sends ICMPv6 from a port's IPv6 address.
		l.add(f.key("vip"), "%v is an IPv6 VIP, but no port has an IPv6 address (dataplane.ports[].ip6)", vip)
	}
	ts.VIP = vip
	switch s.Protocol {
	case "tcp":
		ts.Proto = pipeline.ProtoTCP
	case "udp":
		ts.Proto = pipeline.ProtoUDP
	default:
		l.add(f.key("protocol"), "must be tcp or udp, got %q", s.Protocol)
	}
	portOK := s.Port >= 0 && s.Port <= 65535
	if !portOK {
		l.add(f.key("port"), "must be 0..65535 (0 = every port), got %d", s.Port)
	}
	ts.Port = uint16(s.Port)
	keyOK = l.count() == before
	switch s.Mode {
	case "l2":
		ts.Mode = pipeline.ModeL2
	case "ipip":
		ts.Mode = pipeline.ModeIPIP
	case "gre":
		ts.Mode = pipeline.ModeGRE
	default:
		l.add(f.key("mode"), "must be l2, ipip or gre, got %q", s.Mode)
	}
	if len(s.Backends) > MaxBackends {
		l.add(f.key("backends"), "at most %d backends", MaxBackends)
	}
	seen := map[netip.Addr]bool{}
	for j, b := range s.Backends {
		if tb, ok := t.validateBackend(&b, f.key("backends").item(j, b.Label()), ts, seen, own, l); ok {
			ts.Backends = append(ts.Backends, tb)
		}
	}
	if s.MinHealthy < 0 || s.MinHealthy > len(s.Backends) && len(s.Backends) > 0 {
		l.add(f.key("min_healthy"), "must be 0..%d, got %d", len(s.Backends), s.MinHealthy)
	}
	if ts.MinHealthy == 0 {
		ts.MinHealthy = 1
	}
	if s.Limits != nil {
		ts.NewFlowLimit = validateRate(s.Limits.NewFlowsPerSecond, f.key("limits").key("new_flows_per_second"), l)
	}
	if s.Health != nil {
		ts.Health = validateHealth(s.Health, f.key("health"), s.Port, portOK, l)
		ts.Health.VIP, ts.Health.Mode = ts.VIP, s.Mode
		if ts.VIP.Is6() && ts.Health.ProbesVia() == health.ViaVIP {
			// A probe through an IPv6 VIP comes from the IPv6 address
			// of its backend's egress port, where the backend answers
			// from the VIP.
			for _, b := range ts.Backends {
				if i := t.portFor(b.IP, true); i >= 0 && !t.Ports[i].IP6.IsValid() {
					if s.Health.Via != "" {
						l.add(f.key("health").key("via"), "vip: backend %v leaves through port %s, which has no ip6 for the probes through the IPv6 VIP to come from: give it one, or use via: backend",
							b.IP, t.Ports[i].Name)
					}
					ts.Health.Via = health.ViaBackend // the default falls back
					break
				}
			}
		}
		if s.Health.Passive != nil {
			ts.Health.Passive = validatePassive(s.Health.Passive, f.key("health").key("passive"), s.Protocol, l)
		}
	}
	return ts, keyOK
}

// validateBackend checks backend b at f of service ts; seen holds the
// backend addresses before it. ok is false when b had an error.
func (t *Typed) validateBackend(b *Backend, f fieldPath, ts *TypedService, seen map[netip.Addr]bool, own map[netip.Addr]string, l *errList) (tb TypedBackend, ok bool) {
	before := l.count()
	ip, msg := parseAddr(b.IP)
	parsed := msg == ""
	ipOK := false
	switch {
	case !parsed:
		l.add(f.key("ip"), "%s", msg)
	case seen[ip]:
		l.add(f.key("ip"), "duplicate backend")
	case ip == ts.VIP || own[ip] != "" || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() || ip.IsLinkLocalUnicast():
		l.add(f.key("ip"), "%v cannot be a backend", ip)
	default:
		ipOK = true
	}
	if parsed {
		seen[ip] = true
	}
	tb = TypedBackend{IP: ip, Weight: 1}
	if b.Weight != nil {
		if *b.Weight < 0 || *b.Weight > MaxWeight {
			l.add(f.key("weight"), "must be 0..%d, got %d", MaxWeight, *b.Weight)
		}
		tb.Weight = uint32(*b.Weight)
	}
	if b.MAC != "" {
		m, err := ParseMAC(b.MAC)
		if err != nil {
			l.add(f.key("mac"), "%v", err)
		}
		tb.MAC = m
	}
	if st, ok := parseEnum[AdminState](adminStates[:], b.State); ok {
		tb.State = st
	} else {
		l.add(f.key("state"), "must be enabled, drain or disabled, got %q", b.State)
	}
	// Reachability needs valid ports (t.Ports is empty otherwise) and a
	// valid backend address.
	if ipOK && len(t.Ports) > 0 {
		switch {
		case ts.Mode == pipeline.ModeL2 && t.portFor(ip, false) < 0:
			l.add(f.key("ip"), "l2 mode needs the backend on a port's subnet")
		case t.portFor(ip, true) >= 0:
		case ip.Is4():
			l.add(f.key("ip"), "no port reaches %v (not on a port subnet, and no gateway)", ip)
		default:
			l.add(f.key("ip"), "no port reaches %v (not on a port's ip6 subnet, and no gateway6)", ip)
		}
	}
	return tb, l.count() == before
}

// validateFlows checks the flow table's size and timeouts.
func (t *Typed) validateFlows(fl *Flows, l *errList) {
	f := rootField("flows")
	t.FlowCap = fl.Capacity
	if t.FlowCap == 0 {
		t.FlowCap = pipeline.DefaultFlowCapacity
	}
	if t.FlowCap < 1024 || t.FlowCap > 1<<26 {
		l.add(f.key("capacity"), "must be 1024..%d, got %d", 1<<26, fl.Capacity)
	}
	t.FlowRate = validateRate(fl.NewFlowsPerSecond, f.key("new_flows_per_second"), l)
	t.Timeouts = pipeline.DefaultFlowTimeouts
	for _, d := range []struct {
		name string
		in   Duration
		out  *time.Duration
	}{
		{"tcp_syn_timeout", fl.TCPSyn, &t.Timeouts.TCPSyn},
		{"tcp_established_timeout", fl.TCPEstablished, &t.Timeouts.TCPEstablished},
		{"tcp_closing_timeout", fl.TCPClosing, &t.Timeouts.TCPClosing},
		{"udp_timeout", fl.UDP, &t.Timeouts.UDP},
	} {
		if d.in < 0 || time.Duration(d.in) > 24*time.Hour {
			l.add(f.key(d.name), "must be 0..24h")
		}
		if d.in > 0 {
			*d.out = time.Duration(d.in)
		}
	}
}

// MaxNewFlowsPerSecond bounds the rates of the config (new flows, ICMP
// errors): far above what a worker handles, low enough that a typo of
// extra digits shows.
const MaxNewFlowsPerSecond = 100_000_000

// validateRate checks a rate per second (new flows, ICMP errors; 0: no
// limit).
func validateRate(r int, p fieldPath, l *errList) uint32 {
	if r < 0 || r > MaxNewFlowsPerSecond {
		l.add(p, "must be 0 (no limit)..%d, got %d", MaxNewFlowsPerSecond, r)
		return 0
	}
	return uint32(r)
}

// portFor returns the index of the port that reaches ip: on-link first
// (ip on the port's subnet of ip's family), then (when viaGateway) the
// first port with a gateway of ip's family; -1 if none.
func (t *Typed) portFor(ip netip.Addr, viaGateway bool) int {
	for i := range t.Ports {
		if t.Ports[i].onLink(ip) {
			return i
		}
	}
	if viaGateway {
		for i, p := range t.Ports {
			if ip.Is4() && p.Gateway.IsValid() || ip.Is6() && p.Gateway6.IsValid() {
				return i
			}
		}
	}
	return -1
}

// onLink reports whether ip is on one of p's subnets (IPv4 or IPv6).
func (p *TypedPort) onLink(ip netip.Addr) bool {
	return p.Prefix.Contains(ip) || p.IP6.IsValid() && p.IP6.Contains(ip)
}

// validateHealth checks monitor h at f of a service on port svcPort
// (svcPortOK false: that port is itself invalid and already reported).
func validateHealth(h *Health, f fieldPath, svcPort int, svcPortOK bool, l *errList) *health.Config {
	typ, ok := health.ParseType(h.Type)
	th := &health.Config{Type: typ, Port: h.Port, Path: h.Path, Expect: h.Expect, Send: h.Send, Receive: h.Receive,
		Interval: time.Duration(h.Interval), Timeout: time.Duration(h.Timeout), Rise: h.Rise, Fall: h.Fall}
	switch {
	case !ok:
		l.add(f.key("type"), "must be tcp, http, icmp or udp, got %q", h.Type)
	case typ == health.TypeTCP, typ == health.TypeHTTP, typ == health.TypeUDP:
		if th.Port == 0 {
			th.Port = svcPort
		}
		if (th.Port < 1 || th.Port > 65535) && (h.Port != 0 || svcPortOK) {
			l.add(f.key("port"), "must be 1..65535 (the service has no single port)")
		}
	}
	switch via, ok := health.ParseVia(h.Via); {
	case h.Via == "" && typ == health.TypeICMP:
		th.Via = health.ViaBackend
	case h.Via == "":
		th.Via = health.ViaVIP
	case !ok:
		l.add(f.key("via"), "must be vip or backend, got %q", h.Via)
	case via == health.ViaVIP && typ == health.TypeICMP:
		l.add(f.key("via"), "icmp monitors probe the backend's own address: use via: backend, or a tcp, http or udp monitor")
	default:
		th.Via = via
	}
	if typ == health.TypeHTTP {
		if th.Path == "" {
			th.Path = "/"
		}
		if th.Path[0] != '/' {
			l.add(f.key("path"), "must start with /")
		}
		if len(th.Expect) == 0 {
			th.Expect = []int{200}
		}
		for _, c := range th.Expect {
			if c < 100 || c > 599 {
				l.add(f.key("expect"), "status %d is not 100..599", c)
			}
		}
	}
	if th.Interval == 0 {
		th.Interval = 2 * time.Second
	}
	if th.Timeout == 0 {
		th.Timeout = th.Interval / 2
	}
	if th.Interval < 100*time.Millisecond || th.Interval > time.Hour {
		l.add(f.key("interval"), "must be 100ms..1h")
	}
	if th.Timeout <= 0 || th.Timeout > th.Interval {
		l.add(f.key("timeout"), "must be > 0 and <= interval")
	}
	if th.Rise == 0 {
		th.Rise = 2
	}
	if th.Fall == 0 {
		th.Fall = 2
	}
	if th.Rise < 1 || th.Rise > 100 {
		l.add(f.key("rise"), "must be 1..100")
	}
	if th.Fall < 1 || th.Fall > 100 {
		l.add(f.key("fall"), "must be 1..100")
	}
	return th
}

// validateBGP checks the BGP section b into its typed form. It checks
// everything bgp.New would refuse of what it maps onto the speaker's
// config, so that a config that validates also starts.
func validateBGP(b *BGP, l *errList) *TypedBGP {
	f := rootField("bgp")
	tb := &TypedBGP{ASN: b.ASN}
	if b.ASN == 0 {
		l.add(f.key("asn"), "required")
	}
	id, ok := parseAddr4(b.RouterID)
	switch {
	case !ok:
		l.add(f.key("router_id"), "not an IPv4 address: %q", b.RouterID)
	case id.IsUnspecified():
		l.add(f.key("router_id"), "%v cannot be a router ID", id)
	}
	tb.RouterID = id
	if r, ok := parseEnum[BGPRole](bgpRoles[:], b.Role); ok {
		tb.Role = r
	} else {
		l.add(f.key("role"), "must be active or standby, got %q", b.Role)
	}
	if m, ok := parseEnum[StandbyMethod](standbyMethods[:], b.Standby); ok {
		tb.StandbyBy = m
	} else {
		l.add(f.key("standby_by"), "must be med or prepend, got %q", b.Standby)
	}
	if b.Drain < 0 || time.Duration(b.Drain) > 10*time.Minute {
		l.add(f.key("drain"), "must be 0..10m")
	}
	// -1, like 0, does not listen: the speaker's own spelling of it.
	if b.Port < -1 || b.Port > 65535 {
		l.add(f.key("listen_port"), "must be 1..65535, or 0 not to listen, got %d", b.Port)
	} else if b.Port > 0 {
		tb.ListenPort = uint16(b.Port)
	}
	seen := map[netip.Addr]bool{}
	for i, p := range b.Peers {
		pf := f.key("peers").item(i, p.Label())
		tp := TypedPeer{ASN: p.ASN, HoldTime: time.Duration(p.HoldTime) * time.Second, Password: p.Password}
		a, ok := parseAddr4(p.Address)
		switch {
		case !ok:
			l.add(pf.key("address"), "not an IPv4 address: %q", p.Address)
		case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			l.add(pf.key("address"), "%v cannot be a peer", a)
		case seen[a]:
			l.add(pf.key("address"), "duplicate peer")
		}
		if ok {
			seen[a] = true
		}
		tp.Address = a
		if p.ASN == 0 {
			l.add(pf.key("asn"), "required")
		}
		if p.HoldTime != 0 && (p.HoldTime < 3 || p.HoldTime > 65535) {
			l.add(pf.key("hold_time"), "must be 0 or 3..65535")
		}
		if p.Port < 0 || p.Port > 65535 {
			l.add(pf.key("port"), "must be 1..65535, or 0 for 179, got %d", p.Port)
		}
		tp.Port = uint16(p.Port)
		if len(p.Password) > MaxBGPPassword {
			l.add(pf.key("password"), "longer than the %d bytes of a TCP MD5 key", MaxBGPPassword)
		}
		tb.Peers = append(tb.Peers, tp)
	}
	return tb
}

// ParseMAC parses a colon-separated Ethernet address.
func ParseMAC(s string) (pipeline.MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return pipeline.MAC{}, fmt.Errorf("not a MAC address: %q", s)
	}
	var m pipeline.MAC
	copy(m[:], hw)
	return m, nil
}

// Defaults of health.passive.
const (
	DefaultPassiveSynRetries = pipeline.DefaultSynRetries
	DefaultPassiveUnanswered = 5
	DefaultPassiveWindow     = 10 * time.Second
	DefaultPassiveHold       = 30 * time.Second
)

// validatePassive checks passive detection p at f of a service of
// protocol proto and fills its defaults.
func validatePassive(p *Passive, f fieldPath, proto string, l *errList) health.Passive {
	tp := health.Passive{SynRetries: p.SynRetries, Unanswered: p.Unanswered, Window: time.Duration(p.Window), Hold: time.Duration(p.Hold)}
	if proto == "udp" {
		l.add(f, "needs a tcp service: it counts SYNs that get no answer")
	}
	if tp.SynRetries == 0 {
		tp.SynRetries = DefaultPassiveSynRetries
	}
	if tp.Unanswered == 0 {
		tp.Unanswered = DefaultPassiveUnanswered
	}
	if tp.Window == 0 {
		tp.Window = DefaultPassiveWindow
	}
	if tp.Hold == 0 {
		tp.Hold = DefaultPassiveHold
	}
	if tp.SynRetries < 1 || tp.SynRetries > 6 {
		l.add(f.key("syn_retries"), "must be 1..6 (SYNs a client sends again before its flow counts as unanswered), got %d", tp.SynRetries)
	}
	if tp.Unanswered < 1 || tp.Unanswered > 100000 {
		l.add(f.key("unanswered"), "must be 1..100000 (unanswered flows within the window that hold a backend down), got %d", tp.Unanswered)
	}
	if tp.Window < time.Second || tp.Window > time.Hour {
		l.add(f.key("window"), "must be 1s..1h, got %v", tp.Window)
	}
	if tp.Hold < time.Second || tp.Hold > 24*time.Hour {
		l.add(f.key("hold"), "must be 1s..24h, got %v", tp.Hold)
	}
	return tp
}
