package frrtest

import (
	"fmt"
	"strings"
)

// Peer is one neighbour of a BGPConfig.
type Peer struct {
	Address string
	ASN     uint32
	// Password enables TCP MD5 (RFC 2385) for the session.
	Password string
	// IPv6 activates the neighbour for the IPv6 unicast family too.
	IPv6 bool
	// Passive makes bgpd only accept the session, never dial it.
	Passive bool
}

// BGPConfig renders a bgpd.conf for a router that takes routes from
// load-balancer appliances and spreads traffic over them by ECMP.
type BGPConfig struct {
	ASN       uint32
	RouterID  string
	Neighbors []Peer
	// MaximumPaths is the ECMP width per family; 0 means 4.
	MaximumPaths int
	// Extra lines go inside "router bgp", after the neighbours.
	Extra []string
}

// String renders the configuration:
//
//   - no bgp ebgp-requires-policy: FRR 8 otherwise drops every eBGP route
//     that has no inbound and outbound route-map (RFC 8212);
//   - bgp bestpath as-path multipath-relax: routes from appliances in
//     different ASes still form one ECMP group;
//   - maximum-paths N in both families;
//   - timers connect 1: bgpd retries the session every second (120 s by
//     default), so a restarted appliance is back quickly.
func (c BGPConfig) String() string {
	paths := c.MaximumPaths
	if paths == 0 {
		paths = 4
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("frr defaults traditional")
	w("!")
	w("router bgp %d", c.ASN)
	w(" bgp router-id %s", c.RouterID)
	w(" no bgp ebgp-requires-policy")
	w(" no bgp network import-check")
	w(" bgp bestpath as-path multipath-relax")
	for _, n := range c.Neighbors {
		w(" neighbor %s remote-as %d", n.Address, n.ASN)
		w(" neighbor %s timers connect 1", n.Address)
		if n.Password != "" {
			w(" neighbor %s password %s", n.Address, n.Password)
		}
		if n.Passive {
			w(" neighbor %s passive", n.Address)
		}
	}
	for _, l := range c.Extra {
		w(" %s", l)
	}
	w(" address-family ipv4 unicast")
	w("  maximum-paths %d", paths)
	w("  maximum-paths ibgp %d", paths)
	w(" exit-address-family")
	w(" address-family ipv6 unicast")
	for _, n := range c.Neighbors {
		if n.IPv6 {
			w("  neighbor %s activate", n.Address)
		}
	}
	w("  maximum-paths %d", paths)
	w("  maximum-paths ibgp %d", paths)
	w(" exit-address-family")
	w("!")
	return b.String()
}
