package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// startL3 brings up the L3 DSR bed for t with o (Bins and Bed filled in)
// and tears it down when t ends.
func startL3(t *testing.T, o nsbed.L3Options) *nsbed.L3 {
	t.Helper()
	needBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	o.Bins, o.Bed = bins, bedOptions(t)
	l, err := nsbed.StartL3(ctx, o)
	if err != nil {
		t.Fatalf("start L3 testbed: %v", err)
	}
	closeAtEnd(t, l.Appliance, l.Ready, l.Close)
	return l
}

// TestL3DSR drives real traffic through IPIP and GRE services to backends
// on a subnet behind a router, backends that decapsulate with the eBPF
// program `dsrctl backend setup` attaches. It checks the envelopes on the
// wire, that answers go from the backends through the router straight to
// the client, path MTU discovery through the appliance's fragmentation-
// needed messages, and the rule for IP options (TestL3Fragments has the one
// for fragments).
//
// It is the one bed whose switch port facing the appliance has its
// offloads off (PeerOffloadsOff), as a real NIC's link partner would: the
// appliance then receives complete, MTU-sized frames, and path MTU
// discovery is checked on the client's full-sized packets. Every other bed
// keeps the kernel's default offloads (TestOffloadDefaults).
func TestL3DSR(t *testing.T) {
	l := startL3(t, nsbed.L3Options{PeerOffloadsOff: true})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	t.Run("routed next hop and kernel exception path", func(t *testing.T) {
		checkRoutedKernelSide(ctx, t, l, nsbed.L3ApplianceIP, nsbed.L3VIP("ipip"), nsbed.L3VIP("gre"))
	})

	ev, err := l.StartEvidence()
	if err != nil {
		t.Fatal(err)
	}
	before := mustStats(ctx, t, l.Appliance)
	requests := map[string]uint64{}
	tcpConns := map[string]uint64{}
	udpFlows := map[string]uint64{}
	const optionProbes = 10

	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/separate connections spread over every backend", func(t *testing.T) {
			const n = 150
			got, err := nsbed.CurlMany(ctx, l.Client, l.URL(mode, "/"), n)
			if err != nil {
				t.Fatal(err)
			}
			requests[mode] += uint64(got.Requests)
			tcpConns[mode] += uint64(got.Conns)
			checkCurlMany(t, mode+" curl", got, n, l.Backends)
		})

		t.Run(mode+"/udp flows answered from the VIP", func(t *testing.T) {
			const flows, per = 30, 3
			got, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr(mode), flows, per)
			if err != nil {
				t.Fatal(err)
			}
			requests[mode] += uint64(got.Sent)
			udpFlows[mode] += flows
			checkUDPFlows(t, mode+" udp", got, l.UDPAddr(mode), flows, per, l.Backends)
		})

		t.Run(mode+"/ip options forwarded and counted", func(t *testing.T) {
			// README "Forwarding rules": packets with IPv4 options are
			// forwarded unchanged inside the envelope and counted. The
			// client's kernel adds a Router Alert option (IP_OPTIONS)
			// to every datagram; the backend's kernel must accept and
			// answer them.
			b := mustStats(ctx, t, l.Appliance)
			got, err := nsbed.UDPProbe{Count: optionProbes, IPOptions: nsbed.RouterAlert}.Run(ctx, l.Client, l.UDPAddr(mode))
			if err != nil {
				t.Fatal(err)
			}
			a := mustStats(ctx, t, l.Appliance)
			d := a.Sub(b)
			requests[mode] += uint64(got.Sent)
			udpFlows[mode]++
			t.Logf("%s: %d datagrams with a Router Alert option, %d echoed by %s; appliance ip_options +%d",
				mode, got.Sent, got.Echoed, nsbed.Spread(got.PerBackend), d.Totals.IPOptions)
			if got.Sent != optionProbes || got.Echoed != optionProbes || len(got.Errors) != 0 {
				t.Errorf("sent %d, echoed %d, errors %v; want %d of each and no errors", got.Sent, got.Echoed, got.Errors, optionProbes)
			}
			if len(got.Sources) != 1 || got.Sources[l.UDPAddr(mode)] == 0 {
				t.Errorf("answers came from %v, want only %s", got.Sources, l.UDPAddr(mode))
			}
			if d.Totals.IPOptions != optionProbes {
				t.Errorf("appliance counted ip_options +%d, want %d", d.Totals.IPOptions, optionProbes)
			}
		})
	}

	t.Run("envelopes on the wire, answers bypass the appliance", func(t *testing.T) {
		rep, err := ev.Finish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range nsbed.L3Modes {
			e := rep.Envelopes[m]
			t.Logf("router received %d %s envelopes (appliance -> router MAC, outer to %s, TTL 64, DF as inner: %d with DF), %d with inner IP options",
				e.Frames, m, nsbed.Spread(e.ByBackend), e.DF, e.WithOptions)
			if miss := l.Missing(e.ByBackend); len(miss) != 0 {
				t.Errorf("%s: no envelope to backends %v", m, miss)
			}
			if e.WithOptions != optionProbes {
				t.Errorf("%s: %d envelopes carry an inner header with options, want %d", m, e.WithOptions, optionProbes)
			}
			if e.DF == 0 {
				t.Errorf("%s: no envelope with DF (TCP sets DF; the outer header must copy it)", m)
			}
		}
		t.Logf("appliance NIC: %d TCP/UDP packets from a VIP; client: %d SYN-ACK/UDP answers from a VIP, %d from the router's MAC",
			rep.ApplianceFromVIP, rep.ClientFromVIP, rep.FromRouter)
		for _, p := range rep.Problems() {
			t.Error(p)
		}
	})

	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/wrk load without errors", func(t *testing.T) {
			const conns = 16
			got, err := nsbed.Wrk(ctx, l.Client, l.URL(mode, "/"), 2*time.Second, conns)
			if err != nil {
				t.Fatal(err)
			}
			requests[mode] += uint64(got.Requests)
			tcpConns[mode] += conns
			t.Logf("%s wrk: %d requests in %v (%.0f/s): %s", mode, got.Requests, got.Duration.Round(time.Millisecond), got.RPS(), nsbed.Spread(got.PerBackend))
			if got.ErrorCount() != 0 {
				t.Errorf("wrk errors %v, want none", got.Errors)
			}
			if got.Requests < 500 {
				t.Errorf("wrk made %d requests, want at least 500", got.Requests)
			}
			if miss := l.Missing(got.PerBackend); len(miss) != 0 {
				t.Errorf("backends %v answered nothing (spread %s)", miss, nsbed.Spread(got.PerBackend))
			}
		})
	}

	after := mustStats(ctx, t, l.Appliance)
	t.Run("appliance counters see requests, never answers", func(t *testing.T) {
		delta := after.Sub(before)
		t.Logf("appliance delta: rx %d tx %d to kernel %d from kernel %d dropped %d ip_options %d; services %v",
			delta.Totals.RxPackets, delta.Totals.TxPackets, delta.Totals.ToKernel, delta.Totals.FromKernel,
			delta.Totals.Dropped, delta.Totals.IPOptions, delta.Services)
		var all uint64
		for _, m := range nsbed.L3Modes {
			all += requests[m]
		}
		for _, p := range nsbed.CounterProblems(delta, all) {
			t.Error(p)
		}
		if delta.Totals.FragNeededSent != 0 {
			t.Errorf("frag_needed_sent +%d for small requests, want 0", delta.Totals.FragNeededSent)
		}
		for _, m := range nsbed.L3Modes {
			var web, echo uint64
			for _, b := range delta.Services["web-"+m].Backends {
				web += b.NewFlows
			}
			for _, b := range delta.Services["echo-"+m].Backends {
				echo += b.NewFlows
			}
			if web < tcpConns[m] {
				t.Errorf("web-%s: %d new flows, want at least the %d TCP connections made", m, web, tcpConns[m])
			}
			if echo != udpFlows[m] {
				t.Errorf("echo-%s: %d new flows, want %d", m, echo, udpFlows[m])
			}
		}
	})

	// Path MTU. Every link and the appliance's port have MTU 1500, so a
	// full-sized client packet plus the envelope does not fit. The
	// backend's TCP sees the client's MSS (the decapsulator removes the
	// envelope), so the client sends 1500-byte packets with DF; the
	// appliance answers "fragmentation needed" with 1500 minus the
	// envelope, the client's kernel lowers its path MTU to the VIP and
	// retransmits smaller. The client keeps its veth offloads (TSO, GSO,
	// checksum): its large segments are cut to the MSS of the path MTU,
	// and the switch port facing the appliance segments in software, so
	// the appliance only ever sees frames of at most 1514 bytes, which a
	// capture on its NIC checks.
	offl, err := l.Client.Offloads("eth0")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("client eth0 offloads: %v", offl)
	oversize, err := l.Host("appl").StartCapture("eth0", fmt.Sprintf("greater %d", l.MTU+14+1), 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/path MTU: 1 MB upload after fragmentation needed", func(t *testing.T) {
			checkPathMTUUpload(ctx, t, l, mode, nsbed.L3VIP(mode), l.URL(mode, "/upload"), nsbed.L3Overhead(mode), fragNeeded)
		})
	}
	t.Run("no frame larger than the MTU reached the appliance", func(t *testing.T) {
		drops, err := oversize.Stop()
		if err != nil {
			t.Fatal(err)
		}
		rows, err := oversize.Fields(ctx, "", "frame.len")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 0 || drops != 0 {
			t.Errorf("appliance NIC saw %d frames above %d bytes (capture dropped %d): %v", len(rows), l.MTU+14, drops, rows)
		}
	})

	t.Run("backends decapsulated every envelope with eBPF", func(t *testing.T) {
		// The health probes through the VIP are envelopes too, and keep
		// coming: the counts are read between two of the appliance's.
		before := mustStats(ctx, t, l.Appliance)
		per, problems, err := l.Decap()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Error(p)
		}
		st := mustStats(ctx, t, l.Appliance)
		var ipip, gre uint64
		var parts []string
		for _, name := range l.BackendNames() {
			d := per[name]
			ipip += d.IPIPPackets
			gre += d.GREPackets
			parts = append(parts, fmt.Sprintf("%s ipip %d gre %d", name, d.IPIPPackets, d.GREPackets))
			if d.IPIPPackets == 0 || d.GREPackets == 0 {
				t.Errorf("%s decapsulated %d IPIP and %d GRE packets, want some of each", name, d.IPIPPackets, d.GREPackets)
			}
			if d.AdjustErrors != 0 {
				t.Errorf("%s: %d adjust errors", name, d.AdjustErrors)
			}
		}
		sent := map[string]uint64{}
		probes := map[string][2]uint64{} // sent before and after the decapsulators were read
		for _, m := range nsbed.L3Modes {
			sent[m] = st.Services["web-"+m].Packets + st.Services["echo-"+m].Packets
			probes[m] = [2]uint64{before.ServiceProbes("web-"+m) + before.ServiceProbes("echo-"+m),
				st.ServiceProbes("web-"+m) + st.ServiceProbes("echo-"+m)}
		}
		t.Logf("decapsulated: %s; appliance sent ipip %d (and %d..%d probes), gre %d (and %d..%d probes)", strings.Join(parts, ", "),
			sent["ipip"], probes["ipip"][0], probes["ipip"][1], sent["gre"], probes["gre"][0], probes["gre"][1])
		for m, got := range map[string]uint64{"ipip": ipip, "gre": gre} {
			if got < sent[m]+probes[m][0] || got > sent[m]+probes[m][1] {
				t.Errorf("backends decapsulated %d %s packets, the appliance sent %d and %d..%d probes", got, m, sent[m], probes[m][0], probes[m][1])
			}
		}
	})

	t.Run("dsrlb stops cleanly", func(t *testing.T) {
		if err := l.Appliance.Stop(); err != nil {
			t.Error(err)
		}
	})
}

