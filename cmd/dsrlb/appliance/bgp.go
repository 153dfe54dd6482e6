package appliance

import (
	"net/netip"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/bgp"
	"github.com/dsrlb/dsrlb/control"
)

// bgpConfig maps the validated config onto the speaker's own config:
// control.Validate checked every field it maps, so bgp.New accepts it.
func bgpConfig(t *control.Typed) bgp.Config {
	b := t.BGP
	c := bgp.Config{ASN: b.ASN, RouterID: b.RouterID, Role: bgp.RoleActive, StandbyBy: bgp.StandbyMED,
		ListenPort: int(b.ListenPort), NextHop: t.Ports[0].Addr}
	// IPv6 VIPs (as /128 in the IPv6 unicast family) have the IPv6 address
	// of the port whose tap owns them as next hop.
	if p := t.Ports[ip6Port(t)]; p.IP6.IsValid() {
		c.NextHop6 = p.IP6.Addr()
	}
	if b.Role == control.BGPStandby {
		c.Role = bgp.RoleStandby
	}
	if b.StandbyBy == control.StandbyPrepend {
		c.StandbyBy = bgp.StandbyPrepend
	}
	for _, p := range b.Peers {
		c.Peers = append(c.Peers, bgp.Peer{Address: p.Address, ASN: p.ASN, HoldTime: p.HoldTime,
			Password: p.Password, Port: int(p.Port)})
	}
	return c
}

// bgpPeers shows the speaker's sessions in the API.
type bgpPeers struct{ s *bgp.Speaker }

func (b bgpPeers) BGPPeers() []v1.BGPSession {
	var out []v1.BGPSession
	for _, p := range b.s.Peers() {
		out = append(out, v1.BGPSession{Address: p.Address.String(), ASN: p.ASN, State: p.State,
			UptimeSeconds: p.Uptime.Seconds(), PrefixesSent: p.PrefixesSent})
	}
	return out
}

// announcedPrefixes returns the host prefixes of the VIPs to announce: a /32
// for an IPv4 VIP, a /128 for an IPv6 one (the speaker sends it in the IPv6
// unicast family).
func announcedPrefixes(st []control.VIPStatus) []netip.Prefix {
	var pfx []netip.Prefix
	for _, s := range st {
		if s.Announce {
			pfx = append(pfx, netip.PrefixFrom(s.VIP, s.VIP.BitLen()))
		}
	}
	return pfx
}
