// Package appliance is the composition root of `dsrlb run`: it brings up
// the data plane (EAL, ports, their kernel taps, worker lcores) and the
// control plane around it (config store, neighbour mirror, VIP addresses,
// health monitors, BGP speaker, REST API), announces the VIPs that are
// fit to announce whenever a snapshot is published, and shuts down in
// order: withdraw every VIP, wait bgp.drain, stop forwarding.
//
// The data plane alone (StartDataplane) also serves `dsrlb replay` and
// `dsrlb bench`.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/api"
	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/bgp"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/control/health"
	"github.com/dsrlb/dsrlb/control/kernel"
	"github.com/dsrlb/dsrlb/pipeline"
)

// Deps are what New takes besides the config.
type Deps struct {
	// StatePath is the state file of the services as changed over the API
	// (control.StoreOptions.StatePath); "" keeps none.
	StatePath string
	// APIToken, if set, replaces the config's api.token.
	APIToken string
	Log      zerolog.Logger
}

// Appliance is a running dsrlb: New starts forwarding, Run serves the API
// and announces VIPs until its context ends, Close stops everything.
type Appliance struct {
	log      zerolog.Logger
	store    *control.Store
	neigh    *kernel.Neighbors
	taps     *kernel.Taps
	vips     *kernel.VIPs
	dp       *Dataplane
	monitors *health.Monitors
	// probeNS is the namespace of the health probes through the VIP;
	// probeOK tells whether their path (namespace, probe port) is up.
	probeNS *kernel.ProbeNS
	probeOK bool
	speaker *bgp.Speaker // nil without a bgp section
	board   *control.AnnounceBoard
	srv     *api.Server
	listen  string
	history *control.History // the console's rates
	// published signals every snapshot the store publishes (announce).
	published <-chan struct{}
	lastGen   uint64
	// events is the operator's event feed (GET /api/v1/events).
	events *control.Events
	// announced are the VIPs handed to the speaker last, for the bgp
	// events of announce.
	announced map[netip.Addr]bool
}

// TapName is the kernel interface of port's exception path.
func TapName(port string) string {
	n := "dsr-" + port
	if len(n) > 15 { // IFNAMSIZ less the NUL
		n = n[:15]
	}
	return n
}

