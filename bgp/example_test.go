package bgp_test

import (
	"context"
	"net/netip"
	"os"
	"time"

	"github.com/dsrlb/dsrlb/bgp"
	"github.com/rs/zerolog"
)

// A standby appliance peering with two routers; the control plane calls Set
// with the VIPs that have enough healthy backends whenever that changes.
func Example() {
	log := zerolog.New(os.Stderr)
	s, err := bgp.New(bgp.Config{
		ASN:       65010,
		RouterID:  netip.MustParseAddr("192.0.2.10"),
		NextHop:   netip.MustParseAddr("192.0.2.10"),
		Role:      bgp.RoleStandby,
		StandbyBy: bgp.StandbyMED,
		Peers: []bgp.Peer{
			{Address: netip.MustParseAddr("192.0.2.1"), ASN: 65000},
			{Address: netip.MustParseAddr("192.0.2.2"), ASN: 65000, HoldTime: 9 * time.Second},
		},
	}, log)
	if err != nil {
		log.Fatal().Err(err).Msg("bgp")
	}
	_ = s.Set([]netip.Prefix{netip.MustParsePrefix("198.51.100.80/32")})
	for _, p := range s.Peers() {
		log.Info().Stringer("peer", p.Address).Str("state", p.State).Msg("peer")
	}

	// Shutdown: withdraw, let the routers converge, then stop.
	_ = s.WithdrawAll()
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Run(ctx) // returns at once: ctx is done; closes the speaker
}
