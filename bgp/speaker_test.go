package bgp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeServer records the paths a Speaker adds and deletes.
type fakeServer struct {
	mu      sync.Mutex
	rib     map[string]*api.Path // prefix -> current path
	calls   []string             // "add 10.0.0.1/32", "del 10.0.0.1/32"
	failAdd map[string]bool      // prefixes whose AddPath fails
	peers   []*api.Peer
}

func newFakeServer() *fakeServer {
	return &fakeServer{rib: map[string]*api.Path{}, failAdd: map[string]bool{}}
}

func pathPrefix(p *api.Path) string {
	var n api.IPAddressPrefix
	if err := p.Nlri.UnmarshalTo(&n); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%s/%d", n.Prefix, n.PrefixLen)
}

func (f *fakeServer) AddPath(_ context.Context, r *api.AddPathRequest) (*api.AddPathResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := pathPrefix(r.Path)
	if f.failAdd[p] {
		return nil, errors.New("refused")
	}
	f.calls = append(f.calls, "add "+p)
	f.rib[p] = r.Path
	return &api.AddPathResponse{}, nil
}

func (f *fakeServer) DeletePath(_ context.Context, r *api.DeletePathRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := pathPrefix(r.Path)
	if _, ok := f.rib[p]; !ok {
		return fmt.Errorf("no path %s", p)
	}
	f.calls = append(f.calls, "del "+p)
	delete(f.rib, p)
	return nil
}

func (f *fakeServer) ListPeer(_ context.Context, _ *api.ListPeerRequest, fn func(*api.Peer)) error {
	for _, p := range f.peers {
		fn(p)
	}
	return nil
}

func (f *fakeServer) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func testConfig() Config {
	return Config{
		ASN:      65010,
		RouterID: netip.MustParseAddr("10.252.0.2"),
		Peers:    []Peer{{Address: netip.MustParseAddr("10.252.0.1"), ASN: 65000}},
	}
}

