package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/bgp/frrtest"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// Health monitor numbers of the ECMP bed (nsbed.ECMPHealth): interval 1 s,
// rise 2, fall 2. The VIP must leave the router within fall x interval +
// 2 s of its last backend failing, and come back within rise x interval +
// 2 s of the backends returning.
const (
	ecmpInterval = time.Second
	ecmpRise     = 2
	ecmpFall     = 2
	ecmpSlack    = 2 * time.Second
	ecmpDrain    = 3 * time.Second // nsbed.ECMPOptions.Drain default
)

// TestECMP runs two appliances behind an FRR router that spreads client
// flows over them by ECMP, and checks, with real traffic and the router's
// own tables: both carry traffic; a flow gets the same backend through
// either; the VIP leaves the router when every backend fails and returns
// when they do; stopping an appliance (SIGTERM: withdraw, drain, stop)
// breaks no established connection; and a standby appliance (MED or AS-path
// prepend) gets traffic only when the active one is gone. One bed serves
// every step, in order; a failed step ends the test.
func TestECMP(t *testing.T) {
	if testing.Short() {
		t.Skip("two appliances and FRR for about 45 s; skipped in -short mode")
	}
	e := startECMP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 170*time.Second)
	defer cancel()
	A, B := e.Appliances[0], e.Appliances[1]
	vip := net.JoinHostPort(nsbed.ECMPVIP.String(), strconv.Itoa(nsbed.HTTPPort))
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.Logf("router state:\n%s", e.FRRDiag())
			t.Logf("appliances:\n%s", e.Diag(context.Background()))
			t.FailNow()
		}
	}
	stats := func(r *trial) ([2]*nsbed.Stats, bool) {
		s, err := e.Stats(ctx)
		if err != nil {
			r.Errorf("stats: %v", err)
			return s, false
		}
		return s, true
	}
	// ready brings both appliances back to active, forwarding to every
	// backend, and both in the router's ECMP set.
	ready := func(r *trial) bool {
		for i, a := range e.Appliances {
			if a.Appliance == nil || a.Proc.Exited() {
				if err := e.StartAppliance(ctx, i, "active", "med"); err != nil {
					r.Errorf("restart %s: %v", a.Name, err)
					return false
				}
			}
		}
		if err := e.WaitAllActive(ctx, 15*time.Second); err != nil {
			r.Errorf("%v", err)
			return false
		}
		if _, err := e.WaitNexthops(15*time.Second, A.IP, B.IP); err != nil {
			r.Errorf("%v", err)
			return false
		}
		return true
	}

	step("both appliances carry traffic", func(t *testing.T) {
		retryOnFlap(t, e, func(r *trial) {
			const n = 300
			if !ready(r) {
				return
			}
			before, ok := stats(r)
			if !ok {
				return
			}
			got, err := nsbed.CurlMany(ctx, e.Client, e.URL("/"), n)
			if err != nil {
				r.Errorf("curl: %v", err)
				return
			}
			after, ok := stats(r)
			if !ok {
				return
			}
			if got.ErrorCount != 0 || got.OK != n {
				r.Errorf("got %d of %d answers, %d errors: %s", got.OK, n, got.ErrorCount, strings.Join(got.Errors, "; "))
			}
			var web [2]uint64
			var flows uint64
			for i, a := range e.Appliances {
				d := after[i].Sub(before[i])
				web[i] = d.Services["web"].Packets
				f := d.NewFlows("web")
				flows += f
				r.Logf("RESULT traffic split: %s rx %d packets (web %d packets, %d new flows; to kernel %d, dropped %d)",
					a.Name, d.Totals.RxPackets, web[i], f, d.Totals.ToKernel, d.Totals.Dropped)
				// Answers bypass the appliances: every packet they
				// received was for the service or their kernel.
				for _, p := range nsbed.CounterProblems(d, 0) {
					r.Errorf("%s: %s", a.Name, p)
				}
			}
			total := web[0] + web[1]
			r.Logf("RESULT traffic split over %d curl connections: %s %.1f%%, %s %.1f%% of %d web packets; answers per backend %s",
				n, A.Name, ecmpPct(web[0], total), B.Name, ecmpPct(web[1], total), total, got.Spread())
			for i, a := range e.Appliances {
				if ecmpPct(web[i], total) < 20 {
					r.Errorf("%s carried %d of %d web packets, want at least 20%%", a.Name, web[i], total)
				}
			}
			// Every connection is one flow, seen by one appliance: the
			// router hashes on the 5-tuple.
			if flows < n || flows > n+n/50 {
				r.Errorf("appliances counted %d new flows for %d connections", flows, n)
			}
			if miss := e.Backends.Missing(got.PerBackend); len(miss) != 0 {
				r.Errorf("backends %v answered nothing (%s)", miss, got.Spread())
			}
		})
	})

	step("a flow gets the same backend through either appliance", func(t *testing.T) {
		// The probe host sits on the appliances' segment and routes the
		// VIP to one chosen appliance; the same 5-tuples (probe address,
		// fixed source ports) go through A, then through B.
		const first, count = 41000, 32
		t.Cleanup(func() { e.Probe.Run("ip", "route", "del", e.VIPPrefix().String()) })
		retryOnFlap(t, e, func(r *trial) {
			if !ready(r) {
				return
			}
			var picked [2][count]string
			for i, a := range e.Appliances {
				if err := e.ProbeVia(i); err != nil {
					r.Errorf("%v", err)
					return
				}
				before, ok := stats(r)
				if !ok {
					return
				}
				for k := range count {
					port := first + k
					got, err := nsbed.GetFromPort(ctx, e.Probe, vip, port)
					if err != nil {
						r.Errorf("via %s: %v", a.Name, err)
						return
					}
					if want := net.JoinHostPort(nsbed.ECMPProbeIP.String(), strconv.Itoa(port)); got.Client != want {
						r.Errorf("via %s: backend saw client %s, want %s", a.Name, got.Client, want)
					}
					picked[i][k] = got.Backend
				}
				after, ok := stats(r)
				if !ok {
					return
				}
				// The test route really pinned the flows to appliance i.
				for j, o := range e.Appliances {
					got := after[j].Sub(before[j]).NewFlows("web")
					want := uint64(0)
					if j == i {
						want = count
					}
					if got != want {
						r.Errorf("probing via %s: %s counted %d new flows, want %d", a.Name, o.Name, got, want)
					}
				}
			}
			same, per := 0, map[string]int{}
			for k := range count {
				per[picked[0][k]]++
				if picked[0][k] == picked[1][k] {
					same++
				} else {
					r.Errorf("source port %d: %s picked %s, %s picked %s", first+k, A.Name, picked[0][k], B.Name, picked[1][k])
				}
			}
			r.Logf("RESULT same backend through both appliances for %d of %d fixed 5-tuples (%s)", same, count, nsbed.Spread(per))
			if len(per) < 2 {
				r.Errorf("all %d tuples went to %v: the comparison proves little", count, per)
			}
		})
	})

	step("VIP withdrawn when every backend fails, back after rise", func(t *testing.T) {
		start := time.Now()
		if err := e.StopBackends(); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		d, err := e.WaitNexthops(15 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		budget := ecmpFall*ecmpInterval + ecmpSlack
		t.Logf("TIMING VIP withdrawn from the router %v after every backend stopped (backendsrv stop took %v; budget fall %d x interval %v + %v = %v)",
			d.Round(time.Millisecond), down.Sub(start).Round(time.Millisecond), ecmpFall, ecmpInterval, ecmpSlack, budget)
		if d > budget {
			t.Errorf("VIP withdrawn after %v, want within %v", d, budget)
		}
		if k, err := e.KernelRoute(); err != nil || k != "" {
			t.Errorf("router kernel still routes the VIP: %q (%v)", k, err)
		}
		for _, a := range e.Appliances {
			st, err := a.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st.Services {
				t.Logf("%s: service %s announced=%v: %s", a.Name, s.Name, s.Announced, s.Reason)
				if s.Announced {
					t.Errorf("%s still announces %s", a.Name, s.VIP)
				}
			}
		}
		// No route, no black hole: the router answers the client at
		// once (ICMP unreachable) rather than letting it time out.
		dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
		t0 := time.Now()
		c, err := e.Client.DialContext(dctx, "tcp4", vip)
		dcancel()
		if err == nil {
			c.Close()
			t.Errorf("client connected to the VIP while no appliance announces it")
		} else {
			took := time.Since(t0)
			t.Logf("client to the withdrawn VIP: %v after %v", err, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("connect to the withdrawn VIP failed only after %v (%v), want a fast network unreachable", took, err)
			}
		}

		start = time.Now()
		if err := e.StartBackends(ctx); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		var firstBack time.Duration
		_, err = e.Poll(15*time.Second, func() (bool, error) {
			nh, err := e.Nexthops()
			if len(nh) > 0 && firstBack == 0 {
				firstBack = time.Since(up)
			}
			return len(nh) == 2, err
		})
		if err != nil {
			t.Fatalf("VIP not back through both appliances: %v", err)
		}
		both := time.Since(up)
		budget = ecmpRise*ecmpInterval + ecmpSlack
		t.Logf("TIMING VIP back on the router %v (first appliance) / %v (both) after the backends listened again (backendsrv start took %v; budget rise %d x interval %v + %v = %v)",
			firstBack.Round(time.Millisecond), both.Round(time.Millisecond), up.Sub(start).Round(time.Millisecond), ecmpRise, ecmpInterval, ecmpSlack, budget)
		if both > budget {
			t.Errorf("VIP back after %v, want within %v", both, budget)
		}
		if got, err := nsbed.CurlMany(ctx, e.Client, e.URL("/"), 20); err != nil || got.OK != 20 {
			t.Errorf("after recovery: %v %+v", err, got)
		}
		// Each appliance's event feed tells the story: its BGP session
		// with the router up, the VIP withdrawn when the backends went
		// down, announced again after they came back.
		for _, a := range e.Appliances {
			var l v1.EventList
			if err := a.Get(ctx, "/api/v1/events", &l); err != nil {
				t.Fatal(err)
			}
			var peerUp, withdrawn, announced uint64
			for _, ev := range l.Events {
				switch {
				case ev.Kind == "bgp" && ev.Object == "peer "+nsbed.ECMPRouterLan.String() && ev.Reason == "session established":
					peerUp = ev.Seq
				case ev.Kind == "bgp" && ev.Object == "vip "+nsbed.ECMPVIP.String() && strings.HasPrefix(ev.Reason, "withdrawn: ") &&
					strings.Contains(ev.Reason, "below min_healthy"):
					withdrawn = ev.Seq
				case ev.Kind == "bgp" && ev.Object == "vip "+nsbed.ECMPVIP.String() && strings.HasPrefix(ev.Reason, "announced: "):
					announced = ev.Seq
				}
			}
			if peerUp == 0 || withdrawn == 0 || announced < withdrawn {
				t.Errorf("%s events: session up at %d, VIP withdrawn at %d, announced again at %d; want all, in that order:\n%+v",
					a.Name, peerUp, withdrawn, announced, l.Events)
			}
		}
	})

	step("SIGTERM of one appliance breaks no connection", func(t *testing.T) {
		retryOnFlap(t, e, func(r *trial) {
			const conns = 16
			if !ready(r) {
				return
			}
			before, ok := stats(r)
			if !ok {
				return
			}
			run, err := nsbed.StartKeepAlive(ctx, e.Client, vip, conns, 100*time.Millisecond)
			if err != nil {
				r.Errorf("keep-alive connections: %v", err)
				return
			}
			defer run.Stop()
			time.Sleep(1200 * time.Millisecond)
			early, ok := stats(r)
			if !ok {
				return
			}
			time.Sleep(300 * time.Millisecond)
			mid, ok := stats(r)
			if !ok {
				return
			}
			onA, onB := mid[0].Sub(before[0]).NewFlows("web"), mid[1].Sub(before[1]).NewFlows("web")
			lastA := mid[0].Sub(early[0]).Services["web"].Packets
			r.Logf("RESULT %d keep-alive connections (GET every 100 ms): %d flows via %s, %d via %s; %s carried %d web packets in the last 300 ms",
				conns, onA, A.Name, onB, B.Name, A.Name, lastA)
			// More flows than connections: the router re-installed
			// the route with its next hops in another order, moving
			// some flows (harmless, as the other appliance picks the
			// same backend).
			if onA == 0 || onB == 0 || onA+onB < conns || lastA == 0 {
				r.Errorf("flows per appliance %d + %d, want both > 0 and %d in all, and %s busy right before the SIGTERM (%d packets)", onA, onB, conns, A.Name, lastA)
				return
			}

			sigterm := time.Now()
			if err := e.SignalStop(0); err != nil {
				r.Errorf("%v", err)
				return
			}
			withdrawn, err := e.WaitNexthops(10*time.Second, B.IP)
			if err != nil {
				r.Errorf("%v", err)
				return
			}
			select {
			case <-A.Proc.Done():
			case <-time.After(ecmpDrain + 10*time.Second):
				r.Errorf("%s still running %v after SIGTERM", A.Name, time.Since(sigterm))
				return
			}
			exited := time.Since(sigterm)
			if err := A.Stop(); err != nil {
				r.Errorf("%s exit: %v", A.Name, err)
			}
			r.Logf("TIMING %s SIGTERM: router down to next hop %s after %v; dsrlb exited after %v (drain %v)",
				A.Name, B.IP, withdrawn.Round(time.Millisecond), exited.Round(time.Millisecond), ecmpDrain)
			if withdrawn > time.Second {
				r.Errorf("router took %v to drop %s, want well within the %v drain", withdrawn, A.Name, ecmpDrain)
			}
			if exited < ecmpDrain {
				r.Errorf("%s exited %v after SIGTERM, before its %v drain", A.Name, exited, ecmpDrain)
			}
			time.Sleep(1500 * time.Millisecond) // traffic goes on with A gone
			after, ok := stats(r)
			if !ok {
				return
			}
			reports := run.Stop()
			sum := nsbed.SummarizeConns(reports)
			took := after[1].Sub(mid[1]).NewFlows("web")
			r.Logf("RESULT across the SIGTERM: %d connections, %d requests, %d answered, %d errors, %d redials, %d changed backend; max gap between answers %v, slowest answer %v; %s took over %d flows mid-stream; connections per backend %s",
				sum.Conns, sum.Requests, sum.OK, sum.Errors, sum.Redials, sum.Moved, sum.MaxGap.Round(time.Millisecond), sum.MaxRTT.Round(time.Millisecond), B.Name, took, nsbed.Spread(sum.PerBackend))
			if sum.Errors != 0 || sum.Redials != 0 {
				r.Errorf("got %d errors, %d redials, want none: %v", sum.Errors, sum.Redials, sum.FirstErrors)
			}
			if sum.Moved != 0 {
				r.Errorf("%d connections were answered by more than one backend", sum.Moved)
			}
			if took == 0 {
				r.Errorf("%s counted no new flow after the SIGTERM: the connections on %s did not move", B.Name, A.Name)
			}
			// 100 ms apart for 1.5 s before, the drain and 1.5 s after.
			minPerConn := int((1500*time.Millisecond + ecmpDrain + 1500*time.Millisecond) / (100 * time.Millisecond) / 2)
			for _, c := range reports {
				if c.OK < minPerConn {
					r.Errorf("connection %s got %d answers, want at least %d", c.Local, c.OK, minPerConn)
				}
			}

			restart := time.Now()
			if err := e.StartAppliance(ctx, 0, "active", "med"); err != nil {
				r.Errorf("restart %s: %v", A.Name, err)
				return
			}
			active := time.Since(restart)
			if _, err := e.WaitNexthops(30*time.Second, A.IP, B.IP); err != nil {
				r.Errorf("%v", err)
				return
			}
			r.Logf("TIMING %s restarted: forwarding to every backend after %v, back in the router's ECMP set after %v",
				A.Name, active.Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
		})
	})

	for i, by := range []string{"med", "prepend"} {
		last := i == 1
		step("standby by "+by+" gets traffic only when the active appliance stops", func(t *testing.T) {
			retryOnFlap(t, e, func(r *trial) {
				// A active; B restarted as standby (unless it is one
				// of this kind already, from a failed first try).
				if A.Appliance == nil || A.Proc.Exited() {
					if err := e.StartAppliance(ctx, 0, "active", "med"); err != nil {
						r.Errorf("restart %s: %v", A.Name, err)
						return
					}
				}
				if B.Appliance != nil && !B.Proc.Exited() && B.Config.BGP.Role == "standby" && B.Config.BGP.Standby == by {
					r.Logf("%s already standby by %s", B.Name, by)
				} else {
					if B.Appliance != nil && !B.Proc.Exited() {
						if err := e.SignalStop(1); err != nil {
							r.Errorf("%v", err)
							return
						}
						<-B.Proc.Done()
						if err := B.Stop(); err != nil {
							r.Errorf("%s exit: %v", B.Name, err)
						}
					}
					start := time.Now()
					if err := e.StartAppliance(ctx, 1, "standby", by); err != nil {
						r.Errorf("start %s as standby: %v", B.Name, err)
						return
					}
					r.Logf("TIMING %s (standby by %s) forwarding to every backend %v after its start", B.Name, by, time.Since(start).Round(time.Millisecond))
				}
				if err := e.WaitAllActive(ctx, 15*time.Second); err != nil {
					r.Errorf("%v", err)
					return
				}
				var paths []frrtest.BGPPath
				d, err := e.Poll(30*time.Second, func() (bool, error) {
					var err error
					paths, err = e.Router.BGPPaths(e.VIPPrefix())
					return len(paths) == 2, err
				})
				if err != nil {
					r.Errorf("router has %d paths for the VIP, want 2: %v", len(paths), err)
					return
				}
				r.Logf("TIMING router has both paths (waited %v more)", d.Round(time.Millisecond))
				checkStandbyPaths(r, paths, A.IP, B.IP, by)
				if nh, err := e.Nexthops(); err != nil || len(nh) != 1 || nh[0] != A.IP {
					r.Errorf("router next hops %v (%v), want only the active %s", nh, err, A.IP)
				}
				if k, err := e.KernelRoute(); err != nil || !strings.Contains(k, "via "+A.IP.String()) || strings.Contains(k, B.IP.String()) {
					r.Errorf("router kernel route %q (%v), want via %s only", k, err, A.IP)
				}

				before, ok := stats(r)
				if !ok {
					return
				}
				got, err := nsbed.CurlMany(ctx, e.Client, e.URL("/"), 50)
				if err != nil || got.OK != 50 {
					r.Errorf("curl: %v %+v", err, got)
					return
				}
				after, ok := stats(r)
				if !ok {
					return
				}
				webA, webB := after[0].Sub(before[0]).Services["web"].Packets, after[1].Sub(before[1]).Services["web"].Packets
				r.Logf("RESULT active/standby (%s): 50 connections: %s (active) %d web packets, %s (standby) %d", by, A.Name, webA, B.Name, webB)
				if webA == 0 || webB != 0 {
					r.Errorf("web packets active %d, standby %d; want all on the active", webA, webB)
				}

				const conns = 8
				run, err := nsbed.StartKeepAlive(ctx, e.Client, vip, conns, 100*time.Millisecond)
				if err != nil {
					r.Errorf("keep-alive connections: %v", err)
					return
				}
				defer run.Stop()
				time.Sleep(500 * time.Millisecond)
				mid, ok := stats(r)
				if !ok {
					return
				}
				sigterm := time.Now()
				if err := e.SignalStop(0); err != nil {
					r.Errorf("%v", err)
					return
				}
				takeover, err := e.WaitNexthops(10*time.Second, B.IP)
				if err != nil {
					r.Errorf("%v", err)
					return
				}
				<-A.Proc.Done()
				exited := time.Since(sigterm)
				if err := A.Stop(); err != nil {
					r.Errorf("%s exit: %v", A.Name, err)
				}
				time.Sleep(time.Second)
				end, ok := stats(r)
				if !ok {
					return
				}
				sum := nsbed.SummarizeConns(run.Stop())
				took := end[1].Sub(mid[1]).NewFlows("web")
				r.Logf("TIMING standby %s took over %v after SIGTERM of %s (which exited after %v)", B.Name, takeover.Round(time.Millisecond), A.Name, exited.Round(time.Millisecond))
				r.Logf("RESULT failover to standby: %d connections, %d answered, %d errors, %d redials, %d changed backend, max gap %v; %s took over %d flows mid-stream",
					sum.Conns, sum.OK, sum.Errors, sum.Redials, sum.Moved, sum.MaxGap.Round(time.Millisecond), B.Name, took)
				if sum.Errors != 0 || sum.Redials != 0 || sum.Moved != 0 {
					r.Errorf("got %d errors, %d redials, %d connections that changed backend; want none: %v", sum.Errors, sum.Redials, sum.Moved, sum.FirstErrors)
				}
				if took < conns {
					r.Errorf("%s counted %d new flows, want the %d connections", B.Name, took, conns)
				}
				if last {
					return
				}
				// A comes back and, being preferred, takes the traffic
				// again.
				restart := time.Now()
				if err := e.StartAppliance(ctx, 0, "active", "med"); err != nil {
					r.Errorf("restart %s: %v", A.Name, err)
					return
				}
				if _, err := e.WaitNexthops(30*time.Second, A.IP); err != nil {
					r.Errorf("%v", err)
					return
				}
				r.Logf("TIMING active %s restarted: preferred again after %v", A.Name, time.Since(restart).Round(time.Millisecond))
			})
		})
	}
}

// trial collects one attempt's failures, so that retryOnFlap can decide
// whether they count.
type trial struct {
	t    *testing.T
	errs []string
}

// Errorf records a failure of the attempt.
func (r *trial) Errorf(format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf(format, args...)
	r.errs = append(r.errs, msg)
	r.t.Log("problem: " + msg)
}

// Logf logs.
func (r *trial) Logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf(format, args...)
}

