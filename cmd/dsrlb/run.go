package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/api"
	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/bgp"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/control/health"
	"github.com/dsrlb/dsrlb/control/kernel"
)

// cmdRun is the appliance: data plane with a kernel tap per port, health
// checks, neighbour resolution, the REST API and BGP, until SIGINT/SIGTERM.
// On a signal it withdraws every VIP, waits bgp.drain, then stops
// forwarding.
func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config file (YAML)")
	statePath := fs.String("state", "/var/lib/dsrlb/state.json", "state file: services as changed over the API")
	newLog := logFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := newLog()
	if *cfgPath == "" {
		fmt.Fprintln(os.Stderr, "dsrlb run: --config is required")
		return 2
	}
	cfg, err := control.LoadFile(*cfgPath)
	if err != nil {
		return fail(log, err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, cfg, *statePath, log); err != nil {
		return fail(log, err)
	}
	return 0
}

// tapName is the kernel interface of port name's exception path.
func tapName(port string) string {
	n := "dsr-" + port
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

func run(ctx context.Context, cfg *control.Config, statePath string, log zerolog.Logger) error {
	store, err := control.NewStore(cfg, control.StoreOptions{StatePath: statePath, Log: log})
	if err != nil {
		return err
	}
	kopts := kernel.Options{Log: log}
	neigh := kernel.NewNeighbors(kernel.NeighborOptions{Options: kopts, OnChange: store.Recompile})
	defer neigh.Close()
	taps := kernel.NewTaps(kopts)
	defer taps.Close()
	vips := kernel.NewVIPs(kopts)
	defer vips.Close()
	store.SetNeighbors(neigh)
	t := store.Typed()

	ports := make([]dpPort, len(t.Ports))
	for i, p := range t.Ports {
		ports[i] = dpPort{Name: p.Name, Device: p.Device, MTU: p.MTU, MAC: p.MAC, Tap: tapName(p.Name)}
	}
	dp, err := startDataplane(dpOptions{
		EALArgs: t.EALArgs, Workers: t.Workers, IdleSleep: t.IdleSleep, Ports: ports, Snap: store.Snapshots(),
		FlowCap: t.FlowCap, Timeouts: t.Timeouts, Seed: t.Seed, Log: log, Ready: store.SetPortMACs,
	})
	if err != nil {
		return err
	}
	defer dp.Stop()

	var vipTap kernel.Tap
	for i, p := range t.Ports {
		if iface := afPacketIface(p.Device); iface != "" {
			if err := taps.QuietSharedInterface(iface); err != nil {
				return fmt.Errorf("port %s: %w", p.Name, err)
			}
		}
		tap, err := taps.Configure(tapName(p.Name), netip.PrefixFrom(p.Addr, p.Prefix.Bits()), p.Gateway, p.MTU)
		if err != nil {
			return fmt.Errorf("port %s: kernel side: %w", p.Name, err)
		}
		neigh.AddTap(tap)
		if i == 0 {
			vipTap = tap
		}
	}
	store.Subscribe(func(t *control.Typed) {
		var addrs []netip.Addr
		seen := map[netip.Addr]bool{}
		for _, s := range t.Services {
			if !seen[s.VIP] {
				seen[s.VIP] = true
				addrs = append(addrs, s.VIP)
			}
		}
		// The first port's kernel side answers ARP for the VIPs.
		if err := vips.Set(vipTap, addrs); err != nil {
			log.Error().Err(err).Str("event", "vip_sync_failed").Msg("could not set VIPs on the tap")
		}
		neigh.Want(t.NextHops())
	})
	go func() {
		if err := neigh.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error().Err(err).Str("event", "neighbors_failed").Msg("neighbour watch stopped")
		}
	}()

	monitors := health.New(health.Options{Log: log, OnChange: store.Recompile})
	defer monitors.Close()
	store.SetHealth(monitors)
	store.Subscribe(func(t *control.Typed) { monitors.Update(t.HealthTargets()) })

	board := &control.AnnounceBoard{}
	var speaker *bgp.Speaker
	if t.BGP != nil {
		speaker, err = bgp.New(bgpConfig(t), log)
		if err != nil {
			return err
		}
		defer speaker.Close()
	}

	token := t.APIToken
	if env := os.Getenv("DSRLB_API_TOKEN"); env != "" {
		token = env
	}
	opts := api.Options{Store: store, Token: token, Stats: dp, Health: monitors, Neighbors: neigh, Log: log}
	if speaker != nil {
		opts.BGP = bgpPeers{speaker}
		opts.Announcer = board
	}
	srv := api.New(opts)
	apiErr := make(chan error, 1)
	go func() { apiErr <- srv.Run(ctx, t.APIListen) }()
	log.Info().Str("event", "started").Str("api", t.APIListen).Msg("dsrlb running")

	// Announce what is healthy, re-deciding whenever a snapshot changes.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastGen uint64
	for {
		select {
		case <-ctx.Done():
			return shutdown(store, speaker, dp, log)
		case err := <-apiErr:
			if err != nil {
				return fmt.Errorf("api: %w", err)
			}
		case <-tick.C:
			snap := store.Snapshots().Load()
			if snap.Generation == lastGen {
				continue
			}
			lastGen = snap.Generation
			st := control.Announcements(snap, store.Typed())
			board.Set(st)
			if speaker != nil {
				var pfx []netip.Prefix
				for _, s := range st {
					if s.Announce {
						pfx = append(pfx, netip.PrefixFrom(s.VIP, 32))
					}
				}
				if err := speaker.Set(pfx); err != nil {
					log.Error().Err(err).Str("event", "bgp_set_failed").Msg("could not update announcements")
				}
			}
		}
	}
}