func newFakeSpeaker(t *testing.T, cfg Config) (*Speaker, *fakeServer, *bytes.Buffer) {
	t.Helper()
	cfg, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	f := newFakeServer()
	return newSpeaker(cfg, zerolog.New(&buf), f), f, &buf
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestSetDiff(t *testing.T) {
	s, f, _ := newFakeSpeaker(t, testConfig())
	steps := []struct {
		desc      string
		set       []string
		wantCalls []string
		wantAnn   []string
	}{
		{"first set announces all", []string{"10.253.0.11/32", "10.253.0.10/32"},
			[]string{"add 10.253.0.10/32", "add 10.253.0.11/32"}, []string{"10.253.0.10/32", "10.253.0.11/32"}},
		{"same set is a no-op", []string{"10.253.0.10/32", "10.253.0.11/32"},
			nil, []string{"10.253.0.10/32", "10.253.0.11/32"}},
		{"duplicates and host bits are folded", []string{"10.253.0.10/32", "10.253.0.10/32", "10.253.0.11/32"},
			nil, []string{"10.253.0.10/32", "10.253.0.11/32"}},
		{"add one withdraw one", []string{"10.253.0.11/32", "10.253.0.12/32"},
			[]string{"add 10.253.0.12/32", "del 10.253.0.10/32"}, []string{"10.253.0.11/32", "10.253.0.12/32"}},
		{"empty set withdraws all", nil,
			[]string{"del 10.253.0.11/32", "del 10.253.0.12/32"}, nil},
		{"masked prefix", []string{"10.253.1.7/24"},
			[]string{"add 10.253.1.0/24"}, []string{"10.253.1.0/24"}},
	}
	for _, st := range steps {
		t.Run(st.desc, func(t *testing.T) {
			if err := s.Set(prefixes(st.set...)); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if got := f.takeCalls(); !slices.Equal(got, st.wantCalls) {
				t.Errorf("calls: got %q, want %q", got, st.wantCalls)
			}
			var got []string
			for _, p := range s.Announced() {
				got = append(got, p.String())
			}
			if !slices.Equal(got, st.wantAnn) {
				t.Errorf("Announced: got %q, want %q", got, st.wantAnn)
			}
		})
	}
}

func TestSetInvalidChangesNothing(t *testing.T) {
	s, f, _ := newFakeSpeaker(t, testConfig())
	if err := s.Set(prefixes("10.253.0.10/32")); err != nil {
		t.Fatal(err)
	}
	f.takeCalls()
	for _, bad := range [][]netip.Prefix{
		{netip.MustParsePrefix("10.253.0.11/32"), {}},
		prefixes("10.253.0.11/32", "2001:db8::10/128"), // IPv6 over IPv4 sessions without next_hop6
		prefixes("::ffff:10.1.1.1/128"),
	} {
		if err := s.Set(bad); err == nil {
			t.Errorf("Set(%v): got nil error, want one", bad)
		}
	}
	if got := f.takeCalls(); len(got) != 0 {
		t.Errorf("calls after invalid Set: got %q, want none", got)
	}
	if got := s.Announced(); !slices.Equal(got, prefixes("10.253.0.10/32")) {
		t.Errorf("Announced: got %v, want [10.253.0.10/32]", got)
	}
}

func TestSetPartialFailure(t *testing.T) {
	s, f, _ := newFakeSpeaker(t, testConfig())
	f.failAdd["10.253.0.11/32"] = true
	err := s.Set(prefixes("10.253.0.10/32", "10.253.0.11/32"))
	if err == nil || !strings.Contains(err.Error(), "10.253.0.11/32") {
		t.Errorf("Set: got %v, want an error naming 10.253.0.11/32", err)
	}
	if got := s.Announced(); !slices.Equal(got, prefixes("10.253.0.10/32")) {
		t.Errorf("Announced: got %v, want [10.253.0.10/32]", got)
	}
	// The next Set retries the failed prefix.
	delete(f.failAdd, "10.253.0.11/32")
	f.takeCalls()
	if err := s.Set(prefixes("10.253.0.10/32", "10.253.0.11/32")); err != nil {
		t.Fatal(err)
	}
	if got, want := f.takeCalls(), []string{"add 10.253.0.11/32"}; !slices.Equal(got, want) {
		t.Errorf("retry calls: got %q, want %q", got, want)
	}
}

// attrs decodes the attributes of a path that the tests look at.
type attrs struct {
	nextHop string
	med     uint32
	hasMED  bool
	asPath  []uint32
}

func decodeAttrs(t *testing.T, p *api.Path) attrs {
	t.Helper()
	var a attrs
	for _, x := range p.Pattrs {
		m, err := anypb.UnmarshalNew(x, proto.UnmarshalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		switch v := m.(type) {
		case *api.NextHopAttribute:
			a.nextHop = v.NextHop
		case *api.MpReachNLRIAttribute:
			a.nextHop = v.NextHops[0]
		case *api.MultiExitDiscAttribute:
			a.med, a.hasMED = v.Med, true
		case *api.AsPathAttribute:
			for _, s := range v.Segments {
				a.asPath = append(a.asPath, s.Numbers...)
			}
		}
	}
	return a
}

func TestRoleAttributes(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		role      Role
		by        StandbyMethod
		nextHop   string
		wantNH    string
		wantMED   uint32
		wantAS    []uint32
		prefix    string
		nextHop6  string
		wantNH6   string
		ipv6Peers bool
	}{
		{desc: "active", role: RoleActive, wantNH: "0.0.0.0", wantMED: 0, prefix: "10.253.0.10/32"},
		{desc: "active with next hop", role: RoleActive, nextHop: "10.252.0.2", wantNH: "10.252.0.2", wantMED: 0, prefix: "10.253.0.10/32"},
		{desc: "standby by med", role: RoleStandby, wantNH: "0.0.0.0", wantMED: 100, prefix: "10.253.0.10/32"},
		{desc: "standby by prepend", role: RoleStandby, by: StandbyPrepend, wantNH: "0.0.0.0", wantMED: 0, wantAS: []uint32{65010, 65010, 65010}, prefix: "10.253.0.10/32"},
		{desc: "ipv6 standby", role: RoleStandby, nextHop6: "2001:db8::2", wantNH: "2001:db8::2", wantMED: 100, prefix: "2001:db8:1::10/128"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := testConfig()
			cfg.Role, cfg.StandbyBy = tc.role, tc.by
			if tc.nextHop != "" {
				cfg.NextHop = netip.MustParseAddr(tc.nextHop)
			}
			if tc.nextHop6 != "" {
				cfg.NextHop6 = netip.MustParseAddr(tc.nextHop6)
			}
			s, f, _ := newFakeSpeaker(t, cfg)
			if err := s.Set(prefixes(tc.prefix)); err != nil {
				t.Fatal(err)
			}
			p := f.rib[tc.prefix]
			if p == nil {
				t.Fatalf("no path for %s", tc.prefix)
			}
			a := decodeAttrs(t, p)
			if a.nextHop != tc.wantNH {
				t.Errorf("next hop: got %s, want %s", a.nextHop, tc.wantNH)
			}
			if !a.hasMED || a.med != tc.wantMED {
				t.Errorf("MED: got %d (present %v), want %d", a.med, a.hasMED, tc.wantMED)
			}
			if !slices.Equal(a.asPath, tc.wantAS) {
				t.Errorf("AS_PATH: got %v, want %v", a.asPath, tc.wantAS)
			}
		})
	}
}