// TestL3Fragments checks the rule of README "Forwarding rules" for IP
// fragments with a real kernel: fragments to a VIP are dropped and counted
// as "fragment" (without reassembly a non-first fragment has no ports to
// hash). The client sends UDP datagrams larger than the MTU without DF, so
// its kernel fragments them (Ip.FragCreates counts the fragments). The
// appliance's port uses net_pcap here: net_af_packet lets the kernel
// reassemble fragments before DPDK reads them (see nsbed.L3PcapDevice).
func TestL3Fragments(t *testing.T) {
	l := startL3(t, nsbed.L3Options{Backends: 2, Device: nsbed.L3PcapDevice})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/whole datagrams answered", func(t *testing.T) {
			got, err := nsbed.UDPProbe{Count: 5, Size: 1000}.Run(ctx, l.Client, l.UDPAddr(mode))
			if err != nil {
				t.Fatal(err)
			}
			if got.Echoed != 5 || len(got.Errors) != 0 {
				t.Errorf("%d of 5 datagrams echoed, errors %v", got.Echoed, got.Errors)
			}
		})
	}
	for _, mode := range nsbed.L3Modes {
		t.Run(mode+"/fragments to the VIP dropped and counted", func(t *testing.T) {
			const n, size = 5, 3000
			b, snmpB := l3Counters(ctx, t, l)
			got, err := nsbed.UDPProbe{Count: n, Size: size, NoDF: true, Wait: 300 * time.Millisecond}.Run(ctx, l.Client, l.UDPAddr(mode))
			if err != nil {
				t.Fatal(err)
			}
			a, snmpA := l3Counters(ctx, t, l)
			d := a.Sub(b)
			frags := snmpA["Ip.FragCreates"] - snmpB["Ip.FragCreates"]
			t.Logf("%s: %d datagrams of %d bytes without DF, %d fragments created by the client's kernel; appliance drops.fragment +%d, dropped +%d; %d echoed",
				mode, got.Sent, size, frags, d.Drops["fragment"], d.Totals.Dropped, got.Echoed)
			if got.Sent != n || frags < 2*n {
				t.Fatalf("sent %d datagrams, the client made %d fragments; want %d datagrams in at least %d fragments", got.Sent, frags, n, 2*n)
			}
			if d.Drops["fragment"] != frags {
				t.Errorf("appliance counted %d fragment drops, want the %d fragments", d.Drops["fragment"], frags)
			}
			if got.Echoed != 0 {
				t.Errorf("%d fragmented datagrams were answered (by %v), want none to reach a backend", got.Echoed, got.PerBackend)
			}
		})
	}

	t.Run("dsrlb stops cleanly", func(t *testing.T) {
		if err := l.Appliance.Stop(); err != nil {
			t.Error(err)
		}
	})
}

