package v1

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole appliance configuration as written in YAML and in the
// REST API's JSON (the same field names). It is the raw, unvalidated form;
// the appliance's control.Config is this type with its validation.
type Config struct {
	Dataplane Dataplane  `yaml:"dataplane" json:"dataplane"`
	Neighbors []Neighbor `yaml:"neighbors,omitempty" json:"neighbors,omitempty"`
	Services  []Service  `yaml:"services,omitempty" json:"services"`
	Flows     Flows      `yaml:"flows,omitempty" json:"flows,omitempty"`
	Maglev    Maglev     `yaml:"maglev,omitempty" json:"maglev,omitempty"`
	API       API        `yaml:"api,omitempty" json:"api,omitempty"`
	BGP       *BGP       `yaml:"bgp,omitempty" json:"bgp,omitempty"`
}

// Dataplane is the DPDK side: EAL arguments, workers and ports.
type Dataplane struct {
	EALArgs []string `yaml:"eal_args,omitempty" json:"eal_args,omitempty"`
	// Workers is the number of worker lcores (one RX/TX queue each per
	// port); 0 means 1.
	Workers int `yaml:"workers,omitempty" json:"workers,omitempty"`
	// IdleSleep, when set, lets a worker that found no packet in 512
	// polls in a row sleep this long between polls until traffic comes
	// back (a first packet then waits up to IdleSleep plus the kernel's
	// timer slack). 0, the default, busy-polls: lowest latency, one CPU per
	// worker at 100 % all the time.
	IdleSleep Duration `yaml:"idle_sleep,omitempty" json:"idle_sleep,omitempty"`
	Ports     []Port   `yaml:"ports" json:"ports"`
	// ICMPErrorsPerSecond limits, per worker, the ICMP errors the data
	// plane sends (fragmentation needed, ICMPv6 Packet Too Big); above it
	// the oversized packets that would draw one are dropped
	// (icmp_error_limit). Omitted: 1000, as Linux limits its own; 0: no
	// limit.
	ICMPErrorsPerSecond *int `yaml:"icmp_errors_per_second,omitempty" json:"icmp_errors_per_second,omitempty"`
}

// Port is one DPDK port of the appliance.
type Port struct {
	Name    string `yaml:"name" json:"name"`
	Device  string `yaml:"device" json:"device"`
	IP      string `yaml:"ip" json:"ip"`                               // address/prefix, e.g. 192.0.2.10/24
	Gateway string `yaml:"gateway,omitempty" json:"gateway,omitempty"` // next hop off-subnet
	MTU     int    `yaml:"mtu,omitempty" json:"mtu,omitempty"`         // 0 means 1500
	MAC     string `yaml:"mac,omitempty" json:"mac,omitempty"`         // override the device MAC
	// IP6 is the port's IPv6 address/prefix, e.g. 2001:db8:0:1::10/64:
	// the source of IPv6 envelopes and of ICMPv6 errors, and the tap's
	// IPv6 address. Optional; IPv6 VIPs and backends need it.
	IP6 string `yaml:"ip6,omitempty" json:"ip6,omitempty"`
	// Gateway6 is the IPv6 next hop for IPv6 backends outside IP6's
	// subnet: an address on that subnet or a link-local one (fe80::/10).
	Gateway6 string `yaml:"gateway6,omitempty" json:"gateway6,omitempty"`
}

// Neighbor is a static IP-to-MAC entry; it wins over the kernel's table.
type Neighbor struct {
	IP  string `yaml:"ip" json:"ip"`
	MAC string `yaml:"mac" json:"mac"`
}

// Service is one virtual service.
type Service struct {
	Name       string    `yaml:"name" json:"name"`
	VIP        string    `yaml:"vip" json:"vip"`
	Protocol   string    `yaml:"protocol" json:"protocol"`
	Port       int       `yaml:"port" json:"port"`
	Mode       string    `yaml:"mode" json:"mode"`
	Backends   []Backend `yaml:"backends" json:"backends"`
	MinHealthy int       `yaml:"min_healthy,omitempty" json:"min_healthy,omitempty"`
	Health     *Health   `yaml:"health,omitempty" json:"health,omitempty"`
	// Limits, when set, bound what the service takes (flood protection).
	Limits *Limits `yaml:"limits,omitempty" json:"limits,omitempty"`
}