func TestSetRoleReannounces(t *testing.T) {
	s, f, logs := newFakeSpeaker(t, testConfig())
	if err := s.Set(prefixes("10.253.0.10/32", "10.253.0.11/32")); err != nil {
		t.Fatal(err)
	}
	f.takeCalls()
	if err := s.SetRole(RoleStandby); err != nil {
		t.Fatal(err)
	}
	if got, want := f.takeCalls(), []string{"add 10.253.0.10/32", "add 10.253.0.11/32"}; !slices.Equal(got, want) {
		t.Errorf("calls: got %q, want %q", got, want)
	}
	if a := decodeAttrs(t, f.rib["10.253.0.11/32"]); a.med != StandbyMEDValue {
		t.Errorf("MED after SetRole(standby): got %d, want %d", a.med, StandbyMEDValue)
	}
	if err := s.SetRole(RoleStandby); err != nil {
		t.Fatal(err)
	}
	if got := f.takeCalls(); len(got) != 0 {
		t.Errorf("SetRole to the same role: got calls %q, want none", got)
	}
	if err := s.SetRole("primary"); err == nil {
		t.Error("SetRole(primary): got nil error, want one")
	}
	if !strings.Contains(logs.String(), `"event":"bgp_role"`) {
		t.Errorf("no bgp_role log in %s", logs)
	}
}

func TestWithdrawAllAndClose(t *testing.T) {
	s, f, logs := newFakeSpeaker(t, testConfig())
	if err := s.Set(prefixes("10.253.0.10/32", "10.253.0.11/32")); err != nil {
		t.Fatal(err)
	}
	if err := s.WithdrawAll(); err != nil {
		t.Fatal(err)
	}
	if len(f.rib) != 0 || len(s.Announced()) != 0 {
		t.Errorf("after WithdrawAll: rib %v, announced %v; want both empty", f.rib, s.Announced())
	}
	if err := s.Set(prefixes("10.253.0.12/32")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.rib) != 0 {
		t.Errorf("after Close: rib %v, want empty", f.rib)
	}
	if err := s.Set(prefixes("10.253.0.12/32")); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: got %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, ev := range []string{
		`"event":"bgp_announce","vip":"10.253.0.10/32"`,
		`"event":"bgp_withdraw","vip":"10.253.0.11/32"`,
		`"event":"bgp_withdraw","vip":"10.253.0.12/32"`,
	} {
		if !strings.Contains(logs.String(), ev) {
			t.Errorf("log lacks %s:\n%s", ev, logs)
		}
	}
}

func TestPeerStatus(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	up := now.Add(-90 * time.Second)
	p := &api.Peer{
		Conf:   &api.PeerConf{NeighborAddress: "10.252.0.1", PeerAsn: 65000},
		State:  &api.PeerState{SessionState: api.PeerState_ESTABLISHED},
		Timers: &api.Timers{State: &api.TimersState{Uptime: timestamppb.New(up), NegotiatedHoldTime: 9}},
		AfiSafis: []*api.AfiSafi{
			{State: &api.AfiSafiState{Advertised: 2, Received: 5}},
			{State: &api.AfiSafiState{Advertised: 1, Received: 0}},
		},
	}
	got := peerStatus(p, now)
	want := PeerStatus{
		Address: netip.MustParseAddr("10.252.0.1"), ASN: 65000, State: "established",
		Since: up, Uptime: 90 * time.Second, HoldTime: 9 * time.Second,
		PrefixesSent: 3, PrefixesReceived: 5,
	}
	if !got.Since.Equal(want.Since) {
		t.Errorf("Since: got %v, want %v", got.Since, want.Since)
	}
	got.Since = want.Since
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	p.State.SessionState = api.PeerState_ACTIVE
	if got := peerStatus(p, now); got.State != "active" || got.Uptime != 0 {
		t.Errorf("down peer: got state %q uptime %v, want active 0", got.State, got.Uptime)
	}
}

