package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Taps provisions the kernel's side of the taps. It keeps no state of its
// own (the kernel is the state), so it needs no lock; its methods are safe
// for concurrent use.
type Taps struct {
	log zerolog.Logger
	nl  nlHandle
}

// NewTaps returns a Taps for opts. It opens a netlink handle in opts.NetNS;
// if that fails, every method returns the error.
func NewTaps(opts Options) *Taps {
	return &Taps{log: opts.Log, nl: openHandle(opts.NetNS)}
}

// Close releases the netlink handle.
func (t *Taps) Close() { t.nl.close() }

// TapConfig is what Taps.Configure gives a tap: the port's addresses, their
// gateways and the MTU.
type TapConfig struct {
	// Addr is the port address (`ip`) and its subnet; required.
	Addr netip.Prefix
	// Gateway, when valid, is the default router of Addr's family.
	Gateway netip.Addr
	// Addr6, when valid, is the port's IPv6 address (`ip6`) and its subnet
	// beside an IPv4 Addr.
	Addr6 netip.Prefix
	// Gateway6, when valid, is the IPv6 default router (`gateway6`).
	Gateway6 netip.Addr
	// MTU, when > 0, is the tap's MTU.
	MTU int
}

// Configure prepares tap ifname for the kernel's part of the exception
// path, idempotently:
//   - sysctls: arp_ignore=0 (answer ARP for every local address, VIPs
//     included), arp_announce=2 (ARP requests use the port address as
//     source, never a VIP), arp_notify=1 (gratuitous ARP when the tap comes
//     up), send_redirects=0 on the tap and on "all" (the kernel ORs the two;
//     this one is namespace-wide), accept_redirects=0. For a port without an
//     IPv6 address, disable_ipv6=1 (no link-local, DAD, router or MLD chatter
//     on the wire; VIPs.Set turns IPv6 back on for IPv6 VIPs). For a port
//     with one, accept_dad=0 (the tap's addresses are the appliance's own,
//     usable at once), autoconf=0 (no SLAAC address beside the configured
//     one), IPv6 accept_redirects=0, disable_ipv6=0 and, when Gateway6 is set,
//     accept_ra_defrtr=0 (the configured gateway is the default router;
//     without it the kernel takes its default router from router
//     advertisements). Only arp_ignore and disable_ipv6=0 are required;
//     failures of the others are logged;
//   - MTU, the addresses (replacing their old prefix lengths; IPv6 ones
//     without duplicate address detection), up;
//   - for Gateway and Gateway6 each, when valid and the namespace's main
//     table has no default route of its family, a default route via it on
//     the tap. An existing default route (a container's, a management
//     interface's) is kept: the kernel's own traffic then leaves that way
//     except to the port's subnet. The route's preferred source is the
//     port address of its family.
//
// It returns the tap for VIPs.Set and Neighbors.AddTap.
func (t *Taps) Configure(ifname string, c TapConfig) (Tap, error) {
	if t.nl.err != nil {
		return Tap{}, t.nl.err
	}
	if !c.Addr.IsValid() {
		return Tap{}, fmt.Errorf("tap %s: invalid address %v", ifname, c.Addr)
	}
	addr := netip.PrefixFrom(c.Addr.Addr().Unmap(), c.Addr.Bits())
	gateway, gateway6 := c.Gateway.Unmap(), c.Gateway6
	addr6 := c.Addr6
	if addr6.IsValid() && (!addr6.Addr().Is6() || addr6.Addr().Is4In6() || !addr.Addr().Is4()) {
		return Tap{}, fmt.Errorf("tap %s: IPv6 address %v beside %v: want an IPv6 address beside an IPv4 one", ifname, addr6, addr)
	}
	if gateway6.IsValid() && !addr6.IsValid() {
		return Tap{}, fmt.Errorf("tap %s: IPv6 gateway %s without an IPv6 address", ifname, gateway6)
	}
	h := t.nl.h

	link, err := h.LinkByName(ifname)
	if err != nil {
		return Tap{}, fmt.Errorf("tap %s: %w", ifname, err)
	}
	attrs := link.Attrs()

	v6 := addr.Addr().Is6() || addr6.IsValid()
	sys := []sysctl{
		{"ipv4/conf/" + ifname + "/arp_ignore", "0", false},
		{"ipv4/conf/" + ifname + "/arp_announce", "2", true},
		{"ipv4/conf/" + ifname + "/arp_notify", "1", true},
		{"ipv4/conf/" + ifname + "/send_redirects", "0", true},
		{"ipv4/conf/all/send_redirects", "0", true},
		{"ipv4/conf/" + ifname + "/accept_redirects", "0", true},
	}
	if !v6 {
		sys = append(sys, sysctl{"ipv6/conf/" + ifname + "/disable_ipv6", "1", true})
	} else {
		// Before disable_ipv6=0, which makes the link-local address.
		sys = append(sys,
			sysctl{"ipv6/conf/" + ifname + "/accept_dad", "0", true},
			sysctl{"ipv6/conf/" + ifname + "/autoconf", "0", true},
			sysctl{"ipv6/conf/" + ifname + "/accept_redirects", "0", true},
			sysctl{"ipv6/conf/" + ifname + "/disable_ipv6", "0", false})
		if gateway6.IsValid() {
			sys = append(sys, sysctl{"ipv6/conf/" + ifname + "/accept_ra_defrtr", "0", true})
		}
	}
	if err := setSysctls(&t.nl, t.log, ifname, sys); err != nil {
		return Tap{}, err
	}

	if c.MTU > 0 && attrs.MTU != c.MTU {
		if err := h.LinkSetMTU(link, c.MTU); err != nil {
			return Tap{}, fmt.Errorf("tap %s: set mtu %d: %w", ifname, c.MTU, err)
		}
	}
	for _, p := range []netip.Prefix{addr, addr6} {
		if !p.IsValid() {
			continue
		}
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(link, a); err != nil {
			return Tap{}, fmt.Errorf("tap %s: add address %s: %w", ifname, p, err)
		}
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return Tap{}, fmt.Errorf("tap %s: set up: %w", ifname, err)
		}
	}
	if gateway.IsValid() {
		if err := t.ensureDefaultRoute(ifname, attrs.Index, gateway, addr.Addr()); err != nil {
			return Tap{}, err
		}
	}
	if gateway6.IsValid() {
		if err := t.ensureDefaultRoute(ifname, attrs.Index, gateway6, addr6.Addr()); err != nil {
			return Tap{}, err
		}
	}
	t.log.Info().Str("event", "tap_configured").Str("tap", ifname).Str("addr", addr.String()).
		Str("gateway", addrString(gateway)).Str("addr6", prefixString(addr6)).Str("gateway6", addrString(gateway6)).
		Int("mtu", c.MTU).Msg("tap configured")
	return Tap{Name: ifname, Index: attrs.Index, Addr: addr, Addr6: addr6}, nil
}