// retryOnFlap runs attempt, and once more if it failed while an appliance
// saw a backend go down that nobody stopped (its health check timed out:
// on an overloaded machine the appliance's exception path can stall for a
// second). Such a false "down" legitimately moves that appliance's flows,
// so the attempt's failures say nothing about the property under test;
// they are logged as FLAKE and the attempt is repeated. Failures without a
// flap, or in both attempts, fail t.
func retryOnFlap(t *testing.T, e *nsbed.ECMP, attempt func(r *trial)) {
	t.Helper()
	for try := 1; ; try++ {
		before := [2]int{e.HealthFlaps(0), e.HealthFlaps(1)}
		r := &trial{t: t}
		attempt(r)
		flaps := flapNote(e, before)
		switch {
		case len(r.errs) == 0:
			if flaps != "" {
				t.Logf("note: %s", flaps)
			}
			return
		case flaps == "" || try == 2:
			for _, m := range r.errs {
				t.Error(m)
			}
			if flaps != "" {
				t.Errorf("backend health flapped during both attempts: %s", flaps)
			}
			return
		}
		t.Logf("FLAKE: %d problems while %s; retrying once", len(r.errs), flaps)
	}
}

// flapNote says which appliances saw backends go down since before
// (counts from ECMP.HealthFlaps), or "" if none did.
func flapNote(e *nsbed.ECMP, before [2]int) string {
	var notes []string
	for i, a := range e.Appliances {
		if n := e.HealthFlaps(i) - before[i]; n > 0 {
			notes = append(notes, fmt.Sprintf("%s saw %d backend(s) go down (health check timeouts)", a.Name, n))
		}
	}
	return strings.Join(notes, ", ")
}

