package control

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/dsrlb/dsrlb/pipeline"
)

// dualYAML is a dual-stack config: a port with ip6 and gateway6, an IPv6
// neighbour, an IPv6 service with IPv6 and IPv4 backends (on-link and
// behind each gateway), and an IPv4 service with an IPv6 backend.
const dualYAML = `
dataplane:
  ports:
    - name: eth0
      device: net_null0
      ip: 192.0.2.10/24
      ip6: 2001:db8:0:1::10/64
      gateway: 192.0.2.1
      gateway6: 2001:db8:0:1::1
neighbors:
  - {ip: 192.0.2.1, mac: "02:00:00:00:00:01"}
  - {ip: "2001:db8:0:1::1", mac: "02:00:00:00:00:06"}
services:
  - name: web6
    vip: "2001:db8:100::10"
    protocol: tcp
    port: 443
    mode: ipip
    backends:
      - {ip: "2001:db8:0:2::21"}
      - {ip: "2001:db8:0:1::22"}
      - {ip: 192.0.2.23}
  - name: web4
    vip: 203.0.113.10
    protocol: tcp
    port: 80
    mode: gre
    backends:
      - {ip: "2001:db8:0:1::24"}
`

func TestParseValidIPv6(t *testing.T) {
	c, err := ParseYAML([]byte(dualYAML))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	p := tc.Ports[0]
	if want := netip.MustParsePrefix("2001:db8:0:1::10/64"); p.IP6 != want {
		t.Errorf("port IP6 %v, want %v (the address, not the masked subnet)", p.IP6, want)
	}
	if want := netip.MustParseAddr("2001:db8:0:1::1"); p.Gateway6 != want {
		t.Errorf("port Gateway6 %v, want %v", p.Gateway6, want)
	}
	if got, want := tc.Services[0].VIP, netip.MustParseAddr("2001:db8:100::10"); got != want {
		t.Errorf("VIP %v, want %v", got, want)
	}
	if _, ok := tc.Neighbors[netip.MustParseAddr("2001:db8:0:1::1")]; !ok {
		t.Error("the IPv6 neighbour is missing")
	}
	for _, tt := range []struct{ backend, hop string }{
		{"2001:db8:0:2::21", "2001:db8:0:1::1"}, // off-link: gateway6
		{"2001:db8:0:1::22", "2001:db8:0:1::22"},
		{"192.0.2.23", "192.0.2.23"},
		{"10.0.0.1", "192.0.2.1"}, // off-link IPv4: gateway
	} {
		hop, port := tc.NextHop(netip.MustParseAddr(tt.backend))
		if hop != netip.MustParseAddr(tt.hop) || port != 0 {
			t.Errorf("NextHop(%s) = %v, %d, want %s, 0", tt.backend, hop, port, tt.hop)
		}
	}
	spec := Compile(1, tc, NewIDs(), []pipeline.MAC{{2, 0, 0, 0, 0, 0x10}}, nil, nil)
	if want := netip.MustParseAddr("2001:db8:0:1::10"); spec.Ports[0].IP6 != want {
		t.Errorf("PortSpec.IP6 %v, want %v", spec.Ports[0].IP6, want)
	}
}

