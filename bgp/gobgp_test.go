// Go 1.24+ listeners default to Multipath TCP where the kernel has it, and
// an MPTCP socket refuses TCP_MD5SIG (ENOPROTOOPT): GoBGP's listener could
// not verify the router's signed SYNs. Binaries that listen with passwords
// need the same directive (or GODEBUG=multipathtcp=0).
//
//go:debug multipathtcp=0

package bgp

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/anypb"
)

// These tests run the speaker against a second, plain GoBGP instance over
// loopback: the speaker dials 127.0.0.1 from 127.0.0.2, so no root and no
// namespaces are needed. They MUST NOT run in parallel: StartBgp writes
// GoBGP package globals (table.SelectionOptions, UseMultiplePaths), a data
// race between two servers starting at once in one process.

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// router is a GoBGP instance playing the upstream router (AS 65000).
type router struct {
	bs   *server.BgpServer
	port int
}

func startRouter(t *testing.T, password string) *router {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := &router{bs: server.NewBgpServer(server.LoggerOption(&gobgpLogger{log: zerolog.New(zerolog.NewTestWriter(t)).With().Str("who", "router").Logger().Level(zerolog.ErrorLevel)})), port: freePort(t)}
	go r.bs.Serve()
	t.Cleanup(r.bs.Stop)
	err := r.bs.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "10.0.0.1", ListenPort: int32(r.port), ListenAddresses: []string{"127.0.0.1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = r.bs.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.2", PeerAsn: 65010, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// A route of the router's own, which the speaker must not take in.
	nlri, _ := anypb.New(&api.IPAddressPrefix{Prefix: "192.0.2.0", PrefixLen: 24})
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0})
	nh, _ := anypb.New(&api.NextHopAttribute{NextHop: "127.0.0.1"})
	_, err = r.bs.AddPath(ctx, &api.AddPathRequest{Path: &api.Path{Family: familyV4, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// paths returns the router's paths for prefix.
func ribPaths(t *testing.T, bs *server.BgpServer, prefix string) []*api.Path {
	t.Helper()
	var out []*api.Path
	err := bs.ListPath(context.Background(), &api.ListPathRequest{
		TableType: api.TableType_GLOBAL, Family: familyV4,
		Prefixes: []*api.TableLookupPrefix{{Prefix: prefix}},
	}, func(d *api.Destination) { out = append(out, d.Paths...) })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func startSpeaker(t *testing.T, r *router, by StandbyMethod, password string) *Speaker {
	t.Helper()
	s, err := New(Config{
		ASN:       65010,
		RouterID:  netip.MustParseAddr("10.0.0.2"),
		StandbyBy: by,
		NextHop:   netip.MustParseAddr("127.0.0.2"),
		Peers: []Peer{{
			Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port,
			LocalAddress: netip.MustParseAddr("127.0.0.2"), Password: password,
		}},
	}, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitFor(t, "session established", 15*time.Second, func() bool {
		ps := s.Peers()
		return len(ps) == 1 && ps[0].State == "established"
	})
	return s
}

func TestGoBGPPeerMED(t *testing.T) {
	r := startRouter(t, "")
	s := startSpeaker(t, r, StandbyMED, "")
	vip := "10.253.0.10/32"

	if err := s.Set(prefixes(vip)); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, "route at router", 5*time.Second, func() bool { return len(ribPaths(t, r.bs, vip)) == 1 })
	t.Logf("announce reached the router in %v", d)
	a := decodeAttrs(t, ribPaths(t, r.bs, vip)[0])
	if a.nextHop != "127.0.0.2" || a.med != ActiveMED || !slices.Equal(a.asPath, []uint32{65010}) {
		t.Errorf("active path: got next hop %s MED %d AS_PATH %v, want 127.0.0.2 0 [65010]", a.nextHop, a.med, a.asPath)
	}

	if err := s.SetRole(RoleStandby); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "MED 100 at router", 5*time.Second, func() bool {
		p := ribPaths(t, r.bs, vip)
		return len(p) == 1 && decodeAttrs(t, p[0]).med == StandbyMEDValue
	})

	// The speaker is an originator only: the router's route is received
	// but neither accepted nor re-advertised.
	ps := s.Peers()
	if ps[0].PrefixesReceived != 1 || ps[0].PrefixesSent != 1 || ps[0].ASN != 65000 || ps[0].Since.IsZero() {
		t.Errorf("peer status: got %+v, want 1 received, 1 sent, asn 65000, since set", ps[0])
	}
	if p := ribPaths(t, s.srv.(*server.BgpServer), "192.0.2.0/24"); len(p) != 0 {
		t.Errorf("speaker's RIB holds the router's route: %v", p)
	}

	if err := s.Set(nil); err != nil {
		t.Fatal(err)
	}
	d = waitFor(t, "withdrawal at router", 5*time.Second, func() bool { return len(ribPaths(t, r.bs, vip)) == 0 })
	t.Logf("withdrawal reached the router in %v", d)
}

func TestGoBGPPeerPrependMD5(t *testing.T) {
	r := startRouter(t, "s3cret")
	s := startSpeaker(t, r, StandbyPrepend, "s3cret")
	if err := s.SetRole(RoleStandby); err != nil {
		t.Fatal(err)
	}
	vip := "10.253.0.20/32"
	if err := s.Set(prefixes(vip)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route at router", 5*time.Second, func() bool { return len(ribPaths(t, r.bs, vip)) == 1 })
	a := decodeAttrs(t, ribPaths(t, r.bs, vip)[0])
	if want := []uint32{65010, 65010, 65010, 65010}; !slices.Equal(a.asPath, want) || a.med != ActiveMED {
		t.Errorf("standby path: got AS_PATH %v MED %d, want %v 0", a.asPath, a.med, want)
	}
	// Close withdraws and tears the session down.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route gone after Close", 5*time.Second, func() bool { return len(ribPaths(t, r.bs, vip)) == 0 })
	if ps := s.Peers(); ps != nil {
		t.Errorf("Peers after Close: got %v, want nil", ps)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{}, zerolog.Nop()); err == nil {
		t.Error("New with an empty config: got nil error")
	}
	// A port already taken: StartBgp fails and New cleans up.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = New(Config{
		ASN: 65010, RouterID: netip.MustParseAddr("10.0.0.2"),
		ListenPort:      l.Addr().(*net.TCPAddr).Port,
		ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
	}, zerolog.Nop())
	if err == nil {
		t.Error("New on a taken port: got nil error")
	}
}
