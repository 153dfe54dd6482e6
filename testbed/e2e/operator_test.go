package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// TestTraceAndEvents: on the running appliance, a trace of a client's
// next connection names the backend that then answers it (Maglev), and
// once the connection is made, the running worker's flow table entry
// (asked between bursts); the event stream, read by a real SSE client,
// carries an API change and a backend's health going down.
func TestTraceAndEvents(t *testing.T) {
	token := newAPIToken(t)
	l := startL2(t, nsbed.L2Options{Config: func(c *v1.Config) { c.API.Token = token }})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	nameOf := map[string]string{}
	for _, b := range l.Backends {
		nameOf[b.IP.String()] = b.Name
	}
	trace := func(sport int, flags string) v1.TraceResult {
		t.Helper()
		var res v1.TraceResult
		req := v1.TraceRequest{VIP: nsbed.L2VIP.String(), Protocol: "tcp", Src: fmt.Sprintf("%s:%d", nsbed.L2ClientIP, sport),
			DstPort: 80, Flags: flags}
		if err := l.Appliance.Change(ctx, http.MethodPost, "/api/v1/trace", req, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}

	t.Run("trace agrees with the data plane", func(t *testing.T) {
		const flows = 60
		seen := map[string]int{}
		for i := range flows {
			sport := 41000 + i
			before := trace(sport, "syn")
			if before.Verdict != "forward" || before.Decision != "maglev" || before.Flow != nil || before.Workers != 1 || before.WorkersAnswered != 1 {
				t.Fatalf("port %d before: %+v, want a new flow by Maglev, the one worker asked", sport, before)
			}
			out, err := l.Client.RunCtx(ctx, "curl", "-sS", "--max-time", "5", "--local-port", strconv.Itoa(sport), "-H", "Connection: close", l.URL("/"))
			if err != nil {
				t.Fatalf("curl from port %d: %v %s", sport, err, out)
			}
			if want := "backend=" + nameOf[before.Backend] + " "; !strings.HasPrefix(out, want) {
				t.Errorf("port %d: trace says %s (%s), answered %q", sport, before.Backend, nameOf[before.Backend], out)
			}
			seen[before.Backend]++
			after := trace(sport, "ack")
			if after.Decision != "flow_table" || after.Backend != before.Backend || after.Flow == nil || after.Flow.Worker != 0 || after.Flow.Backend != before.Backend {
				t.Errorf("port %d after its connection: %+v, want worker 0's flow table entry on %s", sport, after, before.Backend)
			}
			if e := after.Envelope; e == nil || e.DstMAC != macOfBackend(l, before.Backend) || e.SrcMAC != l.ApplianceMAC || e.Mode != "l2" {
				t.Errorf("port %d: envelope %+v, want %s > %s", sport, after.Envelope, l.ApplianceMAC, macOfBackend(l, before.Backend))
			}
		}
		if len(seen) != len(l.Backends) {
			t.Errorf("%d flows went to %v: want every backend", flows, seen)
		}
	})

	t.Run("event stream", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.Appliance.API+"/api/v1/events", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := l.Appliance.NS.HTTPClient(true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		events := make(chan v1.Event, 16)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					var ev v1.Event
					if json.Unmarshal([]byte(data), &ev) == nil {
						events <- ev
					}
				}
			}
			close(events)
		}()
		next := func(what string) v1.Event {
			t.Helper()
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("stream ended waiting for %s", what)
				}
				return ev
			case <-time.After(20 * time.Second):
				t.Fatalf("no event for %s within 20s", what)
			}
			return v1.Event{}
		}
		be := l.Backends[0]
		patch := v1.BackendPatch{Weight: new(int)}
		*patch.Weight = 2
		if err := l.Appliance.Change(ctx, http.MethodPatch, "/api/v1/services/web/backends/"+be.IP.String(), patch, nil); err != nil {
			t.Fatal(err)
		}
		ev := next("the weight change")
		if ev.Kind != "config" || ev.Object != "service web/backend "+be.IP.String() || !strings.HasPrefix(ev.Reason, "backend changed: weight 2 (API, from ") {
			t.Errorf("config event %+v", ev)
		}
		if err := be.Proc.Stop(5 * time.Second); err != nil {
			t.Logf("stopping %s: %v", be.Name, err)
		}
		for {
			ev = next("a backend going down")
			if ev.Kind == "health" && ev.Data["state"] == "down" {
				break
			}
		}
		if !strings.HasSuffix(ev.Object, "/backend "+be.IP.String()) || ev.Data["from"] != "up" || ev.Seq < 2 {
			t.Errorf("health event %+v, want %s up -> down", ev, be.IP)
		}
		t.Logf("health event: %d %s %s: %s", ev.Seq, ev.Kind, ev.Object, ev.Reason)
	})
}

// macOfBackend returns the MAC of the backend with address ip.
func macOfBackend(l *nsbed.L2, ip string) string {
	for _, b := range l.Backends {
		if b.IP.String() == ip {
			return b.MAC
		}
	}
	return ""
}