// l3Counters reads the appliance's stats and the client's SNMP counters
// (/proc/net/snmp); an error ends t.
func l3Counters(ctx context.Context, t *testing.T, l *nsbed.L3) (*nsbed.Stats, map[string]uint64) {
	t.Helper()
	st := mustStats(ctx, t, l.Appliance)
	snmp, err := l.Client.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	return st, snmp
}

// icmpTooBig names the ICMP error a path MTU check counts: the appliance's
// counter of those it sent and the client's kernel counter of those it
// received.
type icmpTooBig struct {
	what, counter string // "fragmentation needed", "frag_needed_sent"
	sent          func(*nsbed.Totals) uint64
	clientWhat    string                                     // "ICMP destination unreachable"
	client        func(*nsbed.NS) (map[string]uint64, error) // (*nsbed.NS).SNMP
	clientKey     string                                     // "Icmp.InDestUnreachs"
}

var (
	// fragNeeded is ICMP type 3 code 4 (RFC 792, RFC 1191).
	fragNeeded = icmpTooBig{"fragmentation needed", "frag_needed_sent", func(t *nsbed.Totals) uint64 { return t.FragNeededSent },
		"ICMP destination unreachable", (*nsbed.NS).SNMP, "Icmp.InDestUnreachs"}
	// packetTooBig is ICMPv6 type 2 (RFC 4443).
	packetTooBig = icmpTooBig{"Packet Too Big", "packet_too_big_sent", func(t *nsbed.Totals) uint64 { return t.PacketTooBigSent },
		"ICMPv6 Packet Too Big", (*nsbed.NS).SNMP6, "Icmp6InPktTooBigs"}
)

