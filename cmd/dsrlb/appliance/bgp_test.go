package appliance

import (
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/bgp"
	"github.com/dsrlb/dsrlb/control"
)

// bgpTestConfig is a valid config with a BGP section.
const bgpTestConfig = `dataplane:
  ports:
    - {name: eth0, device: "net_null0", ip: 192.0.2.10/24, gateway: 192.0.2.1}
bgp:
  asn: 65010
  router_id: 192.0.2.10
  peers: [{address: 192.0.2.1, asn: 65000}]
`

// closedPort returns a loopback TCP port that nothing listens on, so that
// a speaker dialing it is refused at once and sends nothing anywhere else.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// TestBGPConfig: the typed BGP section maps field by field onto the
// speaker's config, and bgp.New accepts what Validate accepted.
func TestBGPConfig(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	y := bgpTestConfig + "  role: standby\n  standby_by: prepend\n"
	y = strings.Replace(y, "peers: [{address: 192.0.2.1, asn: 65000}]",
		"peers:\n    - {address: 127.0.0.1, asn: 65000, hold_time: 9, port: "+port+"}\n"+
			"    - {address: 127.0.0.2, asn: 65001, password: s3cret, port: "+port+"}", 1)
	c, err := control.ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	typed, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	got := bgpConfig(typed)
	p, _ := strconv.Atoi(port)
	want := bgp.Config{ASN: 65010, RouterID: netip.MustParseAddr("192.0.2.10"), Role: bgp.RoleStandby,
		StandbyBy: bgp.StandbyPrepend, NextHop: netip.MustParseAddr("192.0.2.10"), Peers: []bgp.Peer{
			{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, HoldTime: 9 * time.Second, Port: p},
			{Address: netip.MustParseAddr("127.0.0.2"), ASN: 65001, Password: "s3cret", Port: p},
		}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("bgpConfig\n got %+v\nwant %+v", got, want)
	}

	// Defaults: active, by MED (the speaker's own defaults too).
	typed.BGP.Role, typed.BGP.StandbyBy = control.BGPActive, control.StandbyMED
	if c := bgpConfig(typed); c.Role != bgp.RoleActive || c.StandbyBy != bgp.StandbyMED {
		t.Errorf("role %q by %q, want active by med", c.Role, c.StandbyBy)
	}

	// Listening is off (ListenPort 0); the peers are on loopback ports
	// nobody listens on.
	s, err := bgp.New(got, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatalf("bgp.New refused a validated config: %v", err)
	}
	defer s.Close()
	var addrs []netip.Addr
	for _, peer := range s.Peers() {
		addrs = append(addrs, peer.Address)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	if want := []netip.Addr{want.Peers[0].Address, want.Peers[1].Address}; !slices.Equal(addrs, want) {
		t.Errorf("speaker peers %v, want %v", addrs, want)
	}
}

// TestAnnouncedPrefixes: a VIP fit to announce is a host prefix of its own
// family; the others are left out.
func TestAnnouncedPrefixes(t *testing.T) {
	st := []control.VIPStatus{
		{VIP: netip.MustParseAddr("192.0.2.100"), Announce: true},
		{VIP: netip.MustParseAddr("192.0.2.101")},
		{VIP: netip.MustParseAddr("2001:db8:100::10"), Announce: true},
		{VIP: netip.MustParseAddr("2001:db8:100::11")},
	}
	got := announcedPrefixes(st)
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.100/32"), netip.MustParsePrefix("2001:db8:100::10/128")}
	if !slices.Equal(got, want) {
		t.Errorf("announcedPrefixes = %v, want %v", got, want)
	}
}

// TestBGPConfigNextHop6: IPv6 VIPs get the IPv6 address of the first port
// with an ip6 as next hop; without one there is none.
func TestBGPConfigNextHop6(t *testing.T) {
	for _, tc := range []struct {
		desc, ports string
		want        netip.Addr
	}{
		{"no ip6", "    - {name: eth0, device: \"net_null0\", ip: 192.0.2.10/24}\n", netip.Addr{}},
		{"first port", "    - {name: eth0, device: \"net_null0\", ip: 192.0.2.10/24, ip6: \"2001:db8:0:1::10/64\"}\n",
			netip.MustParseAddr("2001:db8:0:1::10")},
		{"second port", "    - {name: eth0, device: \"net_null0\", ip: 192.0.2.10/24}\n" +
			"    - {name: eth1, device: \"net_null1\", ip: 198.51.100.10/24, ip6: \"2001:db8:0:2::10/64\"}\n",
			netip.MustParseAddr("2001:db8:0:2::10")},
	} {
		y := "dataplane:\n  ports:\n" + tc.ports + "bgp:\n  asn: 65010\n  router_id: 192.0.2.10\n  peers: [{address: 192.0.2.1, asn: 65000}]\n"
		c, err := control.ParseYAML([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		typed, err := c.Validate()
		if err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		if got := bgpConfig(typed); got.NextHop6 != tc.want || got.NextHop != netip.MustParseAddr("192.0.2.10") {
			t.Errorf("%s: next hops %v and %v, want 192.0.2.10 and %v", tc.desc, got.NextHop, got.NextHop6, tc.want)
		}
	}
}