// Limits bound a service's load on the appliance.
type Limits struct {
	// NewFlowsPerSecond limits the service's new flows (TCP SYNs, UDP
	// packets of flows without an entry) for the whole appliance, split
	// evenly over the workers; the rest are dropped (drop reason
	// new_flow_limit). 0 means no limit.
	NewFlowsPerSecond int `yaml:"new_flows_per_second,omitempty" json:"new_flows_per_second,omitempty"`
}

// Backend is one real server of a service.
type Backend struct {
	IP string `yaml:"ip" json:"ip"`
	// Weight is the Maglev weight, 0..1000; omitted means 1. Weight 0
	// drains: old flows stay, no new ones.
	Weight *int   `yaml:"weight,omitempty" json:"weight,omitempty"`
	MAC    string `yaml:"mac,omitempty" json:"mac,omitempty"`
	// State is enabled (default), drain or disabled.
	State string `yaml:"state,omitempty" json:"state,omitempty"`
}

// Health is a service's health monitor.
type Health struct {
	Type     string   `yaml:"type" json:"type"` // tcp | http | icmp | udp
	Port     int      `yaml:"port,omitempty" json:"port,omitempty"`
	Path     string   `yaml:"path,omitempty" json:"path,omitempty"`
	Expect   []int    `yaml:"expect,omitempty" json:"expect,omitempty"`
	Send     string   `yaml:"send,omitempty" json:"send,omitempty"`
	Receive  string   `yaml:"receive,omitempty" json:"receive,omitempty"`
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	Timeout  Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	Rise     int      `yaml:"rise,omitempty" json:"rise,omitempty"`
	Fall     int      `yaml:"fall,omitempty" json:"fall,omitempty"`
	// Via is how tcp, http and udp monitors reach the backend: vip (the
	// default) through the DSR path, addressed to the VIP and handed to
	// that one backend as a client's packet; backend to its own address.
	// icmp monitors always probe the backend's own address.
	Via string `yaml:"via,omitempty" json:"via,omitempty"`
	// Passive, when set, turns on passive failure detection for the
	// service (tcp services only).
	Passive *Passive `yaml:"passive,omitempty" json:"passive,omitempty"`
}

// Passive is passive failure detection: the data plane sees only what
// clients send, and a backend that stops answering shows there as new
// flows whose client sends its SYN again and again and never an ACK. A
// flow is unanswered once its client sent the SYN again SynRetries times;
// Unanswered such flows to one backend within Window hold it down for
// Hold (no new flows, established ones kept), after which its active
// monitor must pass rise checks again before it takes new flows.
type Passive struct {
	SynRetries int      `yaml:"syn_retries,omitempty" json:"syn_retries,omitempty"` // default 2
	Unanswered int      `yaml:"unanswered,omitempty" json:"unanswered,omitempty"`   // default 5
	Window     Duration `yaml:"window,omitempty" json:"window,omitempty"`           // default 10s
	Hold       Duration `yaml:"hold,omitempty" json:"hold,omitempty"`               // default 30s
}

// Flows configures the per-worker flow table.
type Flows struct {
	Capacity       int      `yaml:"capacity,omitempty" json:"capacity,omitempty"`
	TCPSyn         Duration `yaml:"tcp_syn_timeout,omitempty" json:"tcp_syn_timeout,omitempty"`
	TCPEstablished Duration `yaml:"tcp_established_timeout,omitempty" json:"tcp_established_timeout,omitempty"`
	TCPClosing     Duration `yaml:"tcp_closing_timeout,omitempty" json:"tcp_closing_timeout,omitempty"`
	UDP            Duration `yaml:"udp_timeout,omitempty" json:"udp_timeout,omitempty"`
	// NewFlowsPerSecond is, per worker like Capacity, the rate of new
	// flows that get a flow table entry; above it new flows are forwarded
	// by Maglev without one (flows_stateless). 0 means no limit.
	NewFlowsPerSecond int `yaml:"new_flows_per_second,omitempty" json:"new_flows_per_second,omitempty"`
}