func TestPeerStateLog(t *testing.T) {
	s, _, logs := newFakeSpeaker(t, testConfig())
	s.log = s.log.Level(zerolog.InfoLevel)
	var changes []PeerChange
	s.OnPeerChange(func(c PeerChange) { changes = append(changes, c) })
	ev := func(st api.PeerState_SessionState) {
		s.onEvent(&api.WatchEventResponse{Event: &api.WatchEventResponse_Peer{Peer: &api.WatchEventResponse_PeerEvent{
			Type: api.WatchEventResponse_PeerEvent_STATE,
			Peer: &api.Peer{State: &api.PeerState{NeighborAddress: "10.252.0.1", PeerAsn: 65000, SessionState: st}},
		}}})
	}
	for _, st := range []api.PeerState_SessionState{api.PeerState_ACTIVE, api.PeerState_OPENSENT, api.PeerState_OPENCONFIRM,
		api.PeerState_ESTABLISHED, api.PeerState_ESTABLISHED, api.PeerState_IDLE} {
		ev(st)
	}
	wantChanges := []PeerChange{{"10.252.0.1", 65000, "established", "openconfirm"}, {"10.252.0.1", 65000, "idle", "established"}}
	if !slices.Equal(changes, wantChanges) {
		t.Errorf("OnPeerChange got %+v, want %+v (up, down)", changes, wantChanges)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d info+ lines, want 2 (up, down):\n%s", len(lines), logs)
	}
	for i, want := range []string{`"level":"info","event":"bgp_peer_state","peer":"10.252.0.1","peer_asn":65000,"state":"established","previous":"openconfirm"`,
		`"level":"warn","event":"bgp_peer_state","peer":"10.252.0.1","peer_asn":65000,"state":"idle","previous":"established"`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d: got %s, want it to contain %s", i, lines[i], want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := testConfig()
	c, err := ok.validate()
	if err != nil {
		t.Fatal(err)
	}
	p := c.Peers[0]
	if c.ListenPort != -1 || c.Role != RoleActive || c.StandbyBy != StandbyMED ||
		p.Port != 179 || p.HoldTime != DefaultHoldTime || p.ConnectRetry != DefaultConnectRetry {
		t.Errorf("defaults not filled: %+v", c)
	}
	nh := Config{ASN: 1, NextHop: netip.MustParseAddr("192.0.2.1")}
	if c, err := nh.validate(); err != nil || c.RouterID != nh.NextHop {
		t.Errorf("router id from next hop: got %v, %v", c.RouterID, err)
	}
	for _, tc := range []struct {
		desc  string
		mod   func(*Config)
		field string
	}{
		{"no asn", func(c *Config) { c.ASN = 0 }, "asn"},
		{"no router id", func(c *Config) { c.RouterID = netip.Addr{} }, "router_id"},
		{"ipv6 router id", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "router_id"},
		{"bad role", func(c *Config) { c.Role = "primary" }, "role"},
		{"bad standby", func(c *Config) { c.StandbyBy = "community" }, "standby_by"},
		{"bad port", func(c *Config) { c.ListenPort = 70000 }, "listen_port"},
		{"v6 next hop", func(c *Config) { c.NextHop = netip.MustParseAddr("2001:db8::1") }, "next_hop"},
		{"v4 next hop6", func(c *Config) { c.NextHop6 = netip.MustParseAddr("192.0.2.1") }, "next_hop6"},
		{"peer without address", func(c *Config) { c.Peers[0].Address = netip.Addr{} }, "peers[0].address"},
		{"peer without asn", func(c *Config) { c.Peers[0].ASN = 0 }, "peers[10.252.0.1].asn"},
		{"duplicate peer", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "duplicate"},
		{"short hold", func(c *Config) { c.Peers[0].HoldTime = 2 * time.Second }, "hold_time"},
		{"local address family", func(c *Config) { c.Peers[0].LocalAddress = netip.MustParseAddr("2001:db8::2") }, "local_address"},
		{"long password", func(c *Config) { c.Peers[0].Password = strings.Repeat("x", 81) }, "password"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := testConfig()
			c.Peers = slices.Clone(c.Peers)
			tc.mod(&c)
			_, err := c.validate()
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}
