package nsbed

import (
	"net"
	"net/netip"
	"strconv"
)

// IPv6 addresses of the L3 bed built with L3Options.IPv6: one /64 beside
// each IPv4 /24, the same hosts and roles. The client and the router route
// the IPv6 VIPs (L3VIPSubnet6) to the appliance's IPv6 port address; the
// backends' IPv6 default route is the router.
var (
	L3FrontSubnet6   = netip.MustParsePrefix("fd00:96:1::/64")
	L3BackSubnet6    = netip.MustParsePrefix("fd00:96:2::/64")
	L3VIPSubnet6     = netip.MustParsePrefix("fd00:96::/64")
	L3RouterFrontIP6 = netip.MustParseAddr("fd00:96:1::1")
	L3RouterBackIP6  = netip.MustParseAddr("fd00:96:2::1")
	L3ApplianceIP6   = netip.MustParseAddr("fd00:96:1::2")
	L3ClientIP6      = netip.MustParseAddr("fd00:96:1::10")
)

// L3BackendIP6 is the IPv6 address of backend i (1-based): fd00:96:2::11
// for be1.
func L3BackendIP6(i int) netip.Addr { return hostIn6(L3BackSubnet6, byte(0x10+i)) }

// L3VIP6 is the IPv6 VIP of the L3 bed's services in mode: fd00:96::10
// for ipip, fd00:96::20 for gre, one each so that the client's kernel
// keeps a separate path MTU for each.
func L3VIP6(mode string) netip.Addr {
	switch mode {
	case "ipip":
		return netip.MustParseAddr("fd00:96::10")
	case "gre":
		return netip.MustParseAddr("fd00:96::20")
	}
	panic("nsbed: no L3 IPv6 VIP for mode " + mode)
}

// L3VIP46 is the IPv4 VIP of the dual-stack L3 bed's service "web46": IPv4
// clients, IPv6 backends, so IPv4 in IPv6 envelopes (RFC 2473, next header
// 4), 40 bytes (L3Overhead6("ipip")).
var L3VIP46 = netip.MustParseAddr("10.96.0.30")

// L3Overhead6 is the envelope's size in mode around a packet to an IPv6
// backend: a 40-byte outer IPv6 header (RFC 2473), plus a 4-byte GRE
// header for gre (RFC 2784).
func L3Overhead6(mode string) int {
	if mode == "gre" {
		return 44
	}
	return 40
}

// WithL3IPv6 makes an L3 topology dual-stack: IPv6 on on every host (the
// appliance's raw link keeps it off), each address given its IPv6
// counterpart, the routes to the VIPs and the backends' default route too.
func WithL3IPv6(t *Topology) {
	front, back := L3FrontSubnet6.Bits(), L3BackSubnet6.Bits()
	for i := range t.Hosts {
		h := &t.Hosts[i]
		h.IPv6 = true
		switch {
		case h.Name == "client":
			h.Links[0].Addrs = append(h.Links[0].Addrs, netip.PrefixFrom(L3ClientIP6, front))
			h.Routes = append(h.Routes, Route{Dst: L3VIPSubnet6, Via: L3ApplianceIP6})
		case h.Name == "rtr":
			h.Links[0].Addrs = append(h.Links[0].Addrs, netip.PrefixFrom(L3RouterFrontIP6, front))
			h.Links[1].Addrs = append(h.Links[1].Addrs, netip.PrefixFrom(L3RouterBackIP6, back))
			h.Routes = append(h.Routes, Route{Dst: L3VIPSubnet6, Via: L3ApplianceIP6})
		default:
			n, ok := backendIndex(h.Name)
			if !ok {
				continue
			}
			h.Links[0].Addrs = append(h.Links[0].Addrs, netip.PrefixFrom(L3BackendIP6(n), back))
			h.Routes = append(h.Routes, Route{Via: L3RouterBackIP6})
		}
	}
}

// URL6 is http://[L3VIP6(mode)]<path>.
func (l *L3) URL6(mode, path string) string { return "http://[" + L3VIP6(mode).String() + "]" + path }

// UDPAddr6 is [L3VIP6(mode)]:9000.
func (l *L3) UDPAddr6(mode string) string {
	return net.JoinHostPort(L3VIP6(mode).String(), strconv.Itoa(UDPPort))
}
