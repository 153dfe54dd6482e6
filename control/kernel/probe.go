package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsrlb/dsrlb/control/kernel/nsrun"
)

// ProbeNS is the private network namespace of the health probes through
// the VIP. The appliance's own namespace holds the VIPs as local addresses
// (on the first tap, for ARP), so a socket there connects to a VIP
// locally; in the probe namespace the only interface is the data plane's
// probe port (a tap the DPDK side creates in it, see Enter), which holds
// the port addresses as /32s, answers no ARP (NOARP) and routes everything
// out of it: a connection to a VIP from a port address leaves through the
// data plane, which hands it to the backend its source port names. The
// namespace has no name (nothing in /run/netns); it goes away with its
// last reference, the handle Close releases and the tap the data plane
// closes.
type ProbeNS struct {
	ns   netns.NsHandle
	nl   nlHandle
	opts Options
}

// ProbeLocalPorts is the probe namespace's ephemeral port range: above
// the data plane's probe source ports (pipeline.ProbePortBase..32767),
// which probes bind explicitly.
const ProbeLocalPorts = "32768 60999"

// NewProbeNS creates the probe namespace with its loopback up.
func NewProbeNS(opts Options) (*ProbeNS, error) {
	ns, err := nsrun.New()
	if err != nil {
		return nil, fmt.Errorf("probe namespace: %w", err)
	}
	p := &ProbeNS{ns: ns, nl: openHandle(ns), opts: opts}
	if p.nl.err != nil {
		p.Close()
		return nil, fmt.Errorf("probe namespace: %w", p.nl.err)
	}
	// Before the probe tap exists, so that it never sends IPv6 into the
	// data plane: no link-local address (addr_gen_mode 1), so no router
	// solicitation; no duplicate address detection; no router
	// advertisements taken. (With NOARP, which Configure sets, it joins no
	// solicited-node group, so it sends no MLD report, and resolves no
	// neighbour.) The ports' IPv6 addresses, the sources of the probes
	// through IPv6 VIPs, go on with IFA_F_NODAD. A read-only /proc/sys (a
	// container) keeps the defaults: Configure then sets the tap's
	// address generation mode over netlink, which is what matters (no
	// link-local address, so nothing sent of its own), and NOARP skips
	// duplicate address detection.
	if err := setSysctls(&p.nl, opts.Log, "default", []sysctl{
		{path: "ipv6/conf/default/addr_gen_mode", value: "1", optional: true},
		{path: "ipv6/conf/default/accept_dad", value: "0", optional: true},
		{path: "ipv6/conf/default/dad_transmits", value: "0", optional: true},
		{path: "ipv6/conf/default/accept_ra", value: "0", optional: true},
		{path: "ipv6/conf/default/router_solicitations", value: "0", optional: true},
	}); err != nil {
		p.Close()
		return nil, fmt.Errorf("probe namespace: %w", err)
	}
	// The default already; a container's read-only /proc/sys keeps it.
	if err := setSysctls(&p.nl, opts.Log, "default", []sysctl{
		{path: "ipv4/ip_local_port_range", value: ProbeLocalPorts, optional: true},
	}); err != nil {
		p.Close()
		return nil, fmt.Errorf("probe namespace: %w", err)
	}
	lo, err := p.nl.h.LinkByName("lo")
	if err == nil {
		err = p.nl.h.LinkSetUp(lo)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("probe namespace: loopback: %w", err)
	}
	return p, nil
}

// Close releases the namespace's handles.
func (p *ProbeNS) Close() {
	p.nl.close()
	if p.ns.IsOpen() {
		p.ns.Close()
	}
}

