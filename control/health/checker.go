package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"
)

// Checker probes one backend once. Check returns nil when the backend
// passes, else why it failed. It honours ctx's deadline (the monitor's
// timeout) and cancellation. A Checker serves one monitor run and is never
// called concurrently with itself.
type Checker interface {
	Check(ctx context.Context) error
}

// CheckerFunc adapts a function to a Checker.
type CheckerFunc func(ctx context.Context) error

// Check calls f(ctx).
func (f CheckerFunc) Check(ctx context.Context) error { return f(ctx) }

// Type is the kind of probe of a health monitor. The zero Type is not a
// valid one.
type Type uint8

// Monitor types, as written in the config (`type: tcp`).
const (
	TypeTCP  Type = iota + 1 // TCP connect (TCPChecker)
	TypeHTTP                 // HTTP GET with expected status codes (HTTPChecker)
	TypeUDP                  // UDP request and reply (UDPChecker)
	TypeICMP                 // ICMP echo (ICMPChecker)
)

var typeNames = [...]string{TypeTCP: "tcp", TypeHTTP: "http", TypeUDP: "udp", TypeICMP: "icmp"}

// ParseType returns the Type named s ("tcp", "http", "udp" or "icmp").
func ParseType(s string) (Type, bool) {
	for t, name := range typeNames {
		if name != "" && name == s {
			return Type(t), true
		}
	}
	return 0, false
}

// String returns the config name of t, or "Type(N)" for an invalid one.
func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// MarshalText writes t as its String, for JSON.
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Config is a validated health monitor: what a probe checks, how often,
// and how many results in a row change a backend's state.
type Config struct {
	Type Type
	// Port is the backend's port probed by tcp, http and udp.
	Port int
	// Path is the http GET path; Expect the status codes that pass.
	Path   string
	Expect []int
	// Send is the udp request; Receive, when set, must be in the reply.
	Send, Receive string
	// Interval is the time from one probe's start to the next; Timeout
	// bounds one probe (Timeout <= Interval).
	Interval, Timeout time.Duration
	// Rise and Fall are the consecutive successes that bring a backend up
	// and the consecutive failures that take it down.
	Rise, Fall int
	// Via is how tcp, http and udp probes reach the backend (icmp ones
	// always go to its own address); VIP and Mode are the service's, for
	// probes through the VIP and for the reasons of failures.
	Via  Via
	VIP  netip.Addr
	Mode string // l2, ipip or gre
	// Passive is passive failure detection; the zero value is off.
	Passive Passive
}

// Via is how a monitor reaches the backend.
type Via uint8

const (
	// ViaBackend probes the backend's own address, from the appliance's
	// kernel.
	ViaBackend Via = iota
	// ViaVIP probes through the DSR path: addressed to the VIP from a
	// source port the data plane maps to this one backend (ProbeSource),
	// in the probe namespace (Options.ProbeDialer).
	ViaVIP
)

var viaNames = [...]string{ViaBackend: "backend", ViaVIP: "vip"}

// ParseVia returns the Via named s ("vip" or "backend").
func ParseVia(s string) (Via, bool) {
	for v, name := range viaNames {
		if name == s {
			return Via(v), true
		}
	}
	return 0, false
}

// String returns the config name of v.
func (v Via) String() string {
	if int(v) < len(viaNames) {
		return viaNames[v]
	}
	return fmt.Sprintf("Via(%d)", uint8(v))
}

// MarshalText writes v as its String, for JSON.
func (v Via) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// throughVIP reports whether cfg's probes go through the VIP.
func (c *Config) throughVIP() bool { return c.Via == ViaVIP && c.Type != TypeICMP }

// equal reports whether c and o configure the same probes (Passive aside:
// changing it needs no new run of the monitor).
func (c *Config) equal(o *Config) bool {
	return c.Type == o.Type && c.Port == o.Port && c.Path == o.Path && slices.Equal(c.Expect, o.Expect) &&
		c.Send == o.Send && c.Receive == o.Receive && c.Interval == o.Interval && c.Timeout == o.Timeout &&
		c.Rise == o.Rise && c.Fall == o.Fall && c.Via == o.Via && c.VIP == o.VIP && c.Mode == o.Mode
}

// clone returns a copy of c that shares no memory with it.
func (c *Config) clone() Config {
	n := *c
	n.Expect = slices.Clone(c.Expect)
	return n
}

// newChecker returns the built-in Checker of cfg.Type for backend ip; an
// ICMP checker uses id as its echo identifier and opens its sockets with
// icmp. dial, when set, opens the connections of tcp, http and udp probes
// (probes through the VIP, vipDialer).
func newChecker(ip netip.Addr, cfg *Config, id uint16, icmp *ICMPSockets, dial DialFunc) Checker {
	addr := netip.AddrPortFrom(ip, uint16(cfg.Port))
	switch cfg.Type {
	case TypeTCP:
		return TCPChecker{Addr: addr, Dial: dial}
	case TypeHTTP:
		c := NewHTTPChecker(addr, cfg.Path, cfg.Expect)
		if dial != nil {
			c.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
				conn, err := dial(ctx, network, addr)
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // no TIME_WAIT on a probe port
				}
				return conn, err
			}
		}
		return c
	case TypeUDP:
		return UDPChecker{Addr: addr, Send: cfg.Send, Receive: cfg.Receive, Dial: dial}
	case TypeICMP:
		return &ICMPChecker{IP: ip, ID: id, Sockets: icmp}
	default:
		return CheckerFunc(func(context.Context) error { return fmt.Errorf("unknown monitor type %v", cfg.Type) })
	}
}

// network returns proto ("tcp", "udp") narrowed to ip's family, as Dial
// takes it: "tcp4" or "tcp6".
func network(proto string, ip netip.Addr) string {
	if ip.Unmap().Is4() {
		return proto + "4"
	}
	return proto + "6"
}

// deadlineFromContext gives conn ctx's deadline and ends its blocked reads
// and writes when ctx is cancelled; call the returned func when done.
func deadlineFromContext(ctx context.Context, conn interface{ SetDeadline(time.Time) error }) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
}

// DialFunc opens a connection of network ("tcp4", "udp4") to addr for one
// probe.
type DialFunc func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error)

// dialDirect dials addr from the appliance's own namespace.
func dialDirect(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr.String())
}
