package nsbed

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// IPv6 addresses of the L2 bed built with L2Options.IPv6: a /64 beside the
// IPv4 /24 on the same segment and hosts, so the client reaches the IPv6
// VIP on-link and resolves it by neighbour discovery (answered by the
// appliance's kernel through its tap; the backends hold the VIP on lo and
// keep quiet).
var (
	L2Subnet6      = netip.MustParsePrefix("fd00:99::/64")
	L2ApplianceIP6 = netip.MustParseAddr("fd00:99::2")
	L2ClientIP6    = netip.MustParseAddr("fd00:99::10")
	L2VIP6         = netip.MustParseAddr("fd00:99::100")
)

// L2BackendIP6 is the IPv6 address of backend i (1-based): fd00:99::11 for
// be1, as 10.99.0.11 is its IPv4 one.
func L2BackendIP6(i int) netip.Addr { return hostIn6(L2Subnet6, byte(0x10+i)) }

// hostIn6 is the address of subnet (a /64 or longer is all the beds use)
// whose last byte is last.
func hostIn6(subnet netip.Prefix, last byte) netip.Addr {
	a := subnet.Addr().As16()
	a[15] = last
	return netip.AddrFrom16(a)
}

// backendIndex returns i for a backend host named "be<i>".
func backendIndex(host string) (int, bool) {
	n, ok := strings.CutPrefix(host, "be")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil
}

// WithL2IPv6 makes an L2 topology dual-stack: IPv6 on on every host (the
// appliance's raw link keeps it off), the client and backend i given
// L2ClientIP6 and L2BackendIP6(i) beside their IPv4 addresses.
func WithL2IPv6(t *Topology) {
	bits := L2Subnet6.Bits()
	for i := range t.Hosts {
		h := &t.Hosts[i]
		h.IPv6 = true
		var ip netip.Addr
		switch {
		case h.Name == "client":
			ip = L2ClientIP6
		default:
			n, ok := backendIndex(h.Name)
			if !ok {
				continue
			}
			ip = L2BackendIP6(n)
		}
		h.Links[0].Addrs = append(h.Links[0].Addrs, netip.PrefixFrom(ip, bits))
	}
}

// URL6 is http://[L2VIP6]<path>.
func (l *L2) URL6(path string) string { return "http://[" + L2VIP6.String() + "]" + path }

// UDPAddr6 is [L2VIP6]:9000.
func (l *L2) UDPAddr6() string { return net.JoinHostPort(L2VIP6.String(), strconv.Itoa(UDPPort)) }

// StartEvidence6 is StartEvidence for the IPv6 VIP.
func (l *L2) StartEvidence6() (*Evidence, error) {
	return StartDSREvidence(l.Host("appl"), l.Client, L2VIP6, l.Backends, l.ApplianceMAC)
}
