package nsbed

import (
	"net/netip"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// IPv6 addresses of the ECMP bed built with ECMPOptions.IPv6: a /64 beside
// each IPv4 /24. The IPv6 VIP, like the IPv4 one, is on no segment: the
// router reaches it only through the appliances' announcements of its
// /128.
var (
	ECMPFrontSubnet6 = netip.MustParsePrefix("fd00:97:1::/64")
	ECMPLanSubnet6   = netip.MustParsePrefix("fd00:97::/64")
	ECMPClientIP6    = netip.MustParseAddr("fd00:97:1::10")
	ECMPRouterFront6 = netip.MustParseAddr("fd00:97:1::1")
	ECMPRouterLan6   = netip.MustParseAddr("fd00:97::1")
	ECMPVIP6         = netip.MustParseAddr("fd00:200::10")
)

// ECMPApplianceIP6 is the IPv6 address of appliance i (0-based):
// fd00:97::2+i.
func ECMPApplianceIP6(i int) netip.Addr { return hostIn6(ECMPLanSubnet6, byte(2+i)) }

// ECMPBackendIP6 is the IPv6 address of backend i (1-based): fd00:97::11
// for be1.
func ECMPBackendIP6(i int) netip.Addr { return hostIn6(ECMPLanSubnet6, byte(0x10+i)) }

// WithECMPIPv6 makes the ECMP topology dual-stack: IPv6 on on every host
// (the appliances' raw links keep it off), the client, the router and the
// backends given their IPv6 addresses and routes, and the router hashing
// IPv6 multipath routes on the 5-tuple too.
func WithECMPIPv6(t *Topology) {
	fbits, lbits := ECMPFrontSubnet6.Bits(), ECMPLanSubnet6.Bits()
	for i := range t.Hosts {
		h := &t.Hosts[i]
		h.IPv6 = true
		switch {
		case h.Name == "client":
			h.Links[0].Addrs = append(h.Links[0].Addrs, netip.PrefixFrom(ECMPClientIP6, fbits))
			h.Routes = append(h.Routes, Route{Via: ECMPRouterFront6})
		case h.Name == "rtr":
			h.Links[0].Addrs = append(h.Links[0].Addrs, netip.PrefixFrom(ECMPRouterFront6, fbits))
			h.Links[1].Addrs = append(h.Links[1].Addrs, netip.PrefixFrom(ECMPRouterLan6, lbits))
			h.Sysctls = append(h.Sysctls, "net.ipv6.fib_multipath_hash_policy", "1")
		default:
			n, ok := backendIndex(h.Name)
			if !ok {
				continue
			}
			h.Links[0].Addrs = append(h.Links[0].Addrs, netip.PrefixFrom(ECMPBackendIP6(n), lbits))
			h.Routes = append(h.Routes, Route{Via: ECMPRouterLan6})
		}
	}
}

// withECMPIPv6Config gives appliance i's config (ECMPConfig) its ip6 and
// gateway6 and the service "web6": "web" on ECMPVIP6 with the backends'
// IPv6 addresses.
func withECMPIPv6Config(cfg *v1.Config, i, backends int) {
	p := &cfg.Dataplane.Ports[0]
	p.IP6, p.Gateway6 = netip.PrefixFrom(ECMPApplianceIP6(i), ECMPLanSubnet6.Bits()).String(), ECMPRouterLan6.String()
	web6 := cfg.Services[0]
	health := *web6.Health
	web6.Name, web6.VIP, web6.Health = "web6", ECMPVIP6.String(), &health
	web6.Backends = backendList(backends, ECMPBackendIP6)
	cfg.Services = append(cfg.Services, web6)
}

// VIPPrefix6 is the IPv6 VIP as the /128 the appliances announce.
func (e *ECMP) VIPPrefix6() netip.Prefix { return netip.PrefixFrom(ECMPVIP6, 128) }

// URL6 is http://[ECMPVIP6]<path>.
func (e *ECMP) URL6(path string) string { return "http://[" + ECMPVIP6.String() + "]" + path }
