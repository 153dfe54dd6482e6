// Package bgp is dsrlb's embedded BGP speaker: a GoBGP v3 server that keeps
// sessions with the upstream routers and announces the VIP prefixes the
// control plane asks for, and nothing else.
//
// The API is declarative (after metallb's Session.Set): the caller states
// the full set of prefixes that should be announced with Speaker.Set, and the
// speaker adds and withdraws paths to match. An appliance in the standby role
// announces the same prefixes made less preferred, by MED or by AS-path
// prepending, so routers send traffic to it only when the active appliance's
// routes are gone.
//
// The speaker is an originator only. It never re-advertises what its peers
// send (a policy on the global RIB accepts locally originated paths only),
// so an appliance between two routers can never become a transit path, and
// it installs nothing in the kernel.
//
// Sockets are opened in the network namespace of the thread that GoBGP's
// goroutines happen to run on, which is the namespace of the process: to run
// the speaker in another namespace, start the process there (ip netns exec).
package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/anypb"
)

// gobgpServer is the part of GoBGP's *server.BgpServer that a running
// speaker uses; tests substitute a fake.
type gobgpServer interface {
	AddPath(ctx context.Context, r *api.AddPathRequest) (*api.AddPathResponse, error)
	DeletePath(ctx context.Context, r *api.DeletePathRequest) error
	ListPeer(ctx context.Context, r *api.ListPeerRequest, fn func(*api.Peer)) error
}

// opTimeout bounds every call into GoBGP; they are in-memory operations
// serialized through GoBGP's management loop.
const opTimeout = 10 * time.Second

// localOnlyPolicy is the name of the policy that keeps the speaker an
// originator only.
const localOnlyPolicy = "dsrlb-local-only"

// Speaker is an embedded BGP speaker. Its methods are safe for concurrent
// use.
type Speaker struct {
	log  zerolog.Logger
	srv  gobgpServer
	stop func() // stops GoBGP; nil for fakes

	mu        sync.Mutex
	cfg       Config
	announced map[netip.Prefix]*api.Path
	closed    bool

	states   sync.Mutex
	lastSeen map[string]api.PeerState_SessionState
	onPeer   func(PeerChange) // OnPeerChange's; under states

	cancelWatch context.CancelFunc
	closeOnce   sync.Once
	closeErr    error
}

// New validates cfg, starts a GoBGP server with cfg's peers and returns the
// running speaker. Sessions come up in the background; paths set before a
// session is established are sent when it is. log receives the speaker's
// events and GoBGP's own warnings and errors (GoBGP's info messages at
// debug level).
//
// Run one Speaker per process: GoBGP's StartBgp writes package-level
// variables (best-path options), so two servers starting at once race.
// GoBGP's Serve loop cannot be stopped, so one idle goroutine per Speaker
// outlives Close.
func New(cfg Config, log zerolog.Logger) (*Speaker, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	log = log.With().Str("component", "bgp").Logger()
	bs := server.NewBgpServer(server.LoggerOption(&gobgpLogger{log: log}))
	// Serve runs GoBGP's management loop; every other call waits on it.
	// It has no way to stop, so one goroutine remains after Close.
	go bs.Serve()

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	fail := func(what string, err error) (*Speaker, error) {
		bs.Stop()
		return nil, fmt.Errorf("bgp: %s: %w", what, err)
	}

	global := &api.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: int32(cfg.ListenPort),
	}
	for _, a := range cfg.ListenAddresses {
		global.ListenAddresses = append(global.ListenAddresses, a.String())
	}
	if err := bs.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		return fail("start", err)
	}
	if err := installLocalOnlyPolicy(ctx, bs); err != nil {
		return fail("policy", err)
	}

	s := newSpeaker(cfg, log, bs)
	s.stop = bs.Stop
	watchCtx, cancelWatch := context.WithCancel(context.Background())
	s.cancelWatch = cancelWatch
	err = bs.WatchEvent(watchCtx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.onEvent)
	if err != nil {
		cancelWatch()
		return fail("watch peer events", err)
	}
	for _, p := range cfg.Peers {
		if err := bs.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			cancelWatch()
			return fail("add peer "+p.Address.String(), err)
		}
	}
	log.Info().Str("event", "bgp_start").Uint32("asn", cfg.ASN).Stringer("router_id", cfg.RouterID).
		Str("role", string(cfg.Role)).Int("peers", len(cfg.Peers)).Msg("bgp speaker started")
	return s, nil
}

