package control

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/dsrlb/dsrlb/control/health"
	"github.com/dsrlb/dsrlb/pipeline"
)

const passiveYAML = `
    health: {type: tcp, passive: {}}`

func TestPassiveDefaults(t *testing.T) {
	c, err := ParseYAML([]byte(strings.Replace(baseYAML, "mode: ipip", "mode: ipip"+passiveYAML, 1)))
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := c.Validate()
	got := tc.Services[0].Health.Passive
	want := health.Passive{SynRetries: 2, Unanswered: 5, Window: DefaultPassiveWindow, Hold: DefaultPassiveHold}
	if got != want {
		t.Errorf("defaults: got %+v, want %+v", got, want)
	}
}

func TestPassiveErrors(t *testing.T) {
	for _, tc := range []struct{ desc, passive, want string }{
		{"syn_retries", "{syn_retries: 7}", "services[web].health.passive.syn_retries: must be 1..6 (SYNs a client sends again before its flow counts as unanswered), got 7"},
		{"unanswered", "{unanswered: -1}", "services[web].health.passive.unanswered: must be 1..100000 (unanswered flows within the window that hold a backend down), got -1"},
		{"window", "{window: 500ms}", "services[web].health.passive.window: must be 1s..1h, got 500ms"},
		{"hold", "{hold: 48h}", "services[web].health.passive.hold: must be 1s..24h, got 48h0m0s"},
		{"udp", "{}", "services[web].health.passive: needs a tcp service: it counts SYNs that get no answer"},
		{"unknown key", "{threshold: 3}", "services[web].health.passive.threshold: field threshold not found; want one of hold, syn_retries, unanswered, window"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: {type: tcp, port: 80, passive: "+tc.passive+"}", 1)
			if tc.desc == "udp" {
				y = strings.Replace(y, "protocol: tcp", "protocol: udp", 1)
			}
			_, err := ParseYAML([]byte(y))
			var got []string
			for _, e := range AllFieldErrors(err) {
				got = append(got, e.Error())
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("got %q, want [%q]", got, tc.want)
			}
		})
	}
}

// fakePassive is a HealthView that holds some backends down by passive
// detection and fails others.
type fakePassive struct{ held, failed map[netip.Addr]bool }

func (f fakePassive) Healthy(_ string, ip netip.Addr) bool { return !f.held[ip] && !f.failed[ip] }
func (f fakePassive) Held(_ string, ip netip.Addr) bool    { return f.held[ip] }

// TestCompilePassive: a held backend keeps its established flows
// (BackendHeld), a failed one does not; syn_retries reaches the snapshot.
func TestCompilePassive(t *testing.T) {
	y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: {type: tcp, passive: {syn_retries: 3}}", 1)
	y = strings.Replace(y, "{ip: 192.0.2.21}", "{ip: 192.0.2.21}\n      - {ip: 192.0.2.22}", 1)
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := c.Validate()
	mac := pipeline.MAC{2, 0, 0, 0, 0, 0x99}
	nb := fakeNeighbors{netip.MustParseAddr("192.0.2.21"): mac, netip.MustParseAddr("192.0.2.22"): mac}
	hv := fakePassive{held: map[netip.Addr]bool{netip.MustParseAddr("192.0.2.21"): true},
		failed: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.1"): true}}
	spec := Compile(1, tc, NewIDs(), []pipeline.MAC{{2, 0, 0, 0, 0, 0x10}}, nb, hv)
	if got := spec.Services[0].SynRetries; got != 3 {
		t.Errorf("SynRetries: got %d, want 3", got)
	}
	want := map[string]pipeline.BackendState{"10.0.0.1": pipeline.BackendDown, "192.0.2.21": pipeline.BackendHeld, "192.0.2.22": pipeline.BackendActive}
	for _, b := range spec.Services[0].Backends {
		if w := want[b.IP.String()]; b.State != w {
			t.Errorf("backend %v: state %v, want %v", b.IP, b.State, w)
		}
	}
	snap, err := pipeline.NewSnapshot(spec)
	if err != nil {
		t.Fatal(err)
	}
	st := Announcements(snap, tc)
	if len(st) != 1 || st[0].Available != 1 {
		t.Errorf("announcements: got %+v, want 1 backend available (the held one is not)", st)
	}
}

func TestUnansweredCounts(t *testing.T) {
	c, err := ParseYAML([]byte(baseYAML))
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := c.Validate()
	ids := NewIDs()
	snap, err := pipeline.NewSnapshot(Compile(1, tc, ids, []pipeline.MAC{{2, 0, 0, 0, 0, 0x10}}, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := ids.LookupBackend(BackendKey{"web", netip.MustParseAddr("192.0.2.21")})
	workers := make([]pipeline.Counters, 2)
	for i := range workers {
		workers[i].Backends = make([]pipeline.BackendCounters, id+1)
		workers[i].Backends[id].UnansweredFlows = uint64(3 + i)
	}
	got := UnansweredCounts(snap, workers)
	want := map[health.Target]uint64{
		{Service: "web", Backend: netip.MustParseAddr("192.0.2.21")}: 7,
		{Service: "web", Backend: netip.MustParseAddr("10.0.0.1")}:   0,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%v: got %d, want %d", k, got[k], v)
		}
	}
}
