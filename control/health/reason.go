package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
)

// Probes through the VIP.
//
// With Via ViaVIP a tcp, http or udp probe is addressed to the VIP, from a
// source the data plane maps to the one backend probed (Options.ProbeSource),
// opened where the VIPs are not local addresses (Options.ProbeDialer: the
// appliance's probe namespace). The data plane hands it to the backend as a
// client's packet, so it fails where clients would fail: the VIP missing on
// the backend's lo, no decapsulator for ipip or gre, a service that listens
// on the backend's own address only. The failure's reason (explain) says
// what to check on which host.

// ErrNoProbePath is the error of a probe through the VIP when the
// appliance has no way to send one.
var ErrNoProbePath = errors.New("no probe path through the data plane")

// ErrNextHopUnresolved is the error of a probe through the VIP while the
// data plane has no MAC for the probed backend's next hop: it would drop
// the probe (no_route), so none is sent.
var ErrNextHopUnresolved = errors.New("next hop not resolved")

// vipDialer returns the DialFunc of the probes of target through the VIP:
// from the source the data plane maps to target for probe number n
// (ProbeSource), through Options.ProbeDialer (else a plain socket bound to
// that source, for tests).
func (ms *Monitors) vipDialer(target Target) DialFunc {
	var n uint32
	return func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
		if ms.opts.ProbeSource == nil {
			return nil, ErrNoProbePath
		}
		src, err := ms.opts.ProbeSource(target, n)
		n++
		if err != nil {
			return nil, err
		}
		if ms.opts.ProbeDialer != nil {
			return ms.opts.ProbeDialer(ctx, network, src, addr)
		}
		return DialFrom(ctx, network, src, addr)
	}
}

// DialFrom dials addr from local in the caller's network namespace, with
// SO_REUSEADDR: probe source ports are fixed, and the previous probe's
// connection from the same port may still linger.
func DialFrom(ctx context.Context, network string, local, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	switch network {
	case "tcp4", "tcp6", "tcp":
		d.LocalAddr = net.TCPAddrFromAddrPort(local)
	case "udp4", "udp6", "udp":
		d.LocalAddr = net.UDPAddrFromAddrPort(local)
	}
	return d.DialContext(ctx, network, addr.String())
}

// Target returns what cfg's probes of backend are addressed to and how they
// get there, for the API: "192.0.2.1:80 through ipip to 10.1.2.3",
// "10.1.2.3:80", "10.1.2.3" (icmp).
func (c *Config) Target(backend netip.Addr) string {
	if c.Type == TypeICMP {
		return backend.String()
	}
	if c.throughVIP() {
		return fmt.Sprintf("%s through %s to %s", netip.AddrPortFrom(c.VIP, uint16(c.Port)), c.Mode, backend)
	}
	return netip.AddrPortFrom(backend, uint16(c.Port)).String()
}

// ProbesVia returns how cfg's probes reach the backend: ViaBackend for icmp
// whatever Via says.
func (c *Config) ProbesVia() Via {
	if c.throughVIP() {
		return ViaVIP
	}
	return ViaBackend
}

// explain turns err, the failure of a probe of backend with cfg, into
// words an operator can act on: what did not answer, and what to check on
// which host.
func explain(cfg *Config, backend netip.Addr, err error) string {
	timeout := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		timeout = true
	}
	refused := errors.Is(err, syscall.ECONNREFUSED)
	unreach := errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
	if !cfg.throughVIP() {
		addr := cfg.Target(backend)
		switch {
		case timeout && cfg.Type == TypeICMP:
			return fmt.Sprintf("no answer from %s within %v: is the host up?", addr, cfg.Timeout)
		case timeout:
			return fmt.Sprintf("no answer from %s within %v: is the host up and the port open?", addr, cfg.Timeout)
		case refused:
			return fmt.Sprintf("connection refused: nothing listens on %s", addr)
		case unreach:
			return fmt.Sprintf("%s is unreachable from the appliance: %v", addr, err)
		}
		return err.Error()
	}
	vip := netip.AddrPortFrom(cfg.VIP, uint16(cfg.Port))
	switch {
	case errors.Is(err, ErrNoProbePath):
		return fmt.Sprintf("cannot probe through the VIP %s: the appliance has no probe path (see its log); set health.via: backend to probe %s directly", vip, backend)
	case errors.Is(err, ErrNextHopUnresolved):
		return fmt.Sprintf("not probed through the VIP %s: the next hop to %s is not resolved (no ARP or ND answer on the appliance's port)", vip, backend)
	case timeout && cfg.Mode == "l2":
		return fmt.Sprintf("no answer from the VIP %s through l2 within %v: check the VIP on lo of %s (and that it answers from it)", vip, cfg.Timeout, backend)
	case timeout:
		return fmt.Sprintf("no answer from the VIP %s through %s within %v: check the VIP on lo and the decapsulator on %s", vip, cfg.Mode, cfg.Timeout, backend)
	case refused:
		return fmt.Sprintf("connection refused by the VIP: nothing listens on %s on %s", vip, backend)
	}
	return fmt.Sprintf("through the VIP %s on %s: %v", vip, backend, err)
}