// newSpeaker returns a speaker over srv with a validated cfg.
func newSpeaker(cfg Config, log zerolog.Logger, srv gobgpServer) *Speaker {
	return &Speaker{
		log:       log,
		srv:       srv,
		cfg:       cfg,
		announced: make(map[netip.Prefix]*api.Path),
		lastSeen:  make(map[string]api.PeerState_SessionState),
	}
}

// installLocalOnlyPolicy makes the global RIB accept and export locally
// originated paths only: routes learnt from peers are dropped on import, so
// the appliance never carries transit traffic or re-advertises one router's
// table to another.
func installLocalOnlyPolicy(ctx context.Context, bs *server.BgpServer) error {
	pol := &api.Policy{
		Name: localOnlyPolicy,
		Statements: []*api.Statement{{
			Name:       localOnlyPolicy + "-accept",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
		}},
	}
	if err := bs.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return err
	}
	for _, dir := range []api.PolicyDirection{api.PolicyDirection_IMPORT, api.PolicyDirection_EXPORT} {
		err := bs.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     dir,
			Policies:      []*api.Policy{{Name: localOnlyPolicy}},
			DefaultAction: api.RouteAction_REJECT,
		}})
		if err != nil {
			return err
		}
	}
	return nil
}

// apiPeer converts a validated Peer to GoBGP's form.
func apiPeer(p Peer) *api.Peer {
	hold := uint64(p.HoldTime / time.Second)
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(p.ConnectRetry / time.Second),
			HoldTime:          hold,
			KeepaliveInterval: max(hold/3, 1),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: familyV6, Enabled: true}},
		},
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.Unmap().String()
	}
	if p.Multihop > 1 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	return ap
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// Run blocks until ctx is done, then closes the speaker. A shutdown that
// must drain traffic calls WithdrawAll, waits, and only then cancels ctx.
func (s *Speaker) Run(ctx context.Context) error {
	<-ctx.Done()
	return s.Close()
}

// Close withdraws every prefix, ends all sessions with a Cease
// NOTIFICATION (RFC 4486 subcode 3, peer de-configured) and stops GoBGP.
// Later calls return the first result; Set after Close fails.
func (s *Speaker) Close() error {
	s.closeOnce.Do(func() {
		err := s.WithdrawAll()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if s.cancelWatch != nil {
			s.cancelWatch()
		}
		if s.stop != nil {
			s.stop()
		}
		s.log.Info().Str("event", "bgp_stop").Msg("bgp speaker stopped")
		s.closeErr = err
	})
	return s.closeErr
}

// ErrClosed is returned by calls on a closed Speaker.
var ErrClosed = errors.New("bgp: speaker closed")

// Set makes the announced prefixes exactly prefixes: it announces the ones
// not yet announced and withdraws the announced ones not listed. Prefixes
// are masked; duplicates are ignored. An invalid prefix fails the whole call
// before anything changes. When GoBGP refuses a single path the others are
// still applied and the joined errors are returned; Announced tells what
// is announced.
func (s *Speaker) Set(prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]bool, len(prefixes))
	for _, p := range prefixes {
		if err := s.checkPrefix(p); err != nil {
			return err
		}
		want[p.Masked()] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var errs []error
	for _, p := range sortedKeys(want) {
		if _, ok := s.announced[p]; !ok {
			errs = append(errs, s.announceLocked(p))
		}
	}
	for _, p := range sortedKeys(s.announced) {
		if !want[p] {
			errs = append(errs, s.withdrawLocked(p))
		}
	}
	return errors.Join(errs...)
}

// WithdrawAll withdraws every announced prefix; it is Set(nil).
func (s *Speaker) WithdrawAll() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var errs []error
	for _, p := range sortedKeys(s.announced) {
		errs = append(errs, s.withdrawLocked(p))
	}
	return errors.Join(errs...)
}

