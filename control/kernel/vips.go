package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// infiniteLifetime is an address lifetime without end (INFINITY_LIFE_TIME).
const infiniteLifetime = 0xFFFFFFFF

// VIPs reconciles the VIP addresses on a tap with what the config wants.
// Its methods are safe for concurrent use.
type VIPs struct {
	log zerolog.Logger
	nl  nlHandle

	// mu serialises Set, so a tap's addresses end as the last call asked.
	mu sync.Mutex
}

// NewVIPs returns a VIPs for opts. It opens a netlink handle in opts.NetNS;
// if that fails, Set returns the error.
func NewVIPs(opts Options) *VIPs {
	return &VIPs{log: opts.Log, nl: openHandle(opts.NetNS)}
}

// Close releases the netlink handle.
func (v *VIPs) Close() { v.nl.close() }

// Set makes the VIP addresses on tap exactly vips: each as a host address
// (/32 or /128; an IPv6 one deprecated, so never the source of the
// kernel's own packets), so the kernel answers ARP/ND and ICMP echo for it, and
// IPv6 enabled on the tap if any VIP is IPv6 (Taps.Configure disables it
// beside an IPv4 port address). Every other host-length address on the tap
// counts as a stale VIP and is removed (the tap is dsrlb's, and this also
// cleans up after a previous run); the port addresses set by
// Taps.Configure (`ip`, `ip6`), which must come first, are never touched,
// nor are IPv6 link-local addresses. It is idempotent and makes only a few netlink calls, so it can
// run in a Store.Subscribe callback. It tries every change and returns the
// errors joined.
func (v *VIPs) Set(tap Tap, vips []netip.Addr) error {
	if v.nl.err != nil {
		return v.nl.err
	}
	if !tap.Addr.IsValid() {
		return fmt.Errorf("tap %s: not configured (Taps.Configure first)", tap.Name)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	h := v.nl.h
	link, err := h.LinkByName(tap.Name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", tap.Name, err)
	}
	want := map[netip.Addr]bool{}
	v6 := false
	for _, ip := range vips {
		ip = ip.Unmap()
		if !ip.IsValid() || tap.isPortAddr(ip) {
			continue
		}
		want[ip] = true
		v6 = v6 || ip.Is6()
	}
	if v6 && tap.Addr.Addr().Is4() && !tap.Addr6.IsValid() {
		if err := setSysctls(&v.nl, v.log, tap.Name, []sysctl{{"ipv6/conf/" + tap.Name + "/disable_ipv6", "0", false}}); err != nil {
			return err
		}
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("tap %s: list addresses: %w", tap.Name, err)
	}
	var errs []error
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, bits := a.Mask.Size()
		if ones != bits || tap.isPortAddr(ip) || ip.IsLinkLocalUnicast() {
			continue
		}
		if want[ip] {
			if !ip.Is6() || a.PreferedLft == 0 {
				delete(want, ip)
			} // else: re-added deprecated below (left by an older run)
			continue
		}
		if err := h.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: remove vip %s: %w", tap.Name, ip, err))
			continue
		}
		v.log.Info().Str("event", "vip_removed").Str("tap", tap.Name).Str("vip", ip.String()).Msg("vip removed from tap")
	}
	add := make([]netip.Addr, 0, len(want))
	for ip := range want {
		add = append(add, ip)
	}
	sort.Slice(add, func(i, j int) bool { return add[i].Less(add[j]) })
	for _, ip := range add {
		a := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, ip.BitLen()))}
		if ip.Is6() {
			a.Flags = unix.IFA_F_NODAD
			// Deprecated (preferred lifetime 0, valid forever): the kernel
			// still owns it (ND, echo, sockets) but never picks it as the
			// source of its own packets (RFC 6724 rule 3), which must come
			// from the port's ip6: a health check from the VIP would be
			// dropped by a backend that holds the VIP itself.
			a.PreferedLft, a.ValidLft = 0, infiniteLifetime
		}
		if err := h.AddrReplace(link, a); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: add vip %s: %w", tap.Name, ip, err))
			continue
		}
		v.log.Info().Str("event", "vip_added").Str("tap", tap.Name).Str("vip", ip.String()).Msg("vip added to tap")
	}
	return errors.Join(errs...)
}
