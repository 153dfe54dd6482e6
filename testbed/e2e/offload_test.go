package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// checkDefaultOffloads checks (ethtool -k) that the client's and every
// backend's eth0 and the switch port facing appl's eth0 keep the kernel's
// default checksum and segmentation offloads: frames reach the appliance as
// the peers' kernels left them.
func checkDefaultOffloads(t *testing.T, n *nsbed.Net, appl string, client *nsbed.NS, bes nsbed.Backends) {
	t.Helper()
	got, err := n.PeerOffloads(appl, "eth0")
	checkOffloadsOn(t, "switch port facing "+appl+"/eth0", got, err)
	got, err = client.Offloads("eth0")
	checkOffloadsOn(t, "client eth0", got, err)
	checkBackendOffloadsOn(t, bes)
}

// checkBackendOffloadsOn checks checkOffloadsOn for the interface of every
// backend of bes facing the load balancer.
func checkBackendOffloadsOn(t *testing.T, bes nsbed.Backends) {
	t.Helper()
	for _, b := range bes {
		got, err := b.NS.Offloads(b.Iface)
		checkOffloadsOn(t, b.Name+" "+b.Iface, got, err)
	}
}

// checkOffloadsOn checks that got, the offloads of the interface what
// (nsbed.NS.Offloads, which failed with err), has checksum, TCP
// segmentation and generic segmentation offload on.
func checkOffloadsOn(t *testing.T, what string, got map[string]string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	for _, k := range []string{"tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload"} {
		if got[k] != "on" {
			t.Errorf("%s: %s is %q, want the kernel's default on (%v)", what, k, got[k], got)
		}
	}
}

// TestOffloadDefaults runs IPIP and GRE traffic in the L3 bed with the
// kernel's default offloads on every veth (TestL3DSR has them off on the
// switch port facing the appliance): TCP segments arrive with partial
// checksums and as TSO super-frames of up to 64 KB, which the appliance
// completes and cuts to fit the envelope. A UDP GSO super-frame cannot be
// cut (its datagram boundaries are lost): it is dropped as gso_superframe,
// and the appliance logs that once, naming the peer setting to change.
func TestOffloadDefaults(t *testing.T) {
	l := startL3(t, nsbed.L3Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	checkDefaultOffloads(t, l.Net, "appl", l.Client, l.Backends)
	if got, err := l.Router.Offloads("eth0"); err != nil || got["tcp-segmentation-offload"] != "on" {
		t.Errorf("router eth0 offloads %v (%v), want the defaults", got, err)
	}
	before := mustStats(ctx, t, l.Appliance)
	var requests uint64
	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/1 MB upload arrives intact", func(t *testing.T) {
			got, err := nsbed.Upload(ctx, l.Client, l.URL(mode, "/upload"), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			requests++
			if !got.OK() {
				t.Errorf("backend %s got %d bytes sha256 %s, sent %d bytes sha256 %s", got.Backend, got.Echoed, got.EchoedSHA256, got.Sent, got.SHA256)
			}
		})
		t.Run(mode+"/separate connections", func(t *testing.T) {
			const n = 60
			got, err := nsbed.CurlMany(ctx, l.Client, l.URL(mode, "/"), n)
			if err != nil {
				t.Fatal(err)
			}
			requests += uint64(got.Requests)
			checkCurlMany(t, mode, got, n, l.Backends)
		})
		t.Run(mode+"/udp flows", func(t *testing.T) {
			const flows, per = 30, 2
			got, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr(mode), flows, per)
			if err != nil {
				t.Fatal(err)
			}
			checkUDPFlows(t, mode, got, l.UDPAddr(mode), flows, per, l.Backends)
		})
	}
	t.Run("wrk load without errors", func(t *testing.T) {
		got, err := nsbed.Wrk(ctx, l.Client, l.URL("gre", "/"), 2*time.Second, 8)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Requests)
		t.Logf("wrk: %d requests in %v: %s", got.Requests, got.Duration.Round(time.Millisecond), nsbed.Spread(got.PerBackend))
		if got.ErrorCount() != 0 || got.Requests < 500 {
			t.Errorf("wrk: %d requests, errors %v; want at least 500 and none", got.Requests, got.Errors)
		}
	})
	delta := mustStats(ctx, t, l.Appliance).Sub(before)
	t.Run("checksums completed, super-frames cut, nothing dropped", func(t *testing.T) {
		t.Logf("appliance delta: rx %d tx %d; %d checksums completed, %d super-frames cut into %d segments; %d frag-needed sent; drops %v",
			delta.Totals.RxPackets, delta.Totals.TxPackets, delta.Totals.L4ChecksumsCompleted, delta.Totals.GSOSegmented,
			delta.Totals.GSOSegments, delta.Totals.FragNeededSent, delta.NonZeroDrops())
		if delta.Totals.L4ChecksumsCompleted == 0 || delta.Totals.GSOSegmented == 0 || delta.Totals.GSOSegments <= delta.Totals.GSOSegmented {
			t.Errorf("l4_checksums_completed +%d, gso_superframes_segmented +%d, gso_segments +%d: want all moved",
				delta.Totals.L4ChecksumsCompleted, delta.Totals.GSOSegmented, delta.Totals.GSOSegments)
		}
		for _, p := range nsbed.CounterProblems(delta, requests) {
			t.Error(p)
		}
	})

	t.Run("udp gso super-frames dropped, counted and logged once", func(t *testing.T) {
		const count = 4
		b := mustStats(ctx, t, l.Appliance)
		got, err := nsbed.UDPProbe{Count: count, Size: 4000, GSOSize: 1000, Wait: 500 * time.Millisecond}.Run(ctx, l.Client, l.UDPAddr("ipip"))
		if err != nil {
			t.Fatal(err)
		}
		if got.Sent != count || got.Echoed != 0 {
			t.Errorf("sent %d, echoed %d: want %d sent as super-frames and none answered (errors %v)", got.Sent, got.Echoed, count, got.Errors)
		}
		d := mustStats(ctx, t, l.Appliance).Sub(b)
		if d.Drops["gso_superframe"] != count {
			t.Errorf("gso_superframe +%d, want %d; drops %v", d.Drops["gso_superframe"], count, d.NonZeroDrops())
		}
		// The log line comes from a once-a-second check of the counters.
		deadline := time.Now().Add(5 * time.Second)
		n, err := l.Appliance.LogEvents("superframe_dropped")
		for err == nil && n == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			n, err = l.Appliance.LogEvents("superframe_dropped")
		}
		if err != nil || n != 1 {
			t.Fatalf("superframe_dropped logged %d times (%v), want once", n, err)
		}
		if _, err := (nsbed.UDPProbe{Count: count, Size: 4000, GSOSize: 1000, Wait: 200 * time.Millisecond}).Run(ctx, l.Client, l.UDPAddr("gre")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		log := l.Appliance.Proc.Tail(400)
		if n, _ := l.Appliance.LogEvents("superframe_dropped"); n != 1 {
			t.Errorf("superframe_dropped logged %d times after more drops, want once", n)
		}
		var line string
		for _, s := range strings.Split(log, "\n") {
			if strings.Contains(s, `"event":"superframe_dropped"`) {
				line = s
			}
		}
		for _, want := range []string{`"port":"eth0"`, "gso_superframe", "ethtool -K", "tso off gso off gro off"} {
			if !strings.Contains(line, want) {
				t.Errorf("log line %q lacks %q", line, want)
			}
		}
	})
}
