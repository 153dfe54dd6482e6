package control

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

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
	MaglevSz  uint32
	Seed      uint32
	APIListen string
	APIToken  string
	BGP       *BGP
	BGPDrain  time.Duration
}

// TypedPort is a validated dataplane port.
type TypedPort struct {
	Name, Device string
	Addr         netip.Addr
	Prefix       netip.Prefix
	Gateway      netip.Addr // invalid when none
	MTU          int
	MAC          pipeline.MAC // zero: use the device's
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
	Health     *TypedHealth
}

// TypedBackend is a validated backend.
type TypedBackend struct {
	IP     netip.Addr
	Weight uint32
	MAC    pipeline.MAC // zero: resolve
	State  string       // enabled | drain | disabled
}

// TypedHealth is a validated health monitor.
type TypedHealth struct {
	Type             string
	Port             int
	Path             string
	Expect           []int
	Send, Receive    string
	Interval, Timout time.Duration
	Rise, Fall       int
}

// Limits of config values.
const (
	MaxWeight   = 1000
	MaxBackends = 4096
	MaxServices = 4096
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate checks c as a whole and returns its typed form. The error is a
// *FieldError naming the first offending object and field.
func (c *Config) Validate() (*Typed, error) {
	t := &Typed{EALArgs: c.Dataplane.EALArgs, Workers: c.Dataplane.Workers, Neighbors: map[netip.Addr]pipeline.MAC{}}
	if t.Workers == 0 {
		t.Workers = 1
	}
	if t.Workers < 1 || t.Workers > 64 {
		return nil, ferr("dataplane.workers", "must be 1..64, got %d", c.Dataplane.Workers)
	}
	t.IdleSleep = time.Duration(c.Dataplane.IdleSleep)
	if t.IdleSleep < 0 || t.IdleSleep > 10*time.Millisecond {
		return nil, ferr("dataplane.idle_sleep", "must be 0..10ms, got %v", t.IdleSleep)
	}
	if len(c.Dataplane.Ports) == 0 {
		return nil, ferr("dataplane.ports", "at least one port is required")
	}
	if len(c.Dataplane.Ports) > pipeline.MaxPorts {
		return nil, ferr("dataplane.ports", "at most %d ports, got %d", pipeline.MaxPorts, len(c.Dataplane.Ports))
	}
	own := map[netip.Addr]string{}
	for i, p := range c.Dataplane.Ports {
		f := fmt.Sprintf("dataplane.ports[%d]", i)
		if p.Name != "" {
			f = fmt.Sprintf("dataplane.ports[%s]", p.Name)
		}
		if !nameRE.MatchString(p.Name) {
			return nil, ferr(f+".name", "must match %s", nameRE)
		}
		for _, q := range t.Ports {
			if q.Name == p.Name {
				return nil, ferr(f+".name", "duplicate port name")
			}
		}
		if p.Device == "" {
			return nil, ferr(f+".device", "required")
		}
		pfx, err := netip.ParsePrefix(p.IP)
		if err != nil || !pfx.Addr().Is4() {
			return nil, ferr(f+".ip", "want IPv4 address/prefix like 192.0.2.10/24, got %q", p.IP)
		}
		tp := TypedPort{Name: p.Name, Device: p.Device, Addr: pfx.Addr(), Prefix: pfx.Masked(), MTU: p.MTU,
			KernelFrames: KernelFramesDevice(p.Device)}
		if _, dup := own[tp.Addr]; dup {
			return nil, ferr(f+".ip", "address %v used by another port", tp.Addr)
		}
		own[tp.Addr] = p.Name
		if p.Gateway != "" {
			gw, ok := parseAddr4(p.Gateway)
			if !ok {
				return nil, ferr(f+".gateway", "not an IPv4 address: %q", p.Gateway)
			}
			if !tp.Prefix.Contains(gw) {
				return nil, ferr(f+".gateway", "%v is not on the port's subnet %v", gw, tp.Prefix)
			}
			tp.Gateway = gw
		}
		if tp.MTU == 0 {
			tp.MTU = 1500
		}
		if tp.MTU < 576 || tp.MTU > 9000 {
			return nil, ferr(f+".mtu", "must be 576..9000, got %d", p.MTU)
		}
		if p.MAC != "" {
			m, err := ParseMAC(p.MAC)
			if err != nil {
				return nil, ferr(f+".mac", "%v", err)
			}
			tp.MAC = m
		}
		t.Ports = append(t.Ports, tp)
	}
	for i, n := range c.Neighbors {
		f := fmt.Sprintf("neighbors[%d]", i)
		a, ok := parseAddr4(n.IP)
		if !ok {
			return nil, ferr(f+".ip", "not an IPv4 address: %q", n.IP)
		}
		m, err := ParseMAC(n.MAC)
		if err != nil {
			return nil, ferr(f+".mac", "%v", err)
		}
		if _, dup := t.Neighbors[a]; dup {
			return nil, ferr(f+".ip", "duplicate neighbor %v", a)
		}
		t.Neighbors[a] = m
	}
	if len(c.Services) > MaxServices {
		return nil, ferr("services", "at most %d services", MaxServices)
	}
	names := map[string]bool{}
	type svcKey struct {
		vip   netip.Addr
		proto uint8
		port  uint16
	}
	keys := map[svcKey]string{}
	for i := range c.Services {
		ts, err := t.validateService(&c.Services[i], i, own)
		if err != nil {
			return nil, err
		}
		f := "services[" + ts.Name + "]"
		if names[ts.Name] {
			return nil, ferr(f+".name", "duplicate service name")
		}
		names[ts.Name] = true
		k := svcKey{ts.VIP, ts.Proto, ts.Port}
		if other, dup := keys[k]; dup {
			return nil, ferr(f+".vip", "%v %s port %d is already served by %q", ts.VIP, c.Services[i].Protocol, ts.Port, other)
		}
		keys[k] = ts.Name
		t.Services = append(t.Services, *ts)
	}
	t.FlowCap = c.Flows.Capacity
	if t.FlowCap == 0 {
		t.FlowCap = pipeline.DefaultFlowCapacity
	}
	if t.FlowCap < 1024 || t.FlowCap > 1<<26 {
		return nil, ferr("flows.capacity", "must be 1024..%d, got %d", 1<<26, c.Flows.Capacity)
	}
	t.Timeouts = pipeline.DefaultFlowTimeouts
	for _, d := range []struct {
		name string
		in   Duration
		out  *time.Duration
	}{
		{"tcp_syn_timeout", c.Flows.TCPSyn, &t.Timeouts.TCPSyn},
		{"tcp_established_timeout", c.Flows.TCPEstablished, &t.Timeouts.TCPEstablished},
		{"tcp_closing_timeout", c.Flows.TCPClosing, &t.Timeouts.TCPClosing},
		{"udp_timeout", c.Flows.UDP, &t.Timeouts.UDP},
	} {
		if d.in < 0 || time.Duration(d.in) > 24*time.Hour {
			return nil, ferr("flows."+d.name, "must be 0..24h")
		}
		if d.in > 0 {
			*d.out = time.Duration(d.in)
		}
	}
	t.MaglevSz = c.Maglev.TableSize
	if t.MaglevSz == 0 {
		t.MaglevSz = pipeline.DefaultMaglevSize
	}
	if !pipeline.IsMaglevSize(t.MaglevSz) {
		return nil, ferr("maglev.table_size", "must be one of %v", pipeline.MaglevSizes())
	}
	t.Seed = c.Maglev.Seed
	t.APIListen = c.API.Listen
	if t.APIListen == "" {
		t.APIListen = "127.0.0.1:8080"
	}
	if _, _, err := net.SplitHostPort(t.APIListen); err != nil {
		return nil, ferr("api.listen", "want host:port, got %q", c.API.Listen)
	}
	t.APIToken = c.API.Token
	if c.BGP != nil {
		if err := validateBGP(c.BGP); err != nil {
			return nil, err
		}
		t.BGP = c.BGP
		t.BGPDrain = time.Duration(c.BGP.Drain)
		if c.BGP.Drain == 0 {
			t.BGPDrain = 5 * time.Second
		}
	}
	return t, nil
}

func (t *Typed) validateService(s *Service, i int, own map[netip.Addr]string) (*TypedService, error) {
	f := fmt.Sprintf("services[%d]", i)
	if s.Name != "" {
		f = "services[" + s.Name + "]"
	}
	if !nameRE.MatchString(s.Name) {
		return nil, ferr(f+".name", "must match %s", nameRE)
	}
	ts := &TypedService{Name: s.Name, MinHealthy: s.MinHealthy}
	vip, ok := parseAddr4(s.VIP)
	if !ok {
		return nil, ferr(f+".vip", "not an IPv4 address: %q", s.VIP)
	}
	if vip.IsUnspecified() || vip.IsMulticast() || vip.IsLoopback() || vip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return nil, ferr(f+".vip", "%v cannot be a VIP", vip)
	}
	if p, clash := own[vip]; clash {
		return nil, ferr(f+".vip", "%v is the address of port %s", vip, p)
	}
	ts.VIP = vip
	switch s.Protocol {
	case "tcp":
		ts.Proto = pipeline.ProtoTCP
	case "udp":
		ts.Proto = pipeline.ProtoUDP
	default:
		return nil, ferr(f+".protocol", "must be tcp or udp, got %q", s.Protocol)
	}
	if s.Port < 0 || s.Port > 65535 {
		return nil, ferr(f+".port", "must be 0..65535 (0 = every port), got %d", s.Port)
	}
	ts.Port = uint16(s.Port)
	switch s.Mode {
	case "l2":
		ts.Mode = pipeline.ModeL2
	case "ipip":
		ts.Mode = pipeline.ModeIPIP
	case "gre":
		ts.Mode = pipeline.ModeGRE
	default:
		return nil, ferr(f+".mode", "must be l2, ipip or gre, got %q", s.Mode)
	}
	if len(s.Backends) > MaxBackends {
		return nil, ferr(f+".backends", "at most %d backends", MaxBackends)
	}
	seen := map[netip.Addr]bool{}
	for j, b := range s.Backends {
		bf := fmt.Sprintf("%s.backends[%d]", f, j)
		ip, ok := parseAddr4(b.IP)
		if !ok {
			return nil, ferr(bf+".ip", "not an IPv4 address: %q", b.IP)
		}
		bf = fmt.Sprintf("%s.backends[%s]", f, ip)
		if seen[ip] {
			return nil, ferr(bf+".ip", "duplicate backend")
		}
		seen[ip] = true
		if ip == vip || own[ip] != "" || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() {
			return nil, ferr(bf+".ip", "%v cannot be a backend", ip)
		}
		tb := TypedBackend{IP: ip, Weight: 1, State: "enabled"}
		if b.Weight != nil {
			if *b.Weight < 0 || *b.Weight > MaxWeight {
				return nil, ferr(bf+".weight", "must be 0..%d, got %d", MaxWeight, *b.Weight)
			}
			tb.Weight = uint32(*b.Weight)
		}
		if b.MAC != "" {
			m, err := ParseMAC(b.MAC)
			if err != nil {
				return nil, ferr(bf+".mac", "%v", err)
			}
			tb.MAC = m
		}
		switch b.State {
		case "", "enabled":
		case "drain", "disabled":
			tb.State = b.State
		default:
			return nil, ferr(bf+".state", "must be enabled, drain or disabled, got %q", b.State)
		}
		if ts.Mode == pipeline.ModeL2 && t.portFor(ip, false) < 0 {
			return nil, ferr(bf+".ip", "l2 mode needs the backend on a port's subnet")
		}
		if t.portFor(ip, true) < 0 {
			return nil, ferr(bf+".ip", "no port reaches %v (not on a port subnet, and no gateway)", ip)
		}
		ts.Backends = append(ts.Backends, tb)
	}
	if s.MinHealthy < 0 || s.MinHealthy > len(s.Backends) && len(s.Backends) > 0 {
		return nil, ferr(f+".min_healthy", "must be 0..%d, got %d", len(s.Backends), s.MinHealthy)
	}
	if ts.MinHealthy == 0 {
		ts.MinHealthy = 1
	}
	if s.Health != nil {
		h, err := validateHealth(s.Health, f+".health", s.Port)
		if err != nil {
			return nil, err
		}
		ts.Health = h
	}
	return ts, nil
}

