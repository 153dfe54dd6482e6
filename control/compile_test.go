package control

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/control/health"
)

// TestHealthTargets checks the monitors control hands to health.Monitors:
// one per backend of each monitored service, with the defaults filled in.
func TestHealthTargets(t *testing.T) {
	y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: {type: http, rise: 3}", 1) +
		"  - {name: dns, vip: 203.0.113.11, protocol: udp, port: 53, mode: ipip, backends: [{ip: 10.0.0.2}]}\n"
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	mon := health.Config{Type: health.TypeHTTP, Port: 80, Path: "/", Expect: []int{200},
		Interval: 2 * time.Second, Timeout: time.Second, Rise: 3, Fall: 2,
		Via: health.ViaVIP, VIP: netip.MustParseAddr("203.0.113.10"), Mode: "ipip"}
	want := map[health.Target]health.Config{
		{Service: "web", Backend: netip.MustParseAddr("10.0.0.1")}:   mon,
		{Service: "web", Backend: netip.MustParseAddr("192.0.2.21")}: mon,
	}
	if got := tc.HealthTargets(); !reflect.DeepEqual(got, want) {
		t.Errorf("got targets %+v, want %+v", got, want)
	}
	if got := (*Typed)(nil).HealthTargets(); got != nil {
		t.Errorf("nil config: got %v, want none", got)
	}
}

