package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// TestL2DSR drives real traffic through the appliance in the L2 DSR bed
// and checks that it is balanced, sticky per connection, and that no answer
// passes through the appliance.
func TestL2DSR(t *testing.T) {
	l := startL2(t, nsbed.L2Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	t.Run("kernel exception path and neighbours", func(t *testing.T) {
		// The appliance's kernel answers ARP and ICMP echo for its port
		// address and the VIP through the tap.
		for _, ip := range []string{nsbed.L2ApplianceIP.String(), nsbed.L2VIP.String()} {
			if out, err := l.Client.Run("ping", "-c1", "-W2", ip); err != nil {
				t.Errorf("ping %s from the client: %v\n%s", ip, err, out)
			}
		}
		// Next-hop MACs come from the kernel's neighbour table.
		st, err := l.Appliance.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		macOf := map[string]string{}
		for _, b := range l.Backends {
			macOf[b.IP.String()] = b.MAC
		}
		for _, svc := range st.Services {
			for _, b := range svc.Backends {
				if b.NextHopMAC != macOf[b.IP] {
					t.Errorf("%s/%s: next hop MAC %q, want the backend's %s", svc.Name, b.IP, b.NextHopMAC, macOf[b.IP])
				}
			}
		}
	})

	ev, err := l.StartEvidence()
	if err != nil {
		t.Fatal(err)
	}
	before := mustStats(ctx, t, l.Appliance)
	var requests, tcpConns uint64

	t.Run("separate connections spread over every backend", func(t *testing.T) {
		const n = 200
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), n)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Requests)
		tcpConns += uint64(got.Conns)
		checkCurlMany(t, "curl", got, n, l.Backends)
	})

	t.Run("keep-alive connection stays on one backend", func(t *testing.T) {
		const n = 50
		got, err := nsbed.KeepAlive(ctx, l.Client, l.URL("/"), n)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Requests)
		tcpConns += uint64(got.Conns)
		if got.ErrorCount != 0 {
			t.Errorf("got %d failed requests, want 0: %s", got.ErrorCount, strings.Join(got.Errors, "; "))
		}
		if got.Conns != 1 || len(got.ClientAddrs) != 1 {
			t.Errorf("got %d connections, %d client addresses, want 1 of each", got.Conns, len(got.ClientAddrs))
		}
		if len(got.PerBackend) != 1 || got.OK != n {
			t.Errorf("got answers %s (%d ok), want all %d from one backend", got.Spread(), got.OK, n)
		}
	})

	t.Run("udp flows spread and answered from the VIP", func(t *testing.T) {
		const flows, per = 30, 3
		got, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr(), flows, per)
		if err != nil {
			t.Fatal(err)
		}
		checkUDPFlows(t, "udp", got, l.UDPAddr(), flows, per, l.Backends)
	})

	t.Run("1 MB upload arrives intact", func(t *testing.T) {
		got, err := nsbed.Upload(ctx, l.Client, l.URL("/upload"), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		requests++
		tcpConns++
		if !got.OK() {
			t.Errorf("backend %s got %d bytes sha256 %s, sent %d bytes sha256 %s", got.Backend, got.Echoed, got.EchoedSHA256, got.Sent, got.SHA256)
		}
	})

	t.Run("wrk load without errors", func(t *testing.T) {
		const conns = 16
		got, err := nsbed.Wrk(ctx, l.Client, l.URL("/"), 3*time.Second, conns)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Requests)
		tcpConns += conns
		t.Logf("wrk: %d requests in %v (%.0f/s): %s", got.Requests, got.Duration.Round(time.Millisecond), got.RPS(), nsbed.Spread(got.PerBackend))
		if got.ErrorCount() != 0 {
			t.Errorf("wrk errors %v, want none", got.Errors)
		}
		if got.Requests < 1000 {
			t.Errorf("wrk made %d requests, want at least 1000", got.Requests)
		}
	})

	after := mustStats(ctx, t, l.Appliance)
	delta := after.Sub(before)

	t.Run("answers bypass the appliance", func(t *testing.T) {
		checkDSREvidence(ctx, t, "captures", ev, l.Backends)
	})

	t.Run("appliance counters see requests, never answers", func(t *testing.T) {
		t.Logf("appliance delta: rx %d tx %d to kernel %d from kernel %d dropped %d; services %v",
			delta.Totals.RxPackets, delta.Totals.TxPackets, delta.Totals.ToKernel, delta.Totals.FromKernel, delta.Totals.Dropped, delta.Services)
		for _, p := range nsbed.CounterProblems(delta, requests) {
			t.Error(p)
		}
		web := delta.Services["web"]
		var newFlows uint64
		for _, b := range web.Backends {
			newFlows += b.NewFlows
		}
		if newFlows < tcpConns {
			t.Errorf("web: %d new flows, want at least the %d TCP connections made", newFlows, tcpConns)
		}
		echo := delta.Services["echo"]
		var udpFlows uint64
		for _, b := range echo.Backends {
			udpFlows += b.NewFlows
		}
		if udpFlows != 30 {
			t.Errorf("echo: %d new flows, want 30", udpFlows)
		}
	})

	t.Run("peers keep the kernel's default offloads", func(t *testing.T) {
		// The appliance received the kernels' partial checksums and TSO
		// super-frames, completed the one and cut the other.
		checkDefaultOffloads(t, l.Net, "appl", l.Client, l.Backends)
		t.Logf("appliance delta: %d checksums completed, %d super-frames cut into %d segments",
			delta.Totals.L4ChecksumsCompleted, delta.Totals.GSOSegmented, delta.Totals.GSOSegments)
		if delta.Totals.L4ChecksumsCompleted == 0 || delta.Totals.GSOSegmented == 0 || delta.Totals.GSOSegments <= delta.Totals.GSOSegmented {
			t.Errorf("l4_checksums_completed +%d, gso_superframes_segmented +%d, gso_segments +%d: want all moved",
				delta.Totals.L4ChecksumsCompleted, delta.Totals.GSOSegmented, delta.Totals.GSOSegments)
		}
	})

	t.Run("dsrlb stops cleanly", func(t *testing.T) {
		if err := l.Appliance.Stop(); err != nil {
			t.Error(err)
		}
	})
}
