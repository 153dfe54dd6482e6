package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// startTier2 brings up the tier-2 bed for t (three proxies built, px1 and
// px2 in the service, three web servers) with API token token, and tears
// it down when t ends.
func startTier2(t *testing.T, token string) *nsbed.Tier2 {
	t.Helper()
	needBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	tb, err := nsbed.StartTier2(ctx, nsbed.Tier2Options{Bins: bins, Bed: bedOptions(t),
		Config: func(c *v1.Config) { c.API.Token = token }})
	if err != nil {
		t.Fatalf("start tier-2 testbed: %v", err)
	}
	closeAtEnd(t, tb.Appliance, tb.Ready, tb.Close)
	t.Logf("TIMING tier-2 bed ready in %v (appliance forwarding to px1 and px2 %v after its start)",
		time.Since(start).Round(time.Millisecond), tb.Ready.Round(time.Millisecond))
	return tb
}

// TestTier2HAProxy runs dsrlb (ipip) in front of HAProxy L7 proxies, the
// setup of docs/tier2.md. Each proxy holds the VIP on lo, strips the
// envelope with dsrctl's eBPF decapsulator, terminates HTTP on VIP:80 and
// balances every request over three web servers on a segment of their own;
// its answers go from the VIP through the router straight to the client.
//
//   - New connections spread over both proxies, and each proxy's requests
//     over all three web servers; every proxy saw the client's own address
//     and port; the web servers saw the proxies; no TCP from the VIP
//     crosses the appliance's NIC, every envelope goes to a proxy.
//   - Under load (long-lived keep-alive connections and a steady stream of
//     new ones) a third proxy joins through the REST API: no long-lived
//     connection fails, changes proxy or misses an answer, and new
//     connections reach the third proxy once its health check passes.
//   - The proxies' decapsulators stripped exactly the envelopes the
//     appliance sent, and HAProxy logged no failed session.
func TestTier2HAProxy(t *testing.T) {
	const (
		spreadConns = 120                    // new connections in the first step
		longLived   = 24                     // keep-alive connections across the change
		every       = 100 * time.Millisecond // request interval on each of them
		streamEvery = 20 * time.Millisecond  // new connection interval of the stream
		wrkConns    = 8                      // wrk's keep-alive connections across the change
		wrkFor      = 5 * time.Second        // covers the change: it takes about 3 s
		freshConns  = 90                     // new connections after the change
	)
	token := newAPIToken(t)
	tb := startTier2(t, token)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := tb.Appliance
	px3 := tb.Proxy(3)
	ipOf := map[string]string{}
	for _, px := range tb.Backends {
		ipOf[px.Name] = px.IP.String()
	}
	serving := []string{"px1", "px2"}

	if !t.Run("new connections spread over both proxies and every web server, answers bypass the appliance", func(t *testing.T) {
		ev, err := tb.StartEvidence()
		if err != nil {
			t.Fatal(err)
		}
		before := mustStats(ctx, t, a)
		start := time.Now()
		got := tb.Requests(ctx, spreadConns)
		took := time.Since(start)
		rep, err := ev.Finish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d := mustStats(ctx, t, a).Sub(before)
		t.Logf("RESULT %d new connections in %v: proxies %s; web servers %s; proxy>web %s; client address and port kept at the proxy %d/%d, web server saw the naming proxy %d/%d",
			got.Requests, took.Round(time.Millisecond), nsbed.Spread(got.PerProxy), nsbed.Spread(got.PerWeb), nsbed.Spread(got.Pairs),
			got.ClientKept, got.OK, got.WebSawProxy, got.OK)
		checkProxyTally(t, got, spreadConns, serving, tb.Webs.Names())
		for _, px := range serving {
			for _, w := range tb.Webs.Names() {
				if got.Pairs[px+">"+w] == 0 {
					t.Errorf("%s sent no request to %s (pairs %s)", px, w, nsbed.Spread(got.Pairs))
				}
			}
		}

		env := rep.Envelopes["ipip"]
		t.Logf("RESULT router received %d IPIP envelopes (appliance -> router MAC, outer to %s); appliance NIC: %d TCP packets from the VIP; client: %d SYN-ACKs from the VIP, %d from the router's MAC",
			env.Frames, nsbed.Spread(env.ByBackend), rep.ApplianceFromVIP, rep.ClientFromVIP, rep.FromRouter)
		for _, p := range rep.Problems() {
			t.Error(p)
		}
		for _, px := range serving {
			if env.ByBackend[px] == 0 {
				t.Errorf("no envelope to %s", px)
			}
		}
		if env.ByBackend["px3"] != 0 {
			t.Errorf("%d envelopes to px3, which is not in the service", env.ByBackend["px3"])
		}
		if rep.ClientFromVIP < spreadConns {
			t.Errorf("client saw %d SYN-ACKs from the VIP, want one per connection (%d)", rep.ClientFromVIP, spreadConns)
		}

		// One connection is one flow: the appliance's new flows per proxy
		// are the connections each proxy answered.
		for _, p := range nsbed.CounterProblems(d, uint64(spreadConns)) {
			t.Error(p)
		}
		for _, px := range tb.Backends {
			if nf := d.Services["web"].Backends[px.IP.String()].NewFlows; nf != uint64(got.PerProxy[px.Name]) {
				t.Errorf("appliance counted %d new flows to %s, the client had %d connections answered by it", nf, px.Name, got.PerProxy[px.Name])
			}
		}
	}) {
		return
	}

	if !t.Run("third proxy added over the API under load: no connection breaks, new ones reach it", func(t *testing.T) {
		if fw := backendForwarding(ctx, t, a, "web", ipOf["px3"]); fw != "absent" {
			t.Fatalf("px3 is %q in the service before it is added", fw)
		}
		// From fixed ports above the ephemeral range, so that their
		// 5-tuples can be asked about again afterwards.
		var ports []int
		for i := range longLived {
			ports = append(ports, 61000+i)
		}
		long, err := nsbed.StartKeepAliveFrom(ctx, tb.Client, tb.Addr(), ports, every)
		if err != nil {
			t.Fatal(err)
		}
		defer long.Stop()
		stream := tb.StartStream(streamEvery)
		defer stream.Stop()
		before := mustStats(ctx, t, a)
		type wrkOutcome struct {
			r   *nsbed.WrkResult
			err error
		}
		wrkDone := make(chan wrkOutcome, 1)
		go func() {
			r, err := nsbed.Wrk(ctx, tb.Client, tb.URL("/"), wrkFor, wrkConns)
			wrkDone <- wrkOutcome{r, err}
		}()
		if err := waitAnswers(ctx, long, nil, 3); err != nil {
			t.Fatal(err)
		}

		posted := time.Now()
		var added struct{ IP string }
		if err := a.Change(ctx, http.MethodPost, "/api/v1/services/web/backends", map[string]string{"ip": ipOf["px3"]}, &added); err != nil {
			t.Fatal(err)
		}
		answered := time.Since(posted)
		if added.IP != ipOf["px3"] {
			t.Fatalf("POST answered backend %q, want %s", added.IP, ipOf["px3"])
		}
		activeAt, err := waitForwarding(ctx, a, "web", ipOf["px3"], "active", 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		atActive := long.Snapshot()
		var firstAt time.Time
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if at, ok := stream.FirstFrom(px3.Name); ok {
				firstAt = at
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new connection reached px3 within 10 s of it forwarding")
			}
		}
		// Keep the load on until every long-lived connection has had 10
		// more answers since px3 took flows.
		if err := waitAnswers(ctx, long, atActive, 10); err != nil {
			t.Error(err)
		}
		st := stream.Stop()
		reports := long.Stop()
		w := <-wrkDone
		if w.err != nil {
			t.Fatal(w.err)
		}
		d := mustStats(ctx, t, a).Sub(before)
		sum := nsbed.SummarizeConns(reports)

		// The connections ended with a reset, which frees their ports at
		// once and marks their flows closed: a new connection on the same
		// 5-tuple is a new flow, placed by Maglev over the three proxies.
		// Those that land on another proxy than before are the
		// connections that only the flow table kept where they were.
		var kept []string
		rehashed := map[string]int{}
		for _, c := range reports {
			got, err := nsbed.GetFromPort(ctx, tb.Client, tb.Addr(), c.Port)
			if err != nil {
				t.Fatalf("new connection from port %d: %v", c.Port, err)
			}
			rehashed[got.Proxy]++
			for px := range c.Proxies {
				if got.Proxy != px {
					kept = append(kept, fmt.Sprintf("%d: %s, now %s", c.Port, px, got.Proxy))
				}
			}
		}

		t.Logf("TIMING px3 added: POST answered in %v, forwarding %v after the POST (health check rise 2 x 1 s), first new connection on px3 %v after the POST",
			answered.Round(time.Millisecond), activeAt.Sub(posted).Round(time.Millisecond), firstAt.Sub(posted).Round(time.Millisecond))
		t.Logf("RESULT across the change, %d keep-alive connections (GET every %v): %d requests, %d answered, %d errors, %d redials, %d changed proxy; connections per proxy %s; max gap between answers %v, slowest answer %v",
			sum.Conns, every, sum.Requests, sum.OK, sum.Errors, sum.Redials, sum.ProxyMoved, nsbed.Spread(sum.PerProxy), sum.MaxGap.Round(time.Millisecond), sum.MaxRTT.Round(time.Millisecond))
		t.Logf("RESULT the same %d 5-tuples as new connections after the change: proxies %s; %d of them go to another proxy now, so only the flow table kept their connections on theirs (port: then, now): %s",
			len(reports), nsbed.Spread(rehashed), len(kept), strings.Join(kept, "; "))
		t.Logf("RESULT across the change, a stream of %d new connections: %d errors; proxies %s; web servers %s",
			st.Requests, st.ErrorCount, nsbed.Spread(st.PerProxy), nsbed.Spread(st.PerWeb))

		if sum.Errors != 0 || sum.Redials != 0 || sum.OK != sum.Requests {
			t.Errorf("long-lived connections: %d errors, %d redials, %d of %d requests answered; want every request answered on its first connection: %s",
				sum.Errors, sum.Redials, sum.OK, sum.Requests, strings.Join(sum.FirstErrors, "; "))
		}
		if sum.ProxyMoved != 0 || sum.PerProxy["px3"] != 0 {
			t.Errorf("%d long-lived connections changed proxy and %d were answered by px3; want each on the proxy it started on", sum.ProxyMoved, sum.PerProxy["px3"])
		}
		for _, c := range reports {
			if len(c.Proxies) != 1 {
				t.Errorf("connection %s answered by proxies %v, want exactly one", c.Local, c.Proxies)
			}
		}
		// Maglev gives the third proxy about a third of the 5-tuples. The
		// 5-tuples, the proxies and the Maglev seed are fixed, so the
		// same ones move in every run (8 of the 24).
		if rehashed["px3"] == 0 {
			t.Errorf("none of the %d 5-tuples goes to px3 as a new connection (%s): the change moved no live connection's hash", len(reports), nsbed.Spread(rehashed))
		}
		t.Logf("RESULT across the change, wrk (%d keep-alive connections, %v): %d requests (%.0f/s), errors %v; web servers %s",
			wrkConns, w.r.Duration.Round(time.Millisecond), w.r.Requests, w.r.RPS(), w.r.Errors, nsbed.Spread(w.r.PerBackend))
		if w.r.ErrorCount() != 0 {
			t.Errorf("wrk: errors %v, want none", w.r.Errors)
		}
		if st.ErrorCount != 0 {
			t.Errorf("stream of new connections: %d of %d failed: %s", st.ErrorCount, st.Requests, strings.Join(st.Errors, "; "))
		}
		if firstAt.Before(activeAt.Add(-time.Second)) {
			t.Errorf("px3 answered a new connection at %v, before it forwarded (%v)", firstAt, activeAt)
		}
		if nf := d.Services["web"].Backends[ipOf["px3"]].NewFlows; nf == 0 || nf > uint64(st.PerProxy["px3"]) {
			t.Errorf("appliance counted %d new flows to px3; the stream had %d connections answered by it", nf, st.PerProxy["px3"])
		}
		if d.Totals.Dropped != 0 {
			t.Errorf("appliance dropped %d packets: %v", d.Totals.Dropped, d.NonZeroDrops())
		}
	}) {
		return
	}

	t.Run("new connections spread over all three proxies", func(t *testing.T) {
		got := tb.Requests(ctx, freshConns)
		t.Logf("RESULT %d new connections after the change: proxies %s; web servers %s", got.Requests, nsbed.Spread(got.PerProxy), nsbed.Spread(got.PerWeb))
		checkProxyTally(t, got, freshConns, []string{"px1", "px2", "px3"}, tb.Webs.Names())
	})

	t.Run("proxies decapsulated every envelope with eBPF", func(t *testing.T) {
		// The health probes through the VIP are envelopes too, and keep
		// coming: the counts are read between two of the appliance's.
		before := mustStats(ctx, t, a)
		per, problems, err := tb.Decap()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Error(p)
		}
		var sum uint64
		var parts []string
		for _, px := range tb.Backends {
			dc := per[px.Name]
			sum += dc.IPIPPackets
			parts = append(parts, fmt.Sprintf("%s %d", px.Name, dc.IPIPPackets))
			if dc.IPIPPackets == 0 || dc.GREPackets != 0 || dc.AdjustErrors != 0 {
				t.Errorf("%s: %d IPIP, %d GRE packets, %d adjust errors; want IPIP only, no errors", px.Name, dc.IPIPPackets, dc.GREPackets, dc.AdjustErrors)
			}
		}
		after := mustStats(ctx, t, a)
		sent := after.Services["web"].Packets
		probes := [2]uint64{before.ServiceProbes("web"), after.ServiceProbes("web")}
		t.Logf("RESULT decapsulated IPIP packets: %s; appliance sent %d and %d..%d health probes", strings.Join(parts, ", "), sent, probes[0], probes[1])
		if sum < sent+probes[0] || sum > sent+probes[1] {
			t.Errorf("proxies decapsulated %d packets, the appliance sent %d and %d..%d health probes", sum, sent, probes[0], probes[1])
		}
	})

	t.Run("haproxy logged no failed session", func(t *testing.T) {
		for px, lines := range tb.ProxyLogs() {
			t.Errorf("%s logged %d lines (dontlog-normal: failed or aborted sessions only), e.g. %q", px, len(lines), lines[:min(3, len(lines))])
		}
	})

	t.Run("dsrlb stops cleanly", func(t *testing.T) {
		if err := a.Stop(); err != nil {
			t.Error(err)
		}
	})
}