// Enter switches the calling thread, which must be locked to its goroutine
// (runtime.LockOSThread), into the probe namespace, and returns the
// function that switches it back: for the DPDK main lcore thread while it
// creates and sets up the probe tap (a net_tap device creates its kernel
// interface, its queues and its control socket in the namespace of the
// thread that sets it up). If leave fails the thread stays in the probe
// namespace; the caller must not use it for anything else.
func (p *ProbeNS) Enter() (leave func() error, err error) {
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("current netns: %w", err)
	}
	if err := netns.Set(p.ns); err != nil {
		orig.Close()
		return nil, fmt.Errorf("enter the probe namespace: %w", err)
	}
	return func() error {
		defer orig.Close()
		if err := netns.Set(orig); err != nil {
			return fmt.Errorf("leave the probe namespace: %w", err)
		}
		return nil
	}, nil
}

// Do runs fn in the probe namespace (nsrun.Do): what it opens (a probe's
// socket) stays there.
func (p *ProbeNS) Do(fn func() error) error { return nsrun.Do(p.ns, fn) }

// Configure prepares tap ifname, the probe port inside the namespace:
// the port addresses addrs as /32s and /128s (IPv6 without duplicate
// address detection), MTU mtu, NOARP (it has no neighbours: the data
// plane reads the frames whatever their destination MAC; for IPv6 it also
// means no neighbour discovery and no MLD), up, and default routes of both
// families out of it. (NewProbeNS kept IPv6 quiet there and set the
// ephemeral ports above the probe source ports, ProbeLocalPorts.)
func (p *ProbeNS) Configure(ifname string, addrs []netip.Addr, mtu int) error {
	h := p.nl.h
	link, err := h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("probe tap %s: %w", ifname, err)
	}
	if mtu > 0 {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("probe tap %s: set mtu %d: %w", ifname, mtu, err)
		}
	}
	if err := p.quiet6(link); err != nil {
		return fmt.Errorf("probe tap %s: %w", ifname, err)
	}
	if err := h.LinkSetARPOff(link); err != nil {
		return fmt.Errorf("probe tap %s: arp off: %w", ifname, err)
	}
	has6 := false
	for _, a := range addrs {
		na := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, a.BitLen()))}
		if a.Is6() {
			na.Flags, has6 = unix.IFA_F_NODAD, true
		}
		if err := h.AddrReplace(link, na); err != nil {
			return fmt.Errorf("probe tap %s: add address %s: %w", ifname, a, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("probe tap %s: set up: %w", ifname, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC,
		Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
	if err := h.RouteReplace(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("probe tap %s: default route: %w", ifname, err)
	}
	if has6 {
		r6 := &netlink.Route{LinkIndex: link.Attrs().Index, Protocol: unix.RTPROT_STATIC,
			Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}
		if err := h.RouteReplace(r6); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("probe tap %s: IPv6 default route: %w", ifname, err)
		}
	}
	p.opts.Log.Info().Str("event", "probe_tap_configured").Str("tap", ifname).Int("mtu", mtu).
		Msg("health probes through the VIP leave through the probe tap")
	return nil
}

// in6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h): the
// kernel generates no IPv6 link-local address for the link.
const in6AddrGenModeNone = 1

// quiet6 makes sure the probe tap sends nothing of its own over IPv6,
// whatever the sysctls NewProbeNS could set: its address generation mode
// none, set over netlink (which a container's read-only /proc/sys does
// not stop), so it has no link-local address and sends no router
// solicitation. The data plane starts the tap (up) before Configure: a
// link-local address it already got, and the solicitations that come
// with it, go with a down and up (Configure sets it up again).
func (p *ProbeNS) quiet6(link netlink.Link) error {
	if link.Attrs().Flags&net.FlagUp != 0 {
		if err := p.nl.h.LinkSetDown(link); err != nil {
			return fmt.Errorf("set down: %w", err)
		}
	}
	return p.Do(func() error {
		req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(link.Attrs().Index)
		req.AddData(msg)
		spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
		spec.AddRtAttr(unix.AF_INET6, nil).AddRtAttr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{in6AddrGenModeNone})
		req.AddData(spec)
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return nil // no IPv6 in this kernel: nothing to quiet
		}
		if err != nil {
			return fmt.Errorf("IPv6 address generation mode none: %w", err)
		}
		return nil
	})
}