// New validates cfg, starts the data plane on its ports with a kernel tap
// each, and builds the control plane around it. Packets flow from here on;
// VIPs are announced from Run. On error everything started is stopped.
func New(cfg *control.Config, deps Deps) (*Appliance, error) {
	log := deps.Log
	store, err := control.NewStore(cfg, control.StoreOptions{StatePath: deps.StatePath, Log: log})
	if err != nil {
		return nil, err
	}
	a := &Appliance{log: log, store: store, board: &control.AnnounceBoard{}, published: store.Published(),
		events: control.NewEvents(control.DefaultEventHistory), announced: map[netip.Addr]bool{}}
	started := store.StartedFrom()
	a.events.Publish(v1.EventConfig, "services", fmt.Sprintf("%d services at start: %s", len(store.Typed().Services), started.Reason),
		map[string]string{"change": started.Event, "source": "start"})
	if err := a.start(deps); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *Appliance) start(deps Deps) error {
	kopts := kernel.Options{Log: a.log}
	a.neigh = kernel.NewNeighbors(kernel.NeighborOptions{Options: kopts, OnChange: a.store.Recompile})
	a.taps = kernel.NewTaps(kopts)
	a.vips = kernel.NewVIPs(kopts)
	a.store.SetNeighbors(a.neigh)
	t := a.store.Typed()

	ports := make([]Port, len(t.Ports))
	for i, p := range t.Ports {
		ports[i] = Port{Name: p.Name, Device: p.Device, MTU: p.MTU, MAC: p.MAC, Tap: TapName(p.Name)}
	}
	var probe *ProbeOptions
	var err error
	if a.probeNS, err = kernel.NewProbeNS(kopts); err != nil {
		a.log.Error().Err(err).Str("event", "probe_path_unavailable").
			Msg("no probe namespace (it needs CAP_SYS_ADMIN): health checks through the VIP (health.via: vip, the default for tcp, http and udp) fail; set via: backend to probe the backends' own addresses")
	} else {
		probe = &ProbeOptions{Tap: ProbeTapName, Enter: a.probeNS.Enter}
	}
	dp, err := StartDataplane(DataplaneOptions{
		EALArgs: t.EALArgs, Workers: t.Workers, IdleSleep: t.IdleSleep, Ports: ports, Snap: a.store.Snapshots(),
		FlowCap: t.FlowCap, Timeouts: t.Timeouts, Seed: t.Seed, Log: a.log, Ready: a.store.SetPortMACs, Probe: probe,
	})
	if err != nil {
		return err
	}
	a.dp = dp
	if dp.HasProbe() {
		if err := a.probeNS.Configure(ProbeTapName, portAddrs(t), probeMTU(t)); err != nil {
			a.log.Error().Err(err).Str("event", "probe_path_unavailable").Msg("health checks through the VIP fail")
		} else {
			a.probeOK = true
		}
	}

	vipTaps, err := a.configureTaps(t)
	if err != nil {
		return err
	}
	a.store.Subscribe(func(t *control.Typed) {
		if err := vipTaps.set(a.vips, vipAddrs(t)); err != nil {
			a.log.Error().Err(err).Str("event", "vip_sync_failed").Msg("could not set VIPs on the tap")
		}
		a.neigh.Want(t.NextHops())
	})

	// Passive detection publishes its holds and releases (kind "passive").
	a.monitors = health.New(health.Options{Log: a.log, OnChange: a.store.Recompile, OnTransition: a.healthEvent, Events: a.events,
		ProbeSource: a.probeSource, ProbeDialer: a.probeDial})
	a.store.SetHealth(a.monitors)
	a.store.Subscribe(func(t *control.Typed) { a.monitors.Update(t.HealthTargets()) })

	if t.BGP != nil {
		if a.speaker, err = bgp.New(bgpConfig(t), a.log); err != nil {
			return err
		}
		a.speaker.OnPeerChange(a.peerEvent)
	}
	token := t.APIToken
	if deps.APIToken != "" {
		token = deps.APIToken
	}
	a.history = control.NewHistory(control.HistoryOptions{Source: func() (*pipeline.Snapshot, []pipeline.Counters) {
		return a.store.Snapshots().Load(), a.dp.Counters()
	}})
	opts := api.Options{Store: a.store, Token: token, Stats: a.dp, Health: a.monitors, Neighbors: a.neigh, Log: a.log,
		Events: a.events, History: a.history, Flows: a.dp, Captures: control.NewCaptures(a.dp, a.log)}
	if a.speaker != nil {
		opts.BGP = bgpPeers{a.speaker}
		opts.Announcer = a.board
	}
	a.srv = api.New(opts)
	a.listen = t.APIListen
	return nil
}

// configureTaps gives each port's tap the port's addresses (ip, ip6),
// gateways and MTU and mirrors its neighbours. It returns the taps that
// answer ARP and neighbour discovery for the VIPs.
func (a *Appliance) configureTaps(t *control.Typed) (vipTaps, error) {
	var vt vipTaps
	v6 := ip6Port(t)
	for i, p := range t.Ports {
		if iface := afPacketIface(p.Device); iface != "" {
			if err := a.taps.QuietSharedInterface(iface); err != nil {
				return vt, fmt.Errorf("port %s: %w", p.Name, err)
			}
		}
		tap, err := a.taps.Configure(TapName(p.Name), kernel.TapConfig{
			Addr: netip.PrefixFrom(p.Addr, p.Prefix.Bits()), Gateway: p.Gateway,
			Addr6: p.IP6, Gateway6: p.Gateway6, MTU: p.MTU})
		if err != nil {
			return vt, fmt.Errorf("port %s: kernel side: %w", p.Name, err)
		}
		a.neigh.AddTap(tap)
		if i == 0 {
			vt.v4 = tap
		}
		if i == v6 {
			vt.v6 = tap
		}
	}
	return vt, nil
}

// ip6Port returns the index of the port that owns the IPv6 VIPs: the first
// port with an ip6, else the first port.
func ip6Port(t *control.Typed) int {
	for i, p := range t.Ports {
		if p.IP6.IsValid() {
			return i
		}
	}
	return 0
}