// portFor returns the index of the port that reaches ip: on-link first,
// then (when viaGateway) the first port with a gateway; -1 if none.
func (t *Typed) portFor(ip netip.Addr, viaGateway bool) int {
	for i, p := range t.Ports {
		if p.Prefix.Contains(ip) {
			return i
		}
	}
	if viaGateway {
		for i, p := range t.Ports {
			if p.Gateway.IsValid() {
				return i
			}
		}
	}
	return -1
}

func validateHealth(h *Health, f string, svcPort int) (*TypedHealth, error) {
	th := &TypedHealth{Type: h.Type, Port: h.Port, Path: h.Path, Expect: h.Expect, Send: h.Send, Receive: h.Receive,
		Interval: time.Duration(h.Interval), Timout: time.Duration(h.Timeout), Rise: h.Rise, Fall: h.Fall}
	switch h.Type {
	case "tcp", "http", "udp":
		if th.Port == 0 {
			th.Port = svcPort
		}
		if th.Port < 1 || th.Port > 65535 {
			return nil, ferr(f+".port", "must be 1..65535 (the service has no single port)")
		}
	case "icmp":
	default:
		return nil, ferr(f+".type", "must be tcp, http, icmp or udp, got %q", h.Type)
	}
	if h.Type == "http" {
		if th.Path == "" {
			th.Path = "/"
		}
		if th.Path[0] != '/' {
			return nil, ferr(f+".path", "must start with /")
		}
		if len(th.Expect) == 0 {
			th.Expect = []int{200}
		}
		for _, c := range th.Expect {
			if c < 100 || c > 599 {
				return nil, ferr(f+".expect", "status %d is not 100..599", c)
			}
		}
	}
	if th.Interval == 0 {
		th.Interval = 2 * time.Second
	}
	if th.Timout == 0 {
		th.Timout = th.Interval / 2
	}
	if th.Interval < 100*time.Millisecond || th.Interval > time.Hour {
		return nil, ferr(f+".interval", "must be 100ms..1h")
	}
	if th.Timout <= 0 || th.Timout > th.Interval {
		return nil, ferr(f+".timeout", "must be > 0 and <= interval")
	}
	if th.Rise == 0 {
		th.Rise = 2
	}
	if th.Fall == 0 {
		th.Fall = 2
	}
	if th.Rise < 1 || th.Rise > 100 {
		return nil, ferr(f+".rise", "must be 1..100")
	}
	if th.Fall < 1 || th.Fall > 100 {
		return nil, ferr(f+".fall", "must be 1..100")
	}
	return th, nil
}

func validateBGP(b *BGP) error {
	if b.ASN == 0 {
		return ferr("bgp.asn", "required")
	}
	if _, ok := parseAddr4(b.RouterID); !ok {
		return ferr("bgp.router_id", "not an IPv4 address: %q", b.RouterID)
	}
	switch b.Role {
	case "", "active", "standby":
	default:
		return ferr("bgp.role", "must be active or standby, got %q", b.Role)
	}
	switch b.Standby {
	case "", "med", "prepend":
	default:
		return ferr("bgp.standby_by", "must be med or prepend, got %q", b.Standby)
	}
	if b.Drain < 0 || time.Duration(b.Drain) > 10*time.Minute {
		return ferr("bgp.drain", "must be 0..10m")
	}
	for i, p := range b.Peers {
		f := fmt.Sprintf("bgp.peers[%d]", i)
		if _, ok := parseAddr4(p.Address); !ok {
			return ferr(f+".address", "not an IPv4 address: %q", p.Address)
		}
		if p.ASN == 0 {
			return ferr(f+".asn", "required")
		}
		if p.HoldTime != 0 && (p.HoldTime < 3 || p.HoldTime > 65535) {
			return ferr(f+".hold_time", "must be 0 or 3..65535")
		}
	}
	return nil
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