func TestValidateErrorsIPv6(t *testing.T) {
	for _, tc := range []struct {
		desc, from, to, field, msg string
	}{
		{"v6 vip without ip6", "      ip6: 2001:db8:0:1::10/64\n      gateway: 192.0.2.1\n      gateway6: 2001:db8:0:1::1\n", "      gateway: 192.0.2.1\n",
			"services[web6].vip", "no port has an IPv6 address (dataplane.ports[].ip6)"},
		{"gateway6 without ip6", "      ip6: 2001:db8:0:1::10/64\n", "", "dataplane.ports[eth0].gateway6", "needs the port's ip6"},
		{"bad ip6", "ip6: 2001:db8:0:1::10/64", "ip6: 192.0.2.11/24", "dataplane.ports[eth0].ip6", "want IPv6 address/prefix"},
		{"ip6 without prefix", "ip6: 2001:db8:0:1::10/64", "ip6: 2001:db8:0:1::10", "dataplane.ports[eth0].ip6", "want IPv6 address/prefix"},
		{"link-local ip6", "ip6: 2001:db8:0:1::10/64", "ip6: fe80::10/64", "dataplane.ports[eth0].ip6", "cannot be a port address"},
		{"gateway6 off-subnet", "gateway6: 2001:db8:0:1::1", "gateway6: 2001:db8:0:9::1", "dataplane.ports[eth0].gateway6", "neither on the port's subnet 2001:db8:0:1::/64 nor link-local"},
		{"gateway6 is ipv4", "gateway6: 2001:db8:0:1::1", "gateway6: 192.0.2.1", "dataplane.ports[eth0].gateway6", `not an IPv6 address: "192.0.2.1"`},
		{"bad v6 vip", `vip: "2001:db8:100::10"`, `vip: "2001:db8:100::1g"`, "services[web6].vip", `not an IPv6 address: "2001:db8:100::1g"`},
		{"mapped vip", `vip: "2001:db8:100::10"`, `vip: "::ffff:203.0.113.9"`, "services[web6].vip", "not an IPv6 address"},
		{"link-local vip", `vip: "2001:db8:100::10"`, `vip: "fe80::10"`, "services[web6].vip", "cannot be a VIP"},
		{"vip is port ip6", `vip: "2001:db8:100::10"`, `vip: "2001:db8:0:1::10"`, "services[web6].vip", "is the address of port eth0"},
		{"v6 backend without gateway6", "      gateway6: 2001:db8:0:1::1\n", "",
			"services[web6].backends[2001:db8:0:2::21].ip", "no port reaches 2001:db8:0:2::21 (not on a port's ip6 subnet, and no gateway6)"},
		{"l2 off-link v6 backend", "port: 443\n    mode: ipip", "port: 443\n    mode: l2",
			"services[web6].backends[2001:db8:0:2::21].ip", "l2 mode needs the backend on a port's subnet"},
		{"duplicate v6 backend", `{ip: "2001:db8:0:1::22"}`, `{ip: "2001:db8:0:2::21"}`, "services[web6].backends[2001:db8:0:2::21].ip", "duplicate backend"},
		{"ip6 port mtu too small", "      gateway: 192.0.2.1\n", "      gateway: 192.0.2.1\n      mtu: 1300\n", "dataplane.ports[eth0].mtu", "must be at least 1324 on a port with ip6"},
		{"bad v6 neighbour", `{ip: "2001:db8:0:1::1", mac`, `{ip: "2001:db8::1::1", mac`, "neighbors[1].ip", `not an IPv6 address: "2001:db8::1::1"`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			y := strings.Replace(dualYAML, tc.from, tc.to, 1)
			if y == dualYAML {
				t.Fatalf("%q is not in the config", tc.from)
			}
			_, err := ParseYAML([]byte(y))
			fe, ok := AsFieldError(err)
			if !ok {
				t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Message, tc.msg) {
				t.Errorf("got %s: %s (all: %v), want %s: ...%s...", fe.Field, fe.Message, err, tc.field, tc.msg)
			}
		})
	}
}

// TestValidateIPv6L2OnLink: an l2 service takes IPv6 backends on the
// port's ip6 subnet and IPv4 backends on its ip subnet, in one service.
func TestValidateIPv6L2OnLink(t *testing.T) {
	y := strings.Replace(dualYAML, "port: 443\n    mode: ipip", "port: 443\n    mode: l2", 1)
	y = strings.Replace(y, `      - {ip: "2001:db8:0:2::21"}`+"\n", "", 1)
	if _, err := ParseYAML([]byte(y)); err != nil {
		t.Fatal(err)
	}
}

// TestValidateGateway6LinkLocal: a link-local gateway6 (what routers
// advertise) is accepted.
func TestValidateGateway6LinkLocal(t *testing.T) {
	y := strings.Replace(dualYAML, "gateway6: 2001:db8:0:1::1", "gateway6: fe80::1", 1)
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := c.Validate()
	if hop, _ := tc.NextHop(netip.MustParseAddr("2001:db8:0:2::21")); hop != netip.MustParseAddr("fe80::1") {
		t.Errorf("next hop %v, want fe80::1", hop)
	}
}