// vipTaps are the taps whose kernel owns the VIPs: the IPv4 VIPs on the
// first port's, the IPv6 VIPs on ip6Port's.
type vipTaps struct{ v4, v6 kernel.Tap }

// set makes the VIP addresses on the taps exactly vips (kernel.VIPs.Set on
// each).
func (vt vipTaps) set(v *kernel.VIPs, vips []netip.Addr) error {
	if vt.v4.Name == vt.v6.Name {
		return v.Set(vt.v4, vips)
	}
	var v4, v6 []netip.Addr
	for _, ip := range vips {
		if ip.Is4() {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	return errors.Join(v.Set(vt.v4, v4), v.Set(vt.v6, v6))
}

// portAddrs returns the ports' addresses, IPv4 and IPv6: the sources of
// the probes through the VIP.
func portAddrs(t *control.Typed) []netip.Addr {
	var out []netip.Addr
	for _, p := range t.Ports {
		out = append(out, p.Addr)
		if p.IP6.IsValid() {
			out = append(out, p.IP6.Addr())
		}
	}
	return out
}

// probeMTU is the probe tap's MTU: the smallest port MTU less the largest
// envelope (GRE, 24 bytes), so that no probe needs fragmenting.
func probeMTU(t *control.Typed) int {
	m := 1 << 16
	for _, p := range t.Ports {
		m = min(m, p.MTU)
	}
	return m - pipeline.ModeGRE.Overhead()
}

// probeSource is health.Options.ProbeSource: the source address and port
// of probe n of target through the VIP, from the published snapshot (the
// data plane steers by it), the ports of the target's block in turn; none
// while the target's next hop is unresolved there (the data plane would
// drop the probe).
func (a *Appliance) probeSource(t health.Target, n uint32) (netip.AddrPort, error) {
	if !a.probeOK {
		return netip.AddrPort{}, health.ErrNoProbePath
	}
	snap := a.store.Snapshots().Load()
	src, ok := snap.ProbeSource(t.Service, t.Backend)
	if !ok {
		return netip.AddrPort{}, health.ErrNoProbePath
	}
	if !snap.ProbeResolved(t.Service, t.Backend) {
		return netip.AddrPort{}, health.ErrNextHopUnresolved
	}
	return netip.AddrPortFrom(src.Addr(), src.Port()+uint16(n%pipeline.ProbePortsPerTarget)), nil
}

// probeDial is health.Options.ProbeDialer: the probe's socket, opened in
// the probe namespace.
func (a *Appliance) probeDial(ctx context.Context, network string, local, addr netip.AddrPort) (net.Conn, error) {
	var conn net.Conn
	err := a.probeNS.Do(func() (err error) {
		conn, err = health.DialFrom(ctx, network, local, addr)
		return err
	})
	return conn, err
}

// vipAddrs returns the VIPs of t's services, each once, in config order.
func vipAddrs(t *control.Typed) []netip.Addr {
	var addrs []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, s := range t.Services {
		if !seen[s.VIP] {
			seen[s.VIP] = true
			addrs = append(addrs, s.VIP)
		}
	}
	return addrs
}

// Run watches the kernel's neighbours, feeds passive detection the data
// plane's unanswered flows, samples the console's rates (History), serves
// the REST API and announces the healthy
// VIPs, re-deciding on every snapshot the store publishes,
// until ctx ends; then it withdraws every VIP and waits bgp.drain
// (shutdown) and returns nil, leaving forwarding to Close. It returns
// early with the API's error if the API stops.
func (a *Appliance) Run(ctx context.Context) error {
	go func() {
		if err := a.neigh.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error().Err(err).Str("event", "neighbors_failed").Msg("neighbour watch stopped")
		}
	}()
	feed := &control.PassiveFeed{Snapshots: a.store.Snapshots(), Counters: a.dp.Counters, Monitors: a.monitors}
	go feed.Run(ctx)
	go a.history.Run(ctx)
	apiErr := make(chan error, 1)
	go func() { apiErr <- a.srv.Run(ctx, a.listen) }()
	a.log.Info().Str("event", "started").Str("api", a.listen).Msg("dsrlb running")

	a.announce()
	for {
		select {
		case <-ctx.Done():
			a.shutdown()
			return nil
		case err := <-apiErr:
			if err != nil {
				return fmt.Errorf("api: %w", err)
			}
		case <-a.published:
			a.announce()
		}
	}
}

// announce decides, from the latest snapshot, which VIPs to announce, shows
// it in the API and hands it to the speaker (which diffs).
func (a *Appliance) announce() {
	snap := a.store.Snapshots().Load()
	if snap.Generation == a.lastGen {
		return
	}
	a.lastGen = snap.Generation
	st := control.Announcements(snap, a.store.Typed())
	a.board.Set(st)
	if a.speaker == nil {
		return
	}
	if err := a.speaker.Set(announcedPrefixes(st)); err != nil {
		a.log.Error().Err(err).Str("event", "bgp_set_failed").Msg("could not update announcements")
		return
	}
	a.announceEvents(st)
}

// announceEvents publishes a bgp event for every VIP whose announcement
// changed with st, the decisions just handed to the speaker.
func (a *Appliance) announceEvents(st []control.VIPStatus) {
	decided := map[netip.Addr]bool{}
	for _, s := range st {
		decided[s.VIP] = true
		if s.Announce == a.announced[s.VIP] {
			continue
		}
		a.announced[s.VIP] = s.Announce
		what := "withdrawn"
		if s.Announce {
			what = "announced"
		}
		a.events.Publish(v1.EventBGP, "vip "+s.VIP.String(), what+": "+s.Reason,
			map[string]string{"state": what, "available_backends": strconv.Itoa(s.Available)})
	}
	for vip, on := range a.announced {
		if !decided[vip] {
			delete(a.announced, vip)
			if on {
				a.events.Publish(v1.EventBGP, "vip "+vip.String(), "withdrawn: no service has this VIP any more",
					map[string]string{"state": "withdrawn"})
			}
		}
	}
}

// healthEvent publishes a backend's health transition.
func (a *Appliance) healthEvent(t health.Target, typ health.Type, from, to health.State, result string) {
	a.events.Publish(v1.EventHealth, "service "+t.Service+"/backend "+t.Backend.String(),
		fmt.Sprintf("%s (%s check): %s", to, typ, result),
		map[string]string{"from": from.String(), "state": to.String(), "monitor": typ.String(), "result": result})
}

// peerEvent publishes a BGP session coming up or going down.
func (a *Appliance) peerEvent(c bgp.PeerChange) {
	reason := "session established"
	if c.State != "established" {
		reason = "session down: " + c.State
	}
	a.events.Publish(v1.EventBGP, "peer "+c.Address, reason,
		map[string]string{"state": c.State, "previous": c.Previous, "asn": strconv.FormatUint(uint64(c.ASN), 10)})
}

// Events returns the appliance's event feed, for components that publish
// to it.
func (a *Appliance) Events() *control.Events { return a.events }

// shutdown withdraws every VIP and waits the drain time so routers move
// traffic away; Close then stops forwarding.
func (a *Appliance) shutdown() {
	if a.speaker != nil {
		drain := a.store.Typed().BGPDrain
		a.log.Info().Str("event", "withdraw_all").Dur("drain", drain).Msg("withdrawing VIPs before stopping")
		if err := a.speaker.WithdrawAll(); err != nil {
			a.log.Error().Err(err).Str("event", "bgp_withdraw_failed").Msg("withdraw failed")
		}
		for vip, on := range a.announced {
			if on {
				a.events.Publish(v1.EventBGP, "vip "+vip.String(), "withdrawn: shutting down", map[string]string{"state": "withdrawn"})
			}
		}
		time.Sleep(drain)
	}
	a.log.Info().Str("event", "stopping").Msg("stopping forwarding")
}

// Close stops forwarding and releases the kernel side: the BGP speaker,
// the health monitors, the data plane, the VIP addresses, the taps and the
// neighbour mirror, in that order. Call it once, after Run returned.
func (a *Appliance) Close() {
	if a.speaker != nil {
		a.speaker.Close()
	}
	if a.monitors != nil {
		a.monitors.Close()
	}
	if a.dp != nil {
		a.dp.Stop()
	}
	if a.probeNS != nil {
		a.probeNS.Close()
	}
	if a.vips != nil {
		a.vips.Close()
	}
	if a.taps != nil {
		a.taps.Close()
	}
	if a.neigh != nil {
		a.neigh.Close()
	}
}