func (t *Taps) ensureDefaultRoute(ifname string, index int, gw, src netip.Addr) error {
	family := netlink.FAMILY_V4
	if gw.Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := t.nl.h.RouteList(nil, family)
	if err != nil {
		return fmt.Errorf("tap %s: list routes: %w", ifname, err)
	}
	for _, r := range routes {
		if isDefaultRoute(r.Dst) {
			return nil
		}
	}
	r := &netlink.Route{LinkIndex: index, Gw: gw.AsSlice(), Protocol: unix.RTPROT_STATIC}
	if src.Is4() == gw.Is4() {
		r.Src = src.AsSlice() // the kernel's own traffic never leaves from a VIP
	}
	if err := t.nl.h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("tap %s: default route via %s: %w", ifname, gw, err)
	}
	t.log.Info().Str("event", "default_route").Str("tap", ifname).Str("gateway", gw.String()).Msg("default route added")
	return nil
}

func isDefaultRoute(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}

// QuietSharedInterface stops the kernel's own IP stack from answering on
// ifname, an interface a DPDK af_packet port reads beside the kernel: the
// kernel sees every frame too, and since the port and VIP addresses are
// local (on the tap) it would otherwise answer ARP for them and reset TCP
// connections to the VIP. It sets arp_ignore=8 (never answer ARP),
// rp_filter=1 (no address, so every IPv4 packet fails the reverse-path
// check) and disables IPv6 there. Idempotent.
func (t *Taps) QuietSharedInterface(ifname string) error {
	return setSysctls(&t.nl, t.log, ifname, []sysctl{
		{path: "ipv4/conf/" + ifname + "/arp_ignore", value: "8"},
		{path: "ipv4/conf/" + ifname + "/rp_filter", value: "1"},
		{path: "ipv6/conf/" + ifname + "/disable_ipv6", value: "1", optional: true},
	})
}