// checkStandbyPaths checks the router's two paths for the VIP: the best
// one via the active appliance, the standby's valid but neither best nor
// multipath, made worse by MED or by AS-path prepending.
func checkStandbyPaths(r *trial, paths []frrtest.BGPPath, active, standby netip.Addr, by string) {
	var act, sby *frrtest.BGPPath
	for i, p := range paths {
		if len(p.Nexthops) == 0 {
			continue
		}
		switch p.Nexthops[0].IP {
		case active.String():
			act = &paths[i]
		case standby.String():
			sby = &paths[i]
		}
	}
	if act == nil || sby == nil {
		r.Errorf("paths %+v: want one via %s and one via %s", paths, active, standby)
		return
	}
	r.Logf("RESULT router paths: active via %s best=%v multipath=%v MED %d AS path %q; standby via %s best=%v multipath=%v MED %d AS path %q",
		active, act.Best(), act.Multipath, act.MED, act.ASPath.String, standby, sby.Best(), sby.Multipath, sby.MED, sby.ASPath.String)
	if !act.Best() || sby.Best() || sby.Multipath || !sby.Valid {
		r.Errorf("want the active path best and the standby's valid, not best, not multipath")
	}
	switch by {
	case "med":
		if sby.MED <= act.MED {
			r.Errorf("standby MED %d, active %d: want the standby's higher", sby.MED, act.MED)
		}
	case "prepend":
		if sby.ASPath.Length <= act.ASPath.Length {
			r.Errorf("standby AS path %q, active %q: want the standby's longer", sby.ASPath.String, act.ASPath.String)
		}
	}
}