// checkProxyTally checks got, n requests on new connections through the
// tier-2 bed: every one answered, by the proxies in proxies only (each of
// them some), from every web server of webs, with the client's address and
// port kept at the proxy and the web server seeing the proxy.
func checkProxyTally(t *testing.T, got *nsbed.ProxyTally, n int, proxies, webs []string) {
	t.Helper()
	if got.ErrorCount != 0 || got.OK != n {
		t.Errorf("%d of %d requests answered, %d errors: %s", got.OK, n, got.ErrorCount, strings.Join(got.Errors, "; "))
	}
	for px, c := range got.PerProxy {
		if !slices.Contains(proxies, px) {
			t.Errorf("%s answered %d requests, want only %v", px, c, proxies)
		}
	}
	for _, px := range proxies {
		if got.PerProxy[px] == 0 {
			t.Errorf("%s answered no request (proxies %s)", px, nsbed.Spread(got.PerProxy))
		}
	}
	for _, w := range webs {
		if got.PerWeb[w] == 0 {
			t.Errorf("%s answered no request (web servers %s)", w, nsbed.Spread(got.PerWeb))
		}
	}
	if got.ClientKept != got.OK {
		t.Errorf("%d of %d answers: the proxy saw the client's own address and port (%s)", got.ClientKept, got.OK, nsbed.ClientHeader)
	}
	if got.WebSawProxy != got.OK {
		t.Errorf("%d of %d answers: the web server saw the request come from the proxy named in %s", got.WebSawProxy, got.OK, nsbed.ProxyHeader)
	}
}

// waitAnswers waits, 10 s at most, until every connection of run has had n
// answers more than in since (nil: since it opened).
func waitAnswers(ctx context.Context, run *nsbed.KeepAliveRun, since []nsbed.ConnReport, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := run.Snapshot()
		behind := 0
		for i, c := range now {
			base := 0
			if since != nil {
				base = since[i].OK
			}
			if c.OK-base < n {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d long-lived connections had fewer than %d answers in 10 s", behind, len(now), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