// TestValidateHealthVia: tcp, http and udp monitors probe through the VIP
// unless told otherwise; icmp ones always probe the backend's address.
func TestValidateHealthVia(t *testing.T) {
	for _, tc := range []struct {
		health string
		want   health.Via
		field  string // the error's field; "" for none
	}{
		{"{type: tcp}", health.ViaVIP, ""},
		{"{type: http}", health.ViaVIP, ""},
		{"{type: udp}", health.ViaVIP, ""},
		{"{type: icmp}", health.ViaBackend, ""},
		{"{type: http, via: backend}", health.ViaBackend, ""},
		{"{type: tcp, via: vip}", health.ViaVIP, ""},
		{"{type: icmp, via: backend}", health.ViaBackend, ""},
		{"{type: icmp, via: vip}", 0, "services[web].health.via"},
		{"{type: tcp, via: VIP}", 0, "services[web].health.via"},
		{"{type: tcp, via: real}", 0, "services[web].health.via"},
	} {
		t.Run(tc.health, func(t *testing.T) {
			y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: "+tc.health, 1)
			c, err := ParseYAML([]byte(y))
			if tc.field != "" {
				fe, ok := AsFieldError(err)
				if !ok || fe.Field != tc.field {
					t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			typed, err := c.Validate()
			if err != nil {
				t.Fatal(err)
			}
			h := typed.Services[0].Health
			if h.Via != tc.want || h.VIP != netip.MustParseAddr("203.0.113.10") || h.Mode != "ipip" {
				t.Errorf("got via %v, VIP %v, mode %q; want %v, 203.0.113.10, ipip", h.Via, h.VIP, h.Mode, tc.want)
			}
		})
	}
}

// TestProbePorts: Compile gives every backend probed through the VIP a
// block of probe source ports of its own, kept while it is probed so,
// and hands a freed block out again only after every other.
func TestProbePorts(t *testing.T) {
	y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: {type: tcp}", 1) +
		"  - {name: dns, vip: 203.0.113.11, protocol: udp, port: 53, mode: ipip, health: {type: udp, via: backend}, backends: [{ip: 10.0.0.2}]}\n"
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	typed, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	ids := NewIDs()
	ports := func(typed *Typed) map[string]uint16 {
		got := map[string]uint16{}
		for _, s := range Compile(1, typed, ids, nil, nil, nil).Services {
			for _, b := range s.Backends {
				got[s.Name+"/"+b.IP.String()] = b.ProbePort
			}
		}
		return got
	}
	first := ports(typed)
	want := map[string]uint16{"web/10.0.0.1": 16384, "web/192.0.2.21": 16388, "dns/10.0.0.2": 0}
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("probe ports %v, want %v", first, want)
	}
	if again := ports(typed); !reflect.DeepEqual(again, first) {
		t.Errorf("recompiled: probe ports %v, want them kept: %v", again, first)
	}
	// Without 10.0.0.1 and with a new backend: the new one gets a block
	// never used, not 10.0.0.1's.
	c2 := c.Clone()
	c2.Services[0].Backends = []Backend{{IP: "192.0.2.21"}, {IP: "192.0.2.22"}}
	typed2, err := c2.Validate()
	if err != nil {
		t.Fatal(err)
	}
	want2 := map[string]uint16{"web/192.0.2.21": 16388, "web/192.0.2.22": 16392, "dns/10.0.0.2": 0}
	if got := ports(typed2); !reflect.DeepEqual(got, want2) {
		t.Errorf("after the change: probe ports %v, want %v", got, want2)
	}
}

func TestValidateHealthType(t *testing.T) {
	for _, tc := range []struct {
		typ   string
		want  health.Type
		field string // the error's field; "" for none
	}{
		{"tcp", health.TypeTCP, ""},
		{"http", health.TypeHTTP, ""},
		{"udp", health.TypeUDP, ""},
		{"icmp", health.TypeICMP, ""},
		{"TCP", 0, "services[web].health.type"},
		{"sctp", 0, "services[web].health.type"},
		{"", 0, "services[web].health.type"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: {type: '"+tc.typ+"'}", 1)
			typed, err := ParseYAML([]byte(y))
			if tc.field != "" {
				fe, ok := AsFieldError(err)
				if !ok || fe.Field != tc.field {
					t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tv, err := typed.Validate()
			if err != nil {
				t.Fatal(err)
			}
			if got := tv.Services[0].Health.Type; got != tc.want || got.String() != tc.typ {
				t.Errorf("got type %v, want %v", got, tc.want)
			}
		})
	}
}

// TestHealthViaIPv6: an IPv6 VIP's tcp and http monitors probe through
// the VIP by default, as an IPv4 VIP's, and its backends get probe ports;
// an IPv4 VIP with an IPv6 backend too. Without an ip6 on the backends'
// port an IPv6 VIP's monitors fall back to via: backend, and an explicit
// via: vip is refused.
func TestHealthViaIPv6(t *testing.T) {
	y := strings.Replace(dualYAML, "    mode: ipip\n", "    mode: ipip\n    health: {type: tcp}\n", 1)
	y = strings.Replace(y, "    mode: gre\n", "    mode: gre\n    health: {type: http}\n", 1)
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	typed, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	if v := typed.Services[0].Health.Via; v != health.ViaVIP {
		t.Errorf("web6 (IPv6 VIP): via %v, want vip", v)
	}
	if v := typed.Services[1].Health.Via; v != health.ViaVIP {
		t.Errorf("web4 (IPv4 VIP, IPv6 backend): via %v, want vip", v)
	}
	spec := Compile(1, typed, NewIDs(), nil, nil, nil)
	seen := map[uint16]bool{}
	for _, s := range spec.Services {
		for _, b := range s.Backends {
			if b.ProbePort < 16384 || b.ProbePort%4 != 0 || seen[b.ProbePort] {
				t.Errorf("%s backend %v: probe port %d, want its own block", s.Name, b.IP, b.ProbePort)
			}
			seen[b.ProbePort] = true
		}
	}
	if len(seen) != 4 {
		t.Errorf("%d probe blocks, want 4 (every backend)", len(seen))
	}
	explicit := strings.Replace(dualYAML, "    mode: ipip\n", "    mode: ipip\n    health: {type: tcp, via: vip}\n", 1)
	if _, err := ParseYAML([]byte(explicit)); err != nil {
		t.Errorf("via: vip on an IPv6 VIP: %v", err)
	}

	// A second port without ip6 carries the IPv4 backend.
	no6 := strings.Replace(dualYAML, "      gateway6: 2001:db8:0:1::1\n", "      gateway6: 2001:db8:0:1::1\n    - {name: eth1, device: net_null1, ip: 198.51.100.10/24}\n", 1)
	no6 = strings.Replace(no6, "      - {ip: 192.0.2.23}\n", "      - {ip: 198.51.100.23}\n", 1)
	c, err = ParseYAML([]byte(strings.Replace(no6, "    mode: ipip\n", "    mode: ipip\n    health: {type: tcp}\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if typed, err = c.Validate(); err != nil {
		t.Fatal(err)
	}
	if v := typed.Services[0].Health.Via; v != health.ViaBackend {
		t.Errorf("web6, a backend's port without ip6: via %v, want backend", v)
	}
	bad := strings.Replace(no6, "    mode: ipip\n", "    mode: ipip\n    health: {type: tcp, via: vip}\n", 1)
	if _, err := ParseYAML([]byte(bad)); err == nil || !strings.Contains(err.Error(), "services[web6].health.via") || !strings.Contains(err.Error(), "eth1") {
		t.Errorf("via: vip, a backend's port without ip6: got %v, want an error on services[web6].health.via naming eth1", err)
	}
}