// shutdown withdraws every VIP, waits the drain time so routers move
// traffic away, then lets the caller stop forwarding.
func shutdown(store *control.Store, speaker *bgp.Speaker, dp *dataplane, log zerolog.Logger) error {
	t := store.Typed()
	if speaker != nil {
		log.Info().Str("event", "withdraw_all").Dur("drain", t.BGPDrain).Msg("withdrawing VIPs before stopping")
		if err := speaker.WithdrawAll(); err != nil {
			log.Error().Err(err).Str("event", "bgp_withdraw_failed").Msg("withdraw failed")
		}
		time.Sleep(t.BGPDrain)
	}
	log.Info().Str("event", "stopping").Msg("stopping forwarding")
	return nil
}

// bgpConfig maps the validated config onto the speaker's own config:
// control.Validate checked every field it maps, so bgp.New accepts it.
func bgpConfig(t *control.Typed) bgp.Config {
	b := t.BGP
	c := bgp.Config{ASN: b.ASN, RouterID: b.RouterID, Role: bgp.RoleActive, StandbyBy: bgp.StandbyMED,
		ListenPort: int(b.ListenPort), NextHop: t.Ports[0].Addr}
	if b.Role == control.BGPStandby {
		c.Role = bgp.RoleStandby
	}
	if b.StandbyBy == control.StandbyPrepend {
		c.StandbyBy = bgp.StandbyPrepend
	}
	for _, p := range b.Peers {
		c.Peers = append(c.Peers, bgp.Peer{Address: p.Address, ASN: p.ASN, HoldTime: p.HoldTime,
			Password: p.Password, Port: int(p.Port)})
	}
	return c
}

// bgpPeers shows the speaker's sessions in the API.
type bgpPeers struct{ s *bgp.Speaker }

func (b bgpPeers) BGPPeers() []v1.BGPSession {
	var out []v1.BGPSession
	for _, p := range b.s.Peers() {
		out = append(out, v1.BGPSession{Address: p.Address.String(), ASN: p.ASN, State: p.State,
			UptimeSeconds: p.Uptime.Seconds(), PrefixesSent: p.PrefixesSent})
	}
	return out
}

// afPacketIface returns the kernel interface of a net_af_packet device
// string ("net_af_packet0,iface=veth0"), or "".
func afPacketIface(device string) string {
	if !strings.HasPrefix(device, "net_af_packet") {
		return ""
	}
	for _, kv := range strings.Split(device, ",")[1:] {
		if v, ok := strings.CutPrefix(kv, "iface="); ok {
			return v
		}
	}
	return ""
}
