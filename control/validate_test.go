package control

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/pipeline"
)

const baseYAML = `
dataplane:
  ports:
    - {name: eth0, device: net_null0, ip: 192.0.2.10/24, gateway: 192.0.2.1}
neighbors:
  - {ip: 192.0.2.1, mac: "02:00:00:00:00:01"}
services:
  - name: web
    vip: 203.0.113.10
    protocol: tcp
    port: 80
    mode: ipip
    backends:
      - {ip: 10.0.0.1, weight: 1}
      - {ip: 192.0.2.21}
`

func TestParseValid(t *testing.T) {
	c, err := ParseYAML([]byte(baseYAML))
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := c.Validate()
	if got := tc.Services[0].Backends[1].Weight; got != 1 {
		t.Errorf("default weight %d, want 1", got)
	}
	if tc.APIListen != "127.0.0.1:8080" || tc.FlowCap != pipeline.DefaultFlowCapacity || tc.MaglevSz != 65537 {
		t.Errorf("defaults: listen %q flows %d maglev %d", tc.APIListen, tc.FlowCap, tc.MaglevSz)
	}
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		desc, from, to, field string
	}{
		{"bad vip", "vip: 203.0.113.10", "vip: 203.0.113", "services[web].vip"},
		{"ipv6 vip", "vip: 203.0.113.10", "vip: '2001:db8::1'", "services[web].vip"},
		{"bad protocol", "protocol: tcp", "protocol: sctp", "services[web].protocol"},
		{"port out of range", "port: 80", "port: 70000", "services[web].port"},
		{"bad mode", "mode: ipip", "mode: nat", "services[web].mode"},
		{"weight out of range", "{ip: 10.0.0.1, weight: 1}", "{ip: 10.0.0.1, weight: 5000}", "services[web].backends[10.0.0.1].weight"},
		{"negative weight", "{ip: 10.0.0.1, weight: 1}", "{ip: 10.0.0.1, weight: -1}", "services[web].backends[10.0.0.1].weight"},
		{"duplicate backend", "{ip: 192.0.2.21}", "{ip: 10.0.0.1}", "services[web].backends[10.0.0.1].ip"},
		{"bad backend", "{ip: 192.0.2.21}", "{ip: 192.0.2.300}", "services[web].backends[1].ip"},
		{"l2 off-subnet", "mode: ipip", "mode: l2", "services[web].backends[10.0.0.1].ip"},
		{"vip is port address", "vip: 203.0.113.10", "vip: 192.0.2.10", "services[web].vip"},
		{"bad port prefix", "ip: 192.0.2.10/24", "ip: 192.0.2.10", "dataplane.ports[eth0].ip"},
		{"gateway off-subnet", "gateway: 192.0.2.1", "gateway: 198.51.100.1", "dataplane.ports[eth0].gateway"},
		{"bad neighbour mac", `mac: "02:00:00:00:00:01"`, `mac: "zz"`, "neighbors[0].mac"},
		{"bad name", "name: web", "name: 'we b'", "services[we b].name"},
		{"bad state", "{ip: 192.0.2.21}", "{ip: 192.0.2.21, state: sleeping}", "services[web].backends[192.0.2.21].state"},
		{"idle sleep too long", "dataplane:\n", "dataplane:\n  idle_sleep: 1s\n", "dataplane.idle_sleep"},
		{"negative icmp error rate", "dataplane:\n", "dataplane:\n  icmp_errors_per_second: -1\n", "dataplane.icmp_errors_per_second"},
		{"icmp error rate too high", "dataplane:\n", "dataplane:\n  icmp_errors_per_second: 1000000000\n", "dataplane.icmp_errors_per_second"},
		{"too many ports", "  ports:\n", "  ports:\n" + manyPorts(64), "dataplane.ports"},
		{"negative new-flow rate", "services:\n", "flows: {new_flows_per_second: -1}\nservices:\n", "flows.new_flows_per_second"},
		{"service new-flow limit too high", "mode: ipip\n", "mode: ipip\n    limits: {new_flows_per_second: 1000000000}\n",
			"services[web].limits.new_flows_per_second"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			y := strings.Replace(baseYAML, tc.from, tc.to, 1)
			_, err := ParseYAML([]byte(y))
			fe, ok := AsFieldError(err)
			if !ok {
				t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
			}
			if fe.Field != tc.field {
				t.Errorf("field %q (%v), want %q", fe.Field, err, tc.field)
			}
		})
	}
}