// SetRole switches between active and standby at run time and re-announces
// every prefix with the new role's attributes (an implicit replacement, no
// withdrawal in between).
func (s *Speaker) SetRole(r Role) error {
	if r != RoleActive && r != RoleStandby {
		return fmt.Errorf("bgp: role %q is not active or standby", r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.cfg.Role == r {
		return nil
	}
	old := s.cfg.Role
	s.cfg.Role = r
	s.log.Info().Str("event", "bgp_role").Str("role", string(r)).Str("previous", string(old)).
		Str("standby_by", string(s.cfg.StandbyBy)).Msg("bgp role changed")
	var errs []error
	for _, p := range sortedKeys(s.announced) {
		errs = append(errs, s.announceLocked(p))
	}
	return errors.Join(errs...)
}

// Role returns the current role.
func (s *Speaker) Role() Role {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Role
}

// Announced returns the announced prefixes in ascending order.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedKeys(s.announced)
}

// checkPrefix rejects prefixes the speaker cannot announce.
func (s *Speaker) checkPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("bgp: invalid prefix %v", p)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("bgp: prefix %s: IPv4-mapped IPv6 prefixes are not announced", p)
	}
	if p.Addr().Is6() && !s.cfg.NextHop6.IsValid() {
		for _, peer := range s.cfg.Peers {
			if peer.Address.Is6() {
				return nil
			}
		}
		return fmt.Errorf("bgp: prefix %s: IPv6 needs next_hop6 when all sessions are IPv4", p)
	}
	return nil
}

// announceLocked adds (or replaces) the path for p. s.mu is held.
func (s *Speaker) announceLocked(p netip.Prefix) error {
	path, err := s.pathFor(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
		s.log.Error().Err(err).Str("event", "bgp_announce").Stringer("vip", p).Msg("announce failed")
		return fmt.Errorf("bgp: announce %s: %w", p, err)
	}
	s.announced[p] = path
	ev := s.log.Info().Str("event", "bgp_announce").Stringer("vip", p).Str("role", string(s.cfg.Role))
	if s.cfg.Role == RoleStandby {
		ev = ev.Str("standby_by", string(s.cfg.StandbyBy))
	}
	ev.Msg("announce")
	return nil
}

// withdrawLocked deletes the path for p. s.mu is held.
func (s *Speaker) withdrawLocked(p netip.Prefix) error {
	path := s.announced[p]
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path}); err != nil {
		s.log.Error().Err(err).Str("event", "bgp_withdraw").Stringer("vip", p).Msg("withdraw failed")
		return fmt.Errorf("bgp: withdraw %s: %w", p, err)
	}
	delete(s.announced, p)
	s.log.Info().Str("event", "bgp_withdraw").Stringer("vip", p).Msg("withdraw")
	return nil
}

// pathFor builds the GoBGP path announcing p with the current role's
// attributes: ORIGIN IGP, NEXT_HOP (or MP_REACH_NLRI for IPv6), MED and,
// for a prepending standby, an AS_PATH of PrependCount local ASNs (GoBGP
// prepends one more towards eBGP peers).
func (s *Speaker) pathFor(p netip.Prefix) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	attrs := []*anypb.Any{}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	attrs = append(attrs, origin)
	family := familyV4
	if p.Addr().Is4() {
		nh := "0.0.0.0" // unspecified: GoBGP uses the session's local address
		if s.cfg.NextHop.IsValid() {
			nh = s.cfg.NextHop.String()
		}
		a, err := anypb.New(&api.NextHopAttribute{NextHop: nh})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	} else {
		family = familyV6
		nh := "::"
		if s.cfg.NextHop6.IsValid() {
			nh = s.cfg.NextHop6.String()
		}
		a, err := anypb.New(&api.MpReachNLRIAttribute{Family: familyV6, NextHops: []string{nh}, Nlris: []*anypb.Any{nlri}})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	med := ActiveMED
	if s.cfg.Role == RoleStandby && s.cfg.StandbyBy == StandbyMED {
		med = StandbyMEDValue
	}
	a, err := anypb.New(&api.MultiExitDiscAttribute{Med: med})
	if err != nil {
		return nil, err
	}
	attrs = append(attrs, a)
	if s.cfg.Role == RoleStandby && s.cfg.StandbyBy == StandbyPrepend {
		asns := make([]uint32, PrependCount)
		for i := range asns {
			asns[i] = s.cfg.ASN
		}
		a, err := anypb.New(&api.AsPathAttribute{Segments: []*api.AsSegment{{Type: api.AsSegment_AS_SEQUENCE, Numbers: asns}}})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	return &api.Path{Family: family, Nlri: nlri, Pattrs: attrs}, nil
}

// PeerStatus is the state of one BGP session.
type PeerStatus struct {
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// State is the RFC 4271 §8.2.2 FSM state in lower case: idle,
	// connect, active, opensent, openconfirm or established.
	State string `json:"state"`
	// Since is when the session was last established; zero if never.
	Since time.Time `json:"since,omitzero"`
	// Uptime is how long the session has been established; 0 when down.
	Uptime time.Duration `json:"uptime"`
	// HoldTime is the negotiated hold time while established.
	HoldTime time.Duration `json:"hold_time"`
	// PrefixesSent counts the prefixes advertised to the peer.
	PrefixesSent int `json:"prefixes_sent"`
	// PrefixesReceived counts the prefixes the peer sent (all dropped by
	// the local-only policy).
	PrefixesReceived int `json:"prefixes_received"`
}

// Peers returns the state of every configured session, ordered by address.
func (s *Speaker) Peers() []PeerStatus {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var out []PeerStatus
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		out = append(out, peerStatus(p, time.Now()))
	})
	if err != nil {
		s.log.Warn().Err(err).Msg("list peers")
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}