// startECMP brings up the ECMP bed for t, its options changed by edit,
// and tears it down when t ends.
func startECMP(t *testing.T, edit ...func(*nsbed.ECMPOptions)) *nsbed.ECMP {
	t.Helper()
	needBins(t)
	frrtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	o := nsbed.ECMPOptions{Bins: bins, EAL: ecmpEAL(), Bed: bedOptions(t)}
	for _, f := range edit {
		f(&o)
	}
	e, err := nsbed.StartECMP(ctx, o)
	if err != nil {
		t.Fatalf("start ECMP testbed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, a := range e.Appliances {
				if a.Appliance != nil {
					t.Logf("%s dsrlb log (end):\n%s", a.Name, a.Proc.Tail(30))
				}
			}
			t.Logf("router logs in %s:\n%s", e.Router.Dir, ecmpLastLines(e.Router.Logs(), 40))
		}
		if err := e.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	t.Logf("TIMING ECMP bed ready in %v: both appliances forwarding to every backend and in the router's ECMP set", time.Since(start).Round(time.Millisecond))
	return e
}

// ecmpEAL are the appliances' lcore arguments. By default each worker
// busy-polls a CPU of its own (A's worker on CPU 1, B's on CPU 0, each main
// lcore on the other); DSRLB_ECMP_LCORES=shared gives both "-l 0,1", so
// both workers share CPU 1.
func ecmpEAL() [2][]string {
	if os.Getenv("DSRLB_ECMP_LCORES") == "shared" {
		return [2][]string{{"-l", "0,1"}, {"-l", "0,1"}}
	}
	return [2][]string{{"--lcores", "0@0,1@1"}, {"--lcores", "0@1,1@0"}}
}

func ecmpPct(part, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(part) / float64(total)
}

func ecmpLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