// checkPathMTUUpload uploads 1 MiB from the client to url, a service on vip
// in mode, whose envelope adds overhead bytes, and checks path MTU
// discovery through the appliance: no MTU learnt before; then the upload
// arrives intact, the appliance sent e's errors and the client received
// at least as many, the client's path MTU to vip is the MTU minus the
// envelope, and nothing was dropped.
func checkPathMTUUpload(ctx context.Context, t *testing.T, l *nsbed.L3, mode string, vip netip.Addr, url string, overhead int, e icmpTooBig) {
	t.Helper()
	want := l.MTU - overhead
	if mtu, route, err := l.Client.RouteMTU(vip); err != nil || mtu != 0 {
		t.Fatalf("before the upload the client's route to %s is %q (%v), want no learnt MTU", vip, route, err)
	}
	counters := func() (*nsbed.Stats, map[string]uint64) {
		st := mustStats(ctx, t, l.Appliance)
		snmp, err := e.client(l.Client)
		if err != nil {
			t.Fatal(err)
		}
		return st, snmp
	}
	b, snmpB := counters()
	start := time.Now()
	got, err := nsbed.Upload(ctx, l.Client, url, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	a, snmpA := counters()
	d := a.Sub(b)
	mtu, route, err := l.Client.RouteMTU(vip)
	if err != nil {
		t.Fatal(err)
	}
	sent, icmpIn := e.sent(&d.Totals), snmpA[e.clientKey]-snmpB[e.clientKey]
	t.Logf("%s: upload of %d bytes to %s in %v, sha256 %s… %s; appliance %s +%d, client got %d %s; client route: %s",
		mode, got.Sent, got.Backend, took.Round(time.Millisecond), got.SHA256[:12],
		map[bool]string{true: "matches", false: "DIFFERS"}[got.OK()], e.counter, sent, icmpIn, e.clientWhat, route)
	if !got.OK() {
		t.Errorf("backend %s got %d bytes sha256 %s, sent %d bytes sha256 %s", got.Backend, got.Echoed, got.EchoedSHA256, got.Sent, got.SHA256)
	}
	if sent == 0 {
		t.Errorf("appliance sent no %s (%s +0)", e.what, e.counter)
	}
	if icmpIn < sent {
		t.Errorf("client received %d %s, want at least the %d the appliance sent", icmpIn, e.clientWhat, sent)
	}
	if mtu != want {
		t.Errorf("client path MTU to %s is %d (%s), want %d (%d - %d)", vip, mtu, route, want, l.MTU, overhead)
	}
	if d.Totals.Dropped != 0 {
		t.Errorf("appliance dropped %d packets: %v", d.Totals.Dropped, d.NonZeroDrops())
	}
}

// checkRoutedKernelSide checks the kernel side of the L3 bed: the
// appliance's kernel answers ICMP (or ICMPv6) echo from the client for
// each of addrs (its port addresses, the VIPs) through the tap; and the
// backends being off the port's subnets, every backend's next hop is the
// router (gateway, gateway6), resolved by the appliance's kernel.
func checkRoutedKernelSide(ctx context.Context, t *testing.T, l *nsbed.L3, addrs ...netip.Addr) {
	t.Helper()
	for _, ip := range addrs {
		if out, err := l.Client.Run("ping", "-c1", "-W2", ip.String()); err != nil {
			t.Errorf("ping %s from the client: %v\n%s", ip, err, out)
		}
	}
	st, err := l.Appliance.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range st.Services {
		for _, b := range svc.Backends {
			if b.NextHopMAC != l.RouterMAC {
				t.Errorf("%s/%s: next hop MAC %q, want the router's %s", svc.Name, b.IP, b.NextHopMAC, l.RouterMAC)
			}
		}
	}
}
