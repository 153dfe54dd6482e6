package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
)

// TestEventsConfigChanges: every accepted change is a config event naming
// the object, what was set and from where; a rejected one is none.
func TestEventsConfigChanges(t *testing.T) {
	f := newFixture(t, testToken)
	steps := []struct {
		method, path, body string
		status             int
		object, reason     string
	}{
		{"PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"state":"drain","weight":3}`, 200,
			"service web/backend 192.0.2.21", "backend changed: weight 3, state drain (API, from 192.0.2.1)"},
		{"PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"weight":5000}`, 400, "", ""},
		{"POST", "/api/v1/services/web/backends", `{"ip":"192.0.2.23"}`, 201,
			"service web/backend 192.0.2.23", "backend added (API, from 192.0.2.1)"},
		{"DELETE", "/api/v1/services/dns", "", 204, "service dns", "service deleted (API, from 192.0.2.1)"},
		{"PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"state":"enabled"}`, 401, "", ""},
	}
	var want []v1.Event
	for i, s := range steps {
		var opts []func(*http.Request)
		if s.status == 401 {
			opts = append(opts, header("Authorization", ""))
		}
		if w := f.do(s.method, s.path, s.body, opts...); w.Code != s.status {
			t.Fatalf("step %d: %s %s = %d, want %d: %s", i, s.method, s.path, w.Code, s.status, w.Body)
		}
		if s.object != "" {
			want = append(want, v1.Event{Seq: uint64(len(want) + 1), Kind: "config", Object: s.object, Reason: s.reason})
		}
	}
	w := f.do("GET", "/api/v1/events", "")
	got := decodeJSON[v1.EventList](t, w).Events
	if len(got) != len(want) {
		t.Fatalf("events = %+v, want %d", got, len(want))
	}
	for i := range want {
		g := got[i]
		if g.Seq != want[i].Seq || g.Kind != want[i].Kind || g.Object != want[i].Object || g.Reason != want[i].Reason {
			t.Errorf("event %d = {%d %s %q %q}, want {%d %s %q %q}", i, g.Seq, g.Kind, g.Object, g.Reason,
				want[i].Seq, want[i].Kind, want[i].Object, want[i].Reason)
		}
		if time.Since(g.Time) > time.Minute || g.Time.Location() != time.UTC {
			t.Errorf("event %d time = %v, want now in UTC", i, g.Time)
		}
	}
	if d := got[0].Data; d["change"] != "backend_update" || d["by"] != "192.0.2.1" || d["source"] != "api" || d["detail"] != "weight 3, state drain" {
		t.Errorf("event 1 data = %v", d)
	}

	since := decodeJSON[v1.EventList](t, f.do("GET", "/api/v1/events?since=2", "")).Events
	if len(since) != 1 || since[0].Seq != 3 {
		t.Errorf("?since=2 = %+v, want event 3 alone", since)
	}
	if w := f.do("GET", "/api/v1/events?since=x", ""); w.Code != 400 {
		t.Errorf("?since=x = %d, want 400", w.Code)
	}
	empty := newFixture(t, testToken)
	if body := empty.do("GET", "/api/v1/events", "").Body.String(); body != `{"events":[]}` {
		t.Errorf("no events = %s, want an empty list", body)
	}
}

// sseEvent is one server-sent event as a client parses it.
type sseEvent struct {
	id, event string
	data      v1.Event
}

// sseClient reads a server-sent-event stream over a real connection.
type sseClient struct {
	t    *testing.T
	resp *http.Response
	r    *bufio.Reader
}

func openSSE(t *testing.T, url string, hdr http.Header) *sseClient {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header = hdr
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("GET %s = %d %q, want 200 text/event-stream", url, resp.StatusCode, ct)
	}
	return &sseClient{t: t, resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event, skipping comments; it fails the test after
// 5 s without one.
func (c *sseClient) next() sseEvent {
	c.t.Helper()
	type result struct {
		ev  sseEvent
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var ev sseEvent
		var fields int
		for {
			line, err := c.r.ReadString('\n')
			if err != nil {
				ch <- result{err: err}
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "" && fields > 0:
				ch <- result{ev: ev}
				return
			case line == "" || strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				ev.id, fields = line[4:], fields+1
			case strings.HasPrefix(line, "event: "):
				ev.event, fields = line[7:], fields+1
			case strings.HasPrefix(line, "data: "):
				fields++
				if err := json.Unmarshal([]byte(line[6:]), &ev.data); err != nil {
					ch <- result{err: fmt.Errorf("data %q: %w", line, err)}
					return
				}
			default:
				ch <- result{err: fmt.Errorf("unexpected line %q", line)}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			c.t.Fatalf("event stream: %v", r.err)
		}
		return r.ev
	case <-time.After(5 * time.Second):
		c.t.Fatal("no event within 5s")
	}
	return sseEvent{}
}

// TestEventsStream: a real SSE client sees events as they are published,
// with id, event and data agreeing; ?since replays history first (with a
// gap where the history no longer reaches); the stream ends when the
// server shuts down.
func TestEventsStream(t *testing.T) {
	f := newFixture(t, testToken)
	f.events = control.NewEvents(3)
	f.srv.opts.Events = f.events
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	defer cancel()
	base := "http://" + ln.Addr().String() + "/api/v1/events"

	f.events.Publish(v1.EventHealth, "service web/backend 192.0.2.21", "before the stream", nil)
	live := openSSE(t, base, http.Header{"Accept": {"text/event-stream"}})
	follow := openSSE(t, base+"?follow=1", nil)
	f.events.Publish(v1.EventHealth, "service web/backend 192.0.2.21", "down: connection refused", map[string]string{"from": "up", "state": "down"})
	f.events.Publish(v1.EventBGP, "vip 198.51.100.1", "withdrawn", nil)
	for _, c := range []*sseClient{live, follow} {
		ev := c.next()
		if ev.id != "2" || ev.event != "health" || ev.data.Seq != 2 || ev.data.Reason != "down: connection refused" || ev.data.Data["state"] != "down" {
			t.Errorf("first streamed event = %+v, want seq 2 (not the one before the stream)", ev)
		}
		if ev := c.next(); ev.id != "3" || ev.event != "bgp" || ev.data.Object != "vip 198.51.100.1" {
			t.Errorf("second streamed event = %+v, want seq 3", ev)
		}
	}
	for i := range 3 {
		f.events.Publish(v1.EventConfig, "service web", strconv.Itoa(i), nil)
	}
	// History holds 4..6: since=1 skips 2 and 3, a gap the client sees.
	replay := openSSE(t, base+"?since=1", http.Header{"Accept": {"text/event-stream"}})
	if ev := replay.next(); ev.id != "4" {
		t.Errorf("?since=1 with history 4..6 starts at %s, want 4", ev.id)
	}
	resumed := openSSE(t, base, http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"5"}})
	if ev := resumed.next(); ev.id != "6" {
		t.Errorf("Last-Event-ID 5 resumes at %s, want 6", ev.id)
	}

	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown with open streams took %v", d)
	}
}