// Maglev configures the consistent hash. Every appliance of an ECMP group
// MUST use the same values.
type Maglev struct {
	TableSize uint32 `yaml:"table_size,omitempty" json:"table_size,omitempty"`
	Seed      uint32 `yaml:"seed,omitempty" json:"seed,omitempty"`
}

// API configures the REST API.
type API struct {
	Listen string `yaml:"listen,omitempty" json:"listen,omitempty"`
	Token  string `yaml:"token,omitempty" json:"-"`
}

// BGP configures the embedded speaker.
type BGP struct {
	ASN      uint32    `yaml:"asn" json:"asn"`
	RouterID string    `yaml:"router_id" json:"router_id"`
	Role     string    `yaml:"role,omitempty" json:"role,omitempty"` // active | standby
	Standby  string    `yaml:"standby_by,omitempty" json:"standby_by,omitempty"`
	Drain    Duration  `yaml:"drain,omitempty" json:"drain,omitempty"`
	Port     int       `yaml:"listen_port,omitempty" json:"listen_port,omitempty"`
	Peers    []BGPPeer `yaml:"peers" json:"peers"`
}

// BGPPeer is one BGP neighbour.
type BGPPeer struct {
	Address  string `yaml:"address" json:"address"`
	ASN      uint32 `yaml:"asn" json:"asn"`
	HoldTime int    `yaml:"hold_time,omitempty" json:"hold_time,omitempty"`
	Password string `yaml:"password,omitempty" json:"-"`
	Port     int    `yaml:"port,omitempty" json:"port,omitempty"`
}

// Duration is a time.Duration written as "1s", "500ms" in YAML and JSON.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	return d.parse(s)
}

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalJSON parses a JSON duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	return d.parse(s)
}

// MarshalJSON writes d as a JSON duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	n := *c
	n.Dataplane.EALArgs = append([]string(nil), c.Dataplane.EALArgs...)
	n.Dataplane.Ports = append([]Port(nil), c.Dataplane.Ports...)
	if c.Dataplane.ICMPErrorsPerSecond != nil {
		r := *c.Dataplane.ICMPErrorsPerSecond
		n.Dataplane.ICMPErrorsPerSecond = &r
	}
	n.Neighbors = append([]Neighbor(nil), c.Neighbors...)
	n.Services = make([]Service, len(c.Services))
	for i := range c.Services {
		n.Services[i] = c.Services[i].Clone()
	}
	if c.BGP != nil {
		b := *c.BGP
		b.Peers = append([]BGPPeer(nil), c.BGP.Peers...)
		n.BGP = &b
	}
	return &n
}

// Clone returns a deep copy of s.
func (s Service) Clone() Service {
	n := s
	n.Backends = make([]Backend, len(s.Backends))
	for i, b := range s.Backends {
		if b.Weight != nil {
			w := *b.Weight
			b.Weight = &w
		}
		n.Backends[i] = b
	}
	if s.Health != nil {
		h := *s.Health
		h.Expect = append([]int(nil), s.Health.Expect...)
		if h.Passive != nil {
			p := *h.Passive
			h.Passive = &p
		}
		n.Health = &h
	}
	return n
}

// Label names s in field paths: services[web].
func (s Service) Label() string { return s.Name }

// Label names p in field paths: dataplane.ports[eth0].
func (p Port) Label() string { return p.Name }

// Label names b in field paths by its address,
// services[web].backends[192.0.2.21] or
// services[web].backends[2001:db8::21]; "" (by its index) when the
// address is neither an IPv4 nor an IPv6 address (an IPv4-mapped IPv6
// address, a zone, are not labels either).
func (b Backend) Label() string {
	if a, err := netip.ParseAddr(b.IP); err == nil && (a.Is4() || a.Is6() && !a.Is4In6() && a.Zone() == "") {
		return a.String()
	}
	return ""
}

// Label names p in field paths by its address, bgp.peers[192.0.2.1]; ""
// (by its index) when the address is not an IPv4 address.
func (p BGPPeer) Label() string {
	if a, err := netip.ParseAddr(p.Address); err == nil && a.Is4() {
		return a.String()
	}
	return ""
}
