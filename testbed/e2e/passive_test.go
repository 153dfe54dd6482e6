package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// TestPassiveDetection: in the L2 bed one backend starts to drop every
// SYN to port 80 silently (nftables on the backend: the clients' to the
// VIP and its active monitor's to its own address). The active monitor is
// slow (interval 5s, fall 5: 25 s to notice); clients keep connecting.
// Passive detection holds the backend down from the SYNs its clients send
// again, well before the monitor's fall count; new connections go to the
// other backends; after the hold the backend takes no flows while the
// monitor's probes fail, and comes back once they pass rise times.
func TestPassiveDetection(t *testing.T) {
	const (
		interval = 5 * time.Second
		fall     = 5
		rise     = 2
		hold     = 15 * time.Second
	)
	l := startL2(t, nsbed.L2Options{Config: func(c *v1.Config) {
		for i := range c.Services {
			if c.Services[i].Protocol != "tcp" {
				continue
			}
			h := c.Services[i].Health
			h.Interval, h.Timeout, h.Rise, h.Fall = v1.Duration(interval), v1.Duration(time.Second), rise, fall
			h.Passive = &v1.Passive{SynRetries: 1, Unanswered: 3, Window: v1.Duration(10 * time.Second), Hold: v1.Duration(hold)}
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	be1 := l.Backends[0]
	web := func() (*v1.BackendStatus, error) {
		st, err := l.Appliance.Status(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range st.Services {
			for i, b := range s.Backends {
				if s.Name == "web" && b.IP == be1.IP.String() {
					return &s.Backends[i], nil
				}
			}
		}
		return nil, fmt.Errorf("no backend %s in service web", be1.IP)
	}
	// waitFor polls web's be1 every 100 ms until ok, for at most d.
	waitFor := func(what string, d time.Duration, ok func(*v1.BackendStatus) bool) *v1.BackendStatus {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			b, err := web()
			if err != nil {
				t.Fatal(err)
			}
			if ok(b) {
				return b
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v; be1 is %+v", what, d, *b)
			}
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	statsBefore := backendStats(ctx, t, l.Appliance, be1.IP.String())

	const rules = `table inet dsrlb_passive {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 80 tcp flags & (syn | ack) == syn drop
	}
}`
	if out, err := be1.NS.Run("sh", "-c", "echo '"+rules+"' | nft -f -"); err != nil {
		t.Fatalf("nft on be1: %v\n%s", err, out)
	}
	dropping := time.Now()

	// Clients keep connecting: four loops of new connections.
	cctx, stopClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cctx.Err() == nil {
				nsbed.CurlMany(cctx, l.Client, l.URL("/"), 10)
			}
		}()
	}
	held := waitFor("held down by passive detection", fall*interval, func(b *v1.BackendStatus) bool { return b.Forwarding == "held" })
	heldAfter := time.Since(dropping)
	stopClients()
	wg.Wait()
	t.Logf("be1 held down %v after it began to drop SYNs (the active monitor needs %d x %v): %s", heldAfter.Round(time.Millisecond), fall, interval, held.Passive)
	if heldAfter > fall*interval/2 {
		t.Errorf("held after %v, want well before the monitor's %v", heldAfter, fall*interval)
	}
	if !strings.HasPrefix(held.Passive, "held down by passive detection until ") || !strings.Contains(held.Passive, "unanswered SYNs in 10s") ||
		held.HeldUntil == nil || held.Health != "unhealthy" {
		t.Errorf("held backend's status: got %+v", *held)
	}
	if n, err := l.Appliance.LogEvents("passive_hold"); err != nil || n < 1 {
		t.Errorf("passive_hold log lines: got %d (%v), want at least 1", n, err)
	}
	var evs v1.EventList
	if err := l.Appliance.Get(ctx, "/api/v1/events", &evs); err != nil {
		t.Fatal(err)
	}
	holdEvent := false
	for _, e := range evs.Events {
		if e.Kind == v1.EventPassive && e.Object == "service web/backend "+be1.IP.String() && e.Reason == held.Passive && e.Data["until"] != "" {
			holdEvent = true
		}
	}
	if !holdEvent {
		t.Errorf("GET /api/v1/events: no passive event for be1 saying %q: %+v", held.Passive, evs.Events)
	}
	if st := backendStats(ctx, t, l.Appliance, be1.IP.String()); st.UnansweredFlows-statsBefore.UnansweredFlows < 3 ||
		st.SynRetransmits-statsBefore.SynRetransmits < 3 {
		t.Errorf("be1 counted %d SYNs sent again, %d unanswered flows; want at least 3 each",
			st.SynRetransmits-statsBefore.SynRetransmits, st.UnansweredFlows-statsBefore.UnansweredFlows)
	}

	t.Run("new connections go to the others while held", func(t *testing.T) {
		// What each backend receives, before its nftables: tshark counts
		// the SYNs to the VIP.
		caps := make([]*nsbed.Capture, len(l.Backends))
		for i, be := range l.Backends {
			// Clients' SYNs only: the health probes through the VIP
			// (health.via: vip) come from the probe ports, and the
			// active monitor keeps probing a held backend.
			c, err := be.NS.StartCapture(be.Iface, "tcp dst port 80 and dst host "+nsbed.L2VIP.String()+" and not src portrange 16384-32767", 128)
			if err != nil {
				t.Fatal(err)
			}
			caps[i] = c
		}
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), 60)
		if err != nil {
			t.Fatal(err)
		}
		if got.OK != 60 || got.PerBackend[be1.Name] != 0 || len(got.PerBackend) != 2 {
			t.Errorf("got %d of 60 answers (%s; %v), want all from be2 and be3", got.OK, got.Spread(), got.Errors)
		}
		syns := 0
		for i, c := range caps {
			if _, err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			rows, err := c.Fields(ctx, "tcp.flags.syn == 1 && tcp.flags.ack == 0 && ip.dst == "+nsbed.L2VIP.String(), "tcp.srcport")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s received %d SYNs to the VIP", l.Backends[i].Name, len(rows))
			if i == 0 && len(rows) != 0 {
				t.Errorf("the held backend received %d SYNs to the VIP, want none", len(rows))
			}
			syns += len(rows)
		}
		if syns < 60 {
			t.Errorf("the backends received %d SYNs to the VIP, want at least 60", syns)
		}
	})

	t.Run("after the hold only the active monitor re-admits it", func(t *testing.T) {
		until := *held.HeldUntil
		if time.Until(until) < 2*time.Second {
			t.Fatalf("the hold ends at %v, too soon to watch it", until)
		}
		// SYNs still dropped: past the hold's end the backend stays out.
		for time.Now().Before(until.Add(3 * time.Second)) {
			b, err := web()
			if err != nil {
				t.Fatal(err)
			}
			if b.Forwarding == "active" {
				t.Fatalf("be1 active again at %v (hold until %v) while its probes fail: %+v", time.Now().UTC(), until, *b)
			}
			select { // sampling the status, not waiting for an event
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
		b := waitFor("still out", time.Second, func(b *v1.BackendStatus) bool { return b.Forwarding != "active" })
		t.Logf("3 s after the hold: forwarding %s, health %s, %s", b.Forwarding, b.Health, b.Passive)

		if out, err := be1.NS.Run("nft", "delete", "table", "inet", "dsrlb_passive"); err != nil {
			t.Fatalf("nft on be1: %v\n%s", err, out)
		}
		restored := time.Now()
		waitFor("active again after rise probes", (rise+2)*interval, func(b *v1.BackendStatus) bool { return b.Forwarding == "active" })
		t.Logf("be1 active %v after it answers again (rise %d x %v)", time.Since(restored).Round(time.Millisecond), rise, interval)
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), 90)
		if err != nil {
			t.Fatal(err)
		}
		if got.OK != 90 || len(l.Missing(got.PerBackend)) != 0 {
			t.Errorf("got %d of 90 answers (%s; %v), want every backend", got.OK, got.Spread(), got.Errors)
		}
	})
}

// backendStats returns the counters of backend ip of service web.
func backendStats(ctx context.Context, t *testing.T, a *nsbed.Appliance, ip string) v1.BackendStats {
	t.Helper()
	var st v1.Stats
	if err := a.Get(ctx, "/api/v1/stats", &st); err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Services {
		for _, b := range s.Backends {
			if s.Name == "web" && b.IP == ip {
				return b
			}
		}
	}
	t.Fatalf("no backend %s of web in the stats", ip)
	return v1.BackendStats{}
}
