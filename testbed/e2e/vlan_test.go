package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// trunkVLAN is the 802.1Q VLAN of TestL2VLANTrunk.
const trunkVLAN = 10

// TestL2VLANTrunk runs the L2 DSR bed with the appliance's net_af_packet
// port on an 802.1Q trunk (nsbed.L2TrunkTopology): the client on VLAN 10,
// the appliance's address on the native VLAN, the backends on both. Real
// TCP and UDP through the VIP must work, and on the wire every VIP frame
// the appliance forwards must carry the client's tag (VID and PCP), the
// appliance's MAC as source and a backend's as destination, the client's
// and the VIP's addresses. Its own health probes through the VIP, from its
// address, must go untagged (native VLAN) to a backend's MAC.
func TestL2VLANTrunk(t *testing.T) {
	l := startL2(t, nsbed.L2Options{VLAN: trunkVLAN})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Every frame the appliance sends, seen at the switch port facing it.
	wire, err := l.Switch.StartCapture(l.SwitchPort("appl", "eth0"), "ether src "+l.ApplianceMAC, 128)
	if err != nil {
		t.Fatal(err)
	}
	before := mustStats(ctx, t, l.Appliance)
	var requests uint64

	t.Run("tcp connections through the VIP on the VLAN", func(t *testing.T) {
		const n = 60
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), n)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Requests)
		checkCurlMany(t, "curl", got, n, l.Backends)
	})

	t.Run("udp flows through the VIP on the VLAN", func(t *testing.T) {
		const flows, per = 15, 2
		got, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr(), flows, per)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Sent)
		checkUDPFlows(t, "udp", got, l.UDPAddr(), flows, per, l.Backends)
	})

	t.Run("appliance counters: nothing dropped", func(t *testing.T) {
		delta := mustStats(ctx, t, l.Appliance).Sub(before)
		t.Logf("appliance delta: rx %d tx %d to kernel %d dropped %d", delta.Totals.RxPackets, delta.Totals.TxPackets,
			delta.Totals.ToKernel, delta.Totals.Dropped)
		for _, p := range nsbed.CounterProblems(delta, requests) {
			t.Error(p)
		}
	})

	t.Run("on the wire: VIP frames keep the client's VLAN tag", func(t *testing.T) {
		if dropped, err := wire.Stop(); err != nil || dropped != 0 {
			t.Fatalf("capture: %v, %d packets dropped", err, dropped)
		}
		rows, err := wire.Fields(ctx, "ip.dst == "+nsbed.L2VIP.String(),
			"vlan.id", "vlan.priority", "eth.src", "eth.dst", "ip.src", "ip.dst")
		if err != nil {
			t.Fatal(err)
		}
		byMAC := l.Backends.ByMAC()
		perBackend := map[string]int{}
		bad, probes := 0, 0
		for _, r := range rows {
			// The appliance's own health probes through the VIP
			// (health.via: vip) come from its address, which is on
			// the native VLAN: untagged, and not forwarded traffic.
			if r[4] == nsbed.L2ApplianceIP.String() {
				if r[0] != "" || byMAC[r[3]] == "" {
					t.Errorf("probe frame vlan.id, vlan.priority, eth.src, eth.dst, ip.src, ip.dst = %q, want untagged to a backend's MAC", r)
				}
				probes++
				continue
			}
			want := []string{strconv.Itoa(trunkVLAN), strconv.Itoa(nsbed.L2VLANPCP), l.ApplianceMAC, r[3],
				nsbed.L2ClientIP.String(), nsbed.L2VIP.String()}
			be := byMAC[r[3]]
			if be == "" || strings.Join(r, " ") != strings.Join(want, " ") {
				if bad++; bad <= 5 {
					t.Errorf("frame vlan.id, vlan.priority, eth.src, eth.dst, ip.src, ip.dst = %q, want %q with a backend's eth.dst", r, want)
				}
				continue
			}
			perBackend[be]++
		}
		t.Logf("%d VIP frames from the appliance: %s; %d wrong; %d health probe frames beside them", len(rows)-probes,
			nsbed.Spread(perBackend), bad, probes)
		if uint64(len(rows)-probes) < requests {
			t.Errorf("%d VIP frames, want at least the %d requests", len(rows)-probes, requests)
		}
		if miss := l.Backends.Missing(perBackend); len(miss) != 0 {
			t.Errorf("no tagged VIP frame reached backends %v", miss)
		}
	})
}