// peerStatus converts GoBGP's peer to a PeerStatus at time now.
func peerStatus(p *api.Peer, now time.Time) PeerStatus {
	var ps PeerStatus
	if c := p.GetConf(); c != nil {
		ps.Address, _ = netip.ParseAddr(c.NeighborAddress)
		ps.ASN = c.PeerAsn
	}
	st := p.GetState().GetSessionState()
	ps.State = stateName(st)
	if t := p.GetTimers().GetState(); t != nil {
		if up := t.GetUptime(); up != nil && up.GetSeconds() > 0 {
			ps.Since = up.AsTime()
		}
		if st == api.PeerState_ESTABLISHED {
			if !ps.Since.IsZero() {
				ps.Uptime = now.Sub(ps.Since).Truncate(time.Second)
			}
			ps.HoldTime = time.Duration(t.GetNegotiatedHoldTime()) * time.Second
		}
	}
	for _, af := range p.GetAfiSafis() {
		if a := af.GetState(); a != nil {
			ps.PrefixesSent += int(a.GetAdvertised())
			ps.PrefixesReceived += int(a.GetReceived())
		}
	}
	return ps
}

// stateName is the lower-case name of a session state.
func stateName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown(" + strconv.Itoa(int(st)) + ")"
}

// PeerChange is a BGP session coming up (State "established") or going
// down (Previous "established").
type PeerChange struct {
	Address string
	ASN     uint32
	// State and Previous are FSM states as in PeerStatus.State.
	State, Previous string
}

// OnPeerChange makes the speaker call fn (from GoBGP's event goroutine) on
// every session that comes up or goes down; the connection retries in
// between are not reported. It replaces an earlier fn; nil stops it.
func (s *Speaker) OnPeerChange(fn func(PeerChange)) {
	s.states.Lock()
	s.onPeer = fn
	s.states.Unlock()
}

// onEvent logs session state transitions: entering established at info,
// leaving it at warn, the rest (connection retries) at debug. The first two
// also go to OnPeerChange's function.
func (s *Speaker) onEvent(r *api.WatchEventResponse) {
	ev := r.GetPeer()
	if ev == nil || ev.GetType() != api.WatchEventResponse_PeerEvent_STATE {
		return
	}
	st := ev.GetPeer().GetState()
	addr := st.GetNeighborAddress()
	now := st.GetSessionState()
	s.states.Lock()
	prev, seen := s.lastSeen[addr]
	s.lastSeen[addr] = now
	onPeer := s.onPeer
	s.states.Unlock()
	if seen && prev == now {
		return
	}
	if onPeer != nil && (now == api.PeerState_ESTABLISHED || (seen && prev == api.PeerState_ESTABLISHED)) {
		onPeer(PeerChange{Address: addr, ASN: st.GetPeerAsn(), State: stateName(now), Previous: stateName(prev)})
	}
	var e *zerolog.Event
	switch {
	case now == api.PeerState_ESTABLISHED:
		e = s.log.Info()
	case prev == api.PeerState_ESTABLISHED:
		e = s.log.Warn()
	default:
		e = s.log.Debug()
	}
	e = e.Str("event", "bgp_peer_state").Str("peer", addr).Uint32("peer_asn", st.GetPeerAsn()).Str("state", stateName(now))
	if seen {
		e = e.Str("previous", stateName(prev))
	}
	if now == api.PeerState_ESTABLISHED {
		e = e.Str("peer_router_id", st.GetRouterId())
	}
	e.Msg("bgp session state")
}

// sortedKeys returns m's prefixes in ascending order.
func sortedKeys[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Compare(b) })
	return out
}
