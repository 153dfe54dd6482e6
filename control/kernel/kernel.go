// Package kernel is the Linux side of the exception path (what the data
// plane hands to the kernel through a tap: ARP, ICMP, BGP, health checks,
// anything for the appliance itself): the kernel owns the appliance's own
// addresses and its VIPs on one tap per data plane port, answers ARP and
// ICMP echo for them, and its neighbour table is where next-hop MACs come
// from.
//
// It has three independent components, each with its own netlink handle:
//   - Taps provisions a tap (sysctls, MTU, port address, default route) and
//     quiets an interface an af_packet port shares with the kernel;
//   - VIPs reconciles the VIP host addresses on a tap;
//   - Neighbors mirrors the kernel's neighbour table and keeps the wanted
//     next hops resolved.
//
// Taps and VIPs hand a configured Tap over; the caller registers it with
// Neighbors (Neighbors.AddTap). The package imports nothing of dsrlb: MACs
// are [6]byte, which control's Neighbors interface also uses.
package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/dsrlb/dsrlb/control/kernel/nsrun"
)

// Options are the dependencies every component of the package takes.
type Options struct {
	Log zerolog.Logger
	// NetNS is the network namespace the taps live in. Zero (or -1, i.e.
	// netns.None()) means the namespace of the process. The components do
	// not close it.
	NetNS netns.NsHandle
}

// Tap is a tap as Taps.Configure left it: what VIPs and Neighbors need to
// know of it.
type Tap struct {
	Name  string
	Index int          // ifindex
	Addr  netip.Prefix // the port address and its subnet
	// Addr6 is the port's IPv6 address and its subnet beside an IPv4 Addr
	// (the port's `ip6`); the zero Prefix when the port has none.
	Addr6 netip.Prefix
}

// isPortAddr reports whether ip is one of the tap's port addresses.
func (t Tap) isPortAddr(ip netip.Addr) bool {
	return ip == t.Addr.Addr() || (t.Addr6.IsValid() && ip == t.Addr6.Addr())
}

// nlHandle is a netlink handle in the namespace of Options. A component
// whose handle could not be opened returns err from every method that
// needs it.
type nlHandle struct {
	ns    netns.NsHandle // valid only when useNS
	useNS bool
	h     *netlink.Handle
	err   error
}

func openHandle(ns netns.NsHandle) nlHandle {
	n := nlHandle{ns: ns, useNS: ns > 0}
	if n.useNS {
		n.h, n.err = netlink.NewHandleAt(ns)
	} else {
		n.h, n.err = netlink.NewHandle()
	}
	if n.err != nil {
		n.err = fmt.Errorf("netlink handle: %w", n.err)
		return n
	}
	// No netlink request of ours may hang the caller (Store.Subscribe
	// callbacks hold the store lock).
	if err := n.h.SetSocketTimeout(2 * time.Second); err != nil {
		n.h.Close()
		n.h, n.err = nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	return n
}

func (n *nlHandle) close() {
	if n.h != nil {
		n.h.Close()
	}
}

// inNetNS runs fn in the handle's namespace: /proc/sys/net belongs to the
// namespace of the thread that opens it.
func (n *nlHandle) inNetNS(fn func() error) error {
	if !n.useNS {
		return fn()
	}
	return nsrun.Do(n.ns, fn)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}
