package control

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		{"too many ports", "  ports:\n", "  ports:\n" + manyPorts(64), "dataplane.ports"},
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

func (f fakeNeighbors) Lookup(ip netip.Addr) (pipeline.MAC, bool) { m, ok := f[ip]; return m, ok }

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