func TestValidateClash(t *testing.T) {
	y := baseYAML + `  - {name: web2, vip: 203.0.113.10, protocol: tcp, port: 80, mode: gre, backends: []}` + "\n"
	_, err := ParseYAML([]byte(y))
	if fe, ok := AsFieldError(err); !ok || fe.Field != "services[web2].vip" {
		t.Fatalf("got %v, want a clash on services[web2].vip", err)
	}
	y = strings.Replace(y, "name: web2", "name: web", 1)
	y = strings.Replace(y, "port: 80, mode: gre", "port: 81, mode: gre", 1)
	if _, err := ParseYAML([]byte(y)); err == nil || !strings.Contains(err.Error(), "duplicate service name") {
		t.Fatalf("got %v, want duplicate service name", err)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	if _, err := ParseYAML([]byte(baseYAML + "bogus: 1\n")); err == nil {
		t.Fatal("unknown top-level key accepted")
	}
}

type fakeNeighbors map[netip.Addr]pipeline.MAC

func (f fakeNeighbors) Lookup(ip netip.Addr) ([6]byte, bool) { m, ok := f[ip]; return m, ok }

type fakeHealth map[netip.Addr]bool

func (f fakeHealth) Healthy(_ string, ip netip.Addr) bool { h, ok := f[ip]; return !ok || h }

func TestCompileStates(t *testing.T) {
	y := strings.Replace(baseYAML, "{ip: 192.0.2.21}", "{ip: 192.0.2.21}\n      - {ip: 192.0.2.22, state: drain}\n      - {ip: 192.0.2.23, weight: 0}\n      - {ip: 192.0.2.24, state: disabled}\n      - {ip: 192.0.2.25}", 1)
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := c.Validate()
	mac := pipeline.MAC{2, 0, 0, 0, 0, 0x99}
	nb := fakeNeighbors{}
	for _, ip := range []string{"192.0.2.21", "192.0.2.22", "192.0.2.23", "192.0.2.24"} {
		nb[netip.MustParseAddr(ip)] = mac
	}
	hv := fakeHealth{netip.MustParseAddr("10.0.0.1"): false}
	spec := Compile(1, tc, NewIDs(), []pipeline.MAC{{2, 0, 0, 0, 0, 0x10}}, nb, hv)
	snap, err := pipeline.NewSnapshot(spec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]pipeline.BackendState{
		"10.0.0.1":   pipeline.BackendDown,   // unhealthy
		"192.0.2.21": pipeline.BackendActive, // resolved
		"192.0.2.22": pipeline.BackendDrain,  // state drain
		"192.0.2.23": pipeline.BackendDrain,  // weight 0
		"192.0.2.24": pipeline.BackendDown,   // disabled
		"192.0.2.25": pipeline.BackendDown,   // MAC unknown
	}
	for _, b := range snap.Services[0].Backends {
		if w := want[b.Addr.String()]; b.State != w {
			t.Errorf("backend %v: state %v, want %v", b.Addr, b.State, w)
		}
	}
	for _, e := range snap.Services[0].Table {
		if b := snap.Services[0].Backends[e]; b.Addr.String() != "192.0.2.21" {
			t.Fatalf("Maglev slot owned by %v: only 192.0.2.21 takes new flows", b.Addr)
		}
	}
}

func TestStorePersistsAndRestarts(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	c, err := ParseYAML([]byte(baseYAML))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(c, StoreOptions{StatePath: state})
	if err != nil {
		t.Fatal(err)
	}
	gen := s.Generation()
	if err := s.Update(func(c *Config) error {
		c.Services[0].Backends = append(c.Services[0].Backends, Backend{IP: "10.0.0.9"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if s.Generation() != gen+1 {
		t.Errorf("generation %d, want %d", s.Generation(), gen+1)
	}
	before, _ := os.ReadFile(state)
	if err := s.Update(func(c *Config) error { c.Services[0].Port = 99999; return nil }); err == nil {
		t.Fatal("invalid change accepted")
	}
	after, _ := os.ReadFile(state)
	if string(before) != string(after) || s.Config().Services[0].Port != 80 {
		t.Error("a rejected change altered the state")
	}
	// A restart from the same YAML comes back with the persisted services.
	s2, err := NewStore(c, StoreOptions{StatePath: state})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s2.Config().Services[0].Backends); n != 3 {
		t.Errorf("restarted with %d backends, want 3", n)
	}
	if _, rej := s.Changes(); rej != 1 {
		t.Errorf("rejected %d, want 1", rej)
	}
}

func TestAnnouncements(t *testing.T) {
	y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    min_healthy: 2", 1)
	c, _ := ParseYAML([]byte(y))
	tc, _ := c.Validate()
	nb := fakeNeighbors{netip.MustParseAddr("192.0.2.21"): {2}}
	for _, tt := range []struct {
		desc string
		hv   fakeHealth
		want bool
	}{
		{"both up", fakeHealth{}, true},
		{"one down", fakeHealth{netip.MustParseAddr("10.0.0.1"): false}, false},
	} {
		snap, err := pipeline.NewSnapshot(Compile(1, tc, NewIDs(), []pipeline.MAC{{2}}, nb, tt.hv))
		if err != nil {
			t.Fatal(err)
		}
		st := Announcements(snap, tc)
		if len(st) != 1 || st[0].Announce != tt.want || st[0].Reason == "" {
			t.Errorf("%s: %+v, want announce=%v with a reason", tt.desc, st, tt.want)
		}
	}
}

// everyErrorYAML has errors of every kind: out of range, unknown key,
// wrong type, bad duration, l2 backend off the subnet, duplicate name,
// list expected, duplicate key, BGP.
const everyErrorYAML = `dataplane:
  workers: 99
  ports:
    - {name: eth0, device: net_null0, ip: 192.0.2.10/24, gateway: 192.0.2.1}
services:
  - name: web
    vip: 203.0.113.10
    protocol: sctp
    port: 80
    mode: ipip
    backends:
      - {ip: 10.0.0.1, weight: 5000}
      - {ip: 192.0.2.21, wieght: 2}
  - name: dns
    vip: 203.0.113.11
    protocol: udp
    port: 53x
    mode: l2
    backends:
      - ip: 10.0.0.2
    health: {type: tcp, port: 53, interval: 1x}
  - name: web
    vip: 203.0.113.12
    protocol: tcp
    port: 80
    mode: gre
    backends: {ip: 10.0.0.3}
flows: {capacity: 10}
bgp:
  asn: 0
  router_id: 192.0.2.10
  router_id: 192.0.2.11
  peers:
    - {address: 192.0.2.1, asn: 65000, hold_time: 1}
`

// TestParseEveryError: one answer lists every error of a config, each
// with its field and line, in the order of the file.
func TestParseEveryError(t *testing.T) {
	_, err := ParseYAML([]byte(everyErrorYAML))
	var got []string
	for _, e := range AllFieldErrors(err) {
		got = append(got, e.In("f.yaml"))
	}
	want := []string{
		`f.yaml:2: dataplane.workers: must be 1..64, got 99`,
		`f.yaml:8: services[web].protocol: must be tcp or udp, got "sctp"`,
		`f.yaml:12: services[web].backends[10.0.0.1].weight: must be 0..1000, got 5000`,
		`f.yaml:13: services[web].backends[192.0.2.21].wieght: field wieght not found; want one of ip, mac, state, weight`,
		`f.yaml:17: services[dns].port: want an integer, got "53x"`,
		`f.yaml:20: services[dns].backends[10.0.0.2].ip: l2 mode needs the backend on a port's subnet`,
		`f.yaml:21: services[dns].health.interval: invalid duration "1x"`,
		`f.yaml:22: services[web].name: duplicate service name`,
		`f.yaml:27: services[web].backends: want a list, got a mapping`,
		`f.yaml:28: flows.capacity: must be 1024..67108864, got 10`,
		`f.yaml:30: bgp.asn: required`,
		`f.yaml:32: bgp.router_id: duplicate key (first at line 31)`,
		`f.yaml:34: bgp.peers[192.0.2.1].hold_time: must be 0 or 3..65535`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The first one still answers AsFieldError, for callers that show one.
	if fe, ok := AsFieldError(err); !ok || fe.Field != "dataplane.workers" {
		t.Errorf("AsFieldError = %v, %v", fe, ok)
	}
}

// TestValidateEveryError: a config from JSON (the REST API) gets every
// error too, in the order of the config, without lines.
func TestValidateEveryError(t *testing.T) {
	c, err := ParseYAML([]byte(baseYAML))
	if err != nil {
		t.Fatal(err)
	}
	w := 5000
	c.Services[0].Backends[0].Weight = &w
	c.Services[0].Backends[1].State = "sleeping"
	c.Services = append(c.Services, Service{Name: "web", VIP: "203.0.113.11", Protocol: "udp", Port: 53, Mode: "nat"})
	_, err = c.Validate()
	var got []string
	for _, e := range AllFieldErrors(err) {
		if e.Line != 0 {
			t.Errorf("%v: line %d, want none", e, e.Line)
		}
		got = append(got, e.Error())
	}
	want := []string{
		`services[web].backends[10.0.0.1].weight: must be 0..1000, got 5000`,
		`services[web].backends[192.0.2.21].state: must be enabled, drain or disabled, got "sleeping"`,
		`services[web].mode: must be l2, ipip or gre, got "nat"`,
		`services[web].name: duplicate service name`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

const bgpYAML = `bgp:
  asn: 65010
  router_id: 192.0.2.10
  role: standby
  standby_by: prepend
  drain: 2s
  listen_port: 1179
  peers:
    - {address: 192.0.2.1, asn: 65000, hold_time: 9}
    - {address: 192.0.2.2, asn: 65001, port: 1790, password: s3cret}
`

// TestValidateBGP: the BGP section is typed once, in Validate: addresses,
// durations, enums and defaults are what the speaker is given.
func TestValidateBGP(t *testing.T) {
	c, err := ParseYAML([]byte(baseYAML + bgpYAML))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	want := TypedBGP{ASN: 65010, RouterID: netip.MustParseAddr("192.0.2.10"), Role: BGPStandby, StandbyBy: StandbyPrepend,
		ListenPort: 1179, Peers: []TypedPeer{
			{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65000, HoldTime: 9 * time.Second},
			{Address: netip.MustParseAddr("192.0.2.2"), ASN: 65001, Port: 1790, Password: "s3cret"},
		}}
	if got := *tc.BGP; !reflect.DeepEqual(got, want) {
		t.Errorf("typed BGP\n got %+v\nwant %+v", got, want)
	}
	if tc.BGPDrain != 2*time.Second {
		t.Errorf("drain %v, want 2s", tc.BGPDrain)
	}

	// Omitted fields take their defaults: active, by MED, no listening.
	y := strings.NewReplacer("  role: standby\n", "", "  standby_by: prepend\n", "", "  listen_port: 1179\n", "").Replace(bgpYAML)
	c, err = ParseYAML([]byte(baseYAML + y))
	if err != nil {
		t.Fatal(err)
	}
	tc, _ = c.Validate()
	if b := tc.BGP; b.Role != BGPActive || b.StandbyBy != StandbyMED || b.ListenPort != 0 {
		t.Errorf("defaults: role %v, standby_by %v, listen_port %d; want active, med, 0", b.Role, b.StandbyBy, b.ListenPort)
	}
}

// TestValidateBGPErrors: everything the speaker would refuse at start is
// refused by Validate, naming the field (peers by address) and its line.
func TestValidateBGPErrors(t *testing.T) {
	for _, tc := range []struct {
		desc, from, to string
		want           string // f.yaml:LINE: field: message
	}{
		{"duplicate peer", "address: 192.0.2.2,", "address: 192.0.2.1,",
			"f.yaml:25: bgp.peers[192.0.2.1].address: duplicate peer"},
		{"unspecified router id", "router_id: 192.0.2.10", "router_id: 0.0.0.0",
			"f.yaml:18: bgp.router_id: 0.0.0.0 cannot be a router ID"},
		{"multicast peer", "address: 192.0.2.2,", "address: 224.0.0.5,",
			"f.yaml:25: bgp.peers[224.0.0.5].address: 224.0.0.5 cannot be a peer"},
		{"bad peer address", "address: 192.0.2.2,", "address: 192.0.2,",
			`f.yaml:25: bgp.peers[1].address: not an IPv4 address: "192.0.2"`},
		{"peer port", "port: 1790", "port: 70000",
			"f.yaml:25: bgp.peers[192.0.2.2].port: must be 1..65535, or 0 for 179, got 70000"},
		{"long password", "password: s3cret", "password: " + strings.Repeat("k", MaxBGPPassword+1),
			"f.yaml:25: bgp.peers[192.0.2.2].password: longer than the 80 bytes of a TCP MD5 key"},
		{"listen port", "listen_port: 1179", "listen_port: 65536",
			"f.yaml:22: bgp.listen_port: must be 1..65535, or 0 not to listen, got 65536"},
		{"role", "role: standby", "role: backup",
			`f.yaml:19: bgp.role: must be active or standby, got "backup"`},
		{"standby_by", "standby_by: prepend", "standby_by: community",
			`f.yaml:20: bgp.standby_by: must be med or prepend, got "community"`},
		{"unspecified port address", "ip: 192.0.2.10/24", "ip: 0.0.0.0/24",
			"f.yaml:4: dataplane.ports[eth0].ip: 0.0.0.0 cannot be a port address"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			y := strings.Replace(baseYAML+bgpYAML, tc.from, tc.to, 1)
			_, err := ParseYAML([]byte(y))
			var got []string
			for _, e := range AllFieldErrors(err) {
				got = append(got, e.In("f.yaml"))
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("errors %q, want [%s]", got, tc.want)
			}
		})
	}
}

// TestValidateDuplicatePeerJSON: a config built in code or from JSON (no
// lines) with two equal peers is refused by Validate too, with the field.
func TestValidateDuplicatePeerJSON(t *testing.T) {
	c, err := ParseYAML([]byte(baseYAML))
	if err != nil {
		t.Fatal(err)
	}
	c.BGP = &BGP{ASN: 65010, RouterID: "192.0.2.10", Peers: []BGPPeer{
		{Address: "192.0.2.1", ASN: 65000}, {Address: "192.0.2.1", ASN: 65000}}}
	_, err = c.Validate()
	es := AllFieldErrors(err)
	if len(es) != 1 || es[0].Error() != "bgp.peers[192.0.2.1].address: duplicate peer" || es[0].Line != 0 {
		t.Errorf("errors %v, want only bgp.peers[192.0.2.1].address: duplicate peer", err)
	}
}

// TestEnumNames: every value of the config enums has a name that parses
// back to it, and the zero value is the default an empty field gets.
func TestEnumNames(t *testing.T) {
	for _, names := range [][]string{adminStates[:], bgpRoles[:], standbyMethods[:]} {
		for i, n := range names {
			if v, ok := parseEnum[uint8](names, n); !ok || int(v) != i {
				t.Errorf("parseEnum(%q) = %d, %v; want %d", n, v, ok, i)
			}
		}
		if v, ok := parseEnum[uint8](names, ""); !ok || v != 0 {
			t.Errorf("parseEnum(\"\") = %d, %v; want the default %q", v, ok, names[0])
		}
		if _, ok := parseEnum[uint8](names, "bogus"); ok {
			t.Errorf("parseEnum(bogus) accepted in %v", names)
		}
	}
	for _, tc := range []struct{ got, want string }{
		{AdminEnabled.String(), "enabled"}, {AdminDrain.String(), "drain"}, {AdminDisabled.String(), "disabled"},
		{BGPActive.String(), "active"}, {BGPStandby.String(), "standby"},
		{StandbyMED.String(), "med"}, {StandbyPrepend.String(), "prepend"}, {AdminState(9).String(), "unknown"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}

// TestValidateNoCascade: a port that is wrong is reported once, not again
// for every backend it would have reached.
func TestValidateNoCascade(t *testing.T) {
	y := strings.Replace(baseYAML, "ip: 192.0.2.10/24", "ip: 192.0.2.10", 1)
	y = strings.Replace(y, "mode: ipip", "mode: l2", 1)
	_, err := ParseYAML([]byte(y))
	es := AllFieldErrors(err)
	if len(es) != 1 || es[0].Field != "dataplane.ports[eth0].ip" || es[0].Line != 4 {
		t.Errorf("errors %v, want only dataplane.ports[eth0].ip on line 4", err)
	}
}

// TestKernelFramesPorts: ports whose device reads a kernel interface are
// compiled with partial checksums on, others off; a store made with
// KernelFrames (replay) marks every port.
func TestKernelFramesPorts(t *testing.T) {
	for dev, want := range map[string]bool{
		"net_af_packet0,iface=veth0":               true,
		"eth_af_packet1,iface=eth1,framesz=65424":  true,
		"net_pcap0,iface=eth0":                     true,
		"net_pcap1,rx_iface=eth0,tx_iface=eth0":    true,
		"net_pcap2,rx_iface_in=eth0":               true,
		"net_pcap0,rx_pcap=in.pcap,tx_pcap=o.pcap": false,
		"net_null0":           false,
		"net_tap0,iface=dsr0": false,
		"0000:01:00.0":        false,
	} {
		if got := KernelFramesDevice(dev); got != want {
			t.Errorf("KernelFramesDevice(%q) = %v, want %v", dev, got, want)
		}
	}
	y := strings.Replace(baseYAML, "device: net_null0", `device: "net_af_packet0,iface=veth0"`, 1)
	for _, tc := range []struct {
		yaml    string
		replay  bool
		partial bool
	}{
		{baseYAML, false, false},
		{y, false, true},
		{baseYAML, true, true},
	} {
		c, err := ParseYAML([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		st, err := NewStore(c, StoreOptions{KernelFrames: tc.replay})
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Snapshots().Load().Ports[0].PartialChecksums; got != tc.partial {
			t.Errorf("device %q, replay %v: port partial checksums %v, want %v",
				c.Dataplane.Ports[0].Device, tc.replay, got, tc.partial)
		}
	}
}

// manyPorts is n port lines for baseYAML's port list (one more makes 65).
func manyPorts(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "    - {name: p%d, device: net_null%d, ip: 10.%d.%d.1/24}\n", i, i+1, i/256, i%256)
	}
	return b.String()
}

// TestFloodConfig: flows.new_flows_per_second reaches every worker as it
// is; a service's limits.new_flows_per_second is the appliance's, split
// over the workers (rounded up).
func TestFloodConfig(t *testing.T) {
	y := strings.Replace(baseYAML, "dataplane:\n", "dataplane:\n  workers: 2\n", 1)
	y = strings.Replace(y, "services:\n", "flows: {capacity: 1024, new_flows_per_second: 5000}\nservices:\n", 1)
	y = strings.Replace(y, "mode: ipip\n", "mode: ipip\n    limits: {new_flows_per_second: 1001}\n", 1)
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	spec := Compile(1, tc, NewIDs(), nil, nil, nil)
	if spec.NewFlowsPerSecond != 5000 {
		t.Errorf("worker new-flow rate %d, want 5000", spec.NewFlowsPerSecond)
	}
	if got := spec.Services[0].NewFlowsPerSecond; got != 501 {
		t.Errorf("service new-flow limit per worker %d, want 501 (1001 over 2 workers)", got)
	}
}

// TestICMPErrorRateConfig: dataplane.icmp_errors_per_second reaches every
// worker as it is (not split): 1000 when omitted, 0 (no limit) when set
// to 0, which survives a clone and a JSON round trip (the persisted state).
func TestICMPErrorRateConfig(t *testing.T) {
	for _, tc := range []struct {
		desc, line string
		want       uint32
	}{
		{"omitted", "", pipeline.DefaultICMPErrorsPerSecond},
		{"no limit", "  icmp_errors_per_second: 0\n", 0},
		{"per worker", "  icmp_errors_per_second: 250\n", 250},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			y := strings.Replace(baseYAML, "dataplane:\n", "dataplane:\n  workers: 2\n"+tc.line, 1)
			c, err := ParseYAML([]byte(y))
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(c.Clone())
			if err != nil {
				t.Fatal(err)
			}
			var again Config
			if err := json.Unmarshal(b, &again); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*Config{c, &again} {
				tc2, err := c.Validate()
				if err != nil {
					t.Fatal(err)
				}
				if got := Compile(1, tc2, NewIDs(), nil, nil, nil).ICMPErrorsPerSecond; got != tc.want {
					t.Errorf("ICMP errors per second per worker %d, want %d (json %s)", got, tc.want, b)
				}
			}
		})
	}
	c, err := ParseYAML([]byte(strings.Replace(baseYAML, "dataplane:\n", "dataplane:\n  icmp_errors_per_second: 5\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	n := c.Clone()
	*n.Dataplane.ICMPErrorsPerSecond = 7
	if *c.Dataplane.ICMPErrorsPerSecond != 5 {
		t.Errorf("a clone's icmp_errors_per_second changed the original's to %d", *c.Dataplane.ICMPErrorsPerSecond)
	}
}
