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

// Configure prepares tap ifname for the kernel's part of the exception
// path, idempotently:
//   - sysctls: arp_ignore=0 (answer ARP for every local address, VIPs
//     included), arp_announce=2 (ARP requests use the port address as
//     source, never a VIP), arp_notify=1 (gratuitous ARP when the tap comes
//     up), send_redirects=0 on the tap and on "all" (the kernel ORs the two;
//     this one is namespace-wide), accept_redirects=0, and, for an IPv4 port
//     address, disable_ipv6=1 (no link-local, DAD, router or MLD chatter on
//     the wire; VIPs.Set turns IPv6 back on for IPv6 VIPs). Only arp_ignore
//     is required; failures of the others are logged;
//   - MTU mtu (when > 0), address addr (replacing its old prefix length), up;
//   - when gateway is valid and the namespace's main table has no default
//     route of gateway's family, a default route via gateway on the tap. An
//     existing default route (a container's, a management interface's) is
//     kept: the kernel's own traffic then leaves that way except to the
//     port's subnet. The route's preferred source is the port address.
//
// It returns the tap for VIPs.Set and Neighbors.AddTap.
func (t *Taps) Configure(ifname string, addr netip.Prefix, gateway netip.Addr, mtu int) (Tap, error) {
	if t.nl.err != nil {
		return Tap{}, t.nl.err
	}
	if !addr.IsValid() {
		return Tap{}, fmt.Errorf("tap %s: invalid address %v", ifname, addr)
	}
	addr = netip.PrefixFrom(addr.Addr().Unmap(), addr.Bits())
	gateway = gateway.Unmap()
	h := t.nl.h

	link, err := h.LinkByName(ifname)
	if err != nil {
		return Tap{}, fmt.Errorf("tap %s: %w", ifname, err)
	}
	attrs := link.Attrs()

	v4 := addr.Addr().Is4()
	sys := []sysctl{
		{"ipv4/conf/" + ifname + "/arp_ignore", "0", false},
		{"ipv4/conf/" + ifname + "/arp_announce", "2", true},
		{"ipv4/conf/" + ifname + "/arp_notify", "1", true},
		{"ipv4/conf/" + ifname + "/send_redirects", "0", true},
		{"ipv4/conf/all/send_redirects", "0", true},
		{"ipv4/conf/" + ifname + "/accept_redirects", "0", true},
	}
	if v4 {
		sys = append(sys, sysctl{"ipv6/conf/" + ifname + "/disable_ipv6", "1", true})
	} else {
		sys = append(sys, sysctl{"ipv6/conf/" + ifname + "/disable_ipv6", "0", false})
	}
	if err := setSysctls(&t.nl, t.log, ifname, sys); err != nil {
		return Tap{}, err
	}

	if mtu > 0 && attrs.MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return Tap{}, fmt.Errorf("tap %s: set mtu %d: %w", ifname, mtu, err)
		}
	}
	a := &netlink.Addr{IPNet: ipNet(addr)}
	if !v4 {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrReplace(link, a); err != nil {
		return Tap{}, fmt.Errorf("tap %s: add address %s: %w", ifname, addr, err)
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
	t.log.Info().Str("event", "tap_configured").Str("tap", ifname).Str("addr", addr.String()).
		Str("gateway", addrString(gateway)).Int("mtu", mtu).Msg("tap configured")
	return Tap{Name: ifname, Index: attrs.Index, Addr: addr}, nil
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
