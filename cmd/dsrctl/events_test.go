package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// TestEvents: `dsrctl events` prints the kept events, -o json the list;
// `-f` prints new events as the appliance publishes them and reports a gap.
func TestEvents(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", e.file("s.yaml", services))
	e.mustRun("drain", "web", "192.0.2.21")
	out := e.mustRun("events")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("events: got %d lines, want 2 (apply, drain):\n%s", len(lines), out)
	}
	today := time.Now().UTC().Format("2006-01-02T")
	for i, want := range []string{"1 config services every service replaced: 3 services (API, from 127.0.0.1)",
		"2 config service web/backend 192.0.2.21 backend changed: state drain (API, from 127.0.0.1)"} {
		f := strings.Fields(lines[i])
		if got := strings.Join(f[1:], " "); got != want || !strings.HasPrefix(f[0], today) {
			t.Errorf("line %d = %q, want the time and %q", i, lines[i], want)
		}
	}
	var l v1.EventList
	if err := json.Unmarshal([]byte(e.mustRun("events", "-o", "json", "--since", "1")), &l); err != nil || len(l.Events) != 1 || l.Events[0].Seq != 2 {
		t.Errorf("events -o json --since 1 = %+v, %v; want event 2 alone", l, err)
	}

	type result struct {
		code     int
		out, err string
	}
	follow := func(args ...string) chan result {
		ch := make(chan result, 1)
		go func() {
			code, out, errOut := e.run(append([]string{"events", "-f"}, args...)...)
			ch <- result{code, out, errOut}
		}()
		return ch
	}
	wait := func(ch chan result) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("dsrctl events -f did not finish")
		}
		return result{}
	}
	// History first (events 1 and 2), then the two published while it runs.
	ch := follow("--count", "4", "-o", "json")
	// Whenever the client connects, it reads the history from event 1.
	e.events.Publish(v1.EventHealth, "service web/backend 192.0.2.22", "down (tcp check): connection refused", nil)
	e.events.Publish(v1.EventBGP, "peer 192.0.2.1", "session established", nil)
	r := wait(ch)
	if r.code != 0 {
		t.Fatalf("events -f = exit %d: %s", r.code, r.err)
	}
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSpace(r.out), "\n") {
		var ev v1.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		seqs = append(seqs, ev.Seq)
	}
	if len(seqs) != 4 || seqs[0] != 1 || seqs[3] != 4 {
		t.Errorf("events -f --count 4 got seqs %v, want 1..4", seqs)
	}

	// The bus keeps 5: after 4 more (8 in all) history is 4..8, so a client
	// resuming after 1 loses 2 and 3 and is told.
	for range 4 {
		e.mustRun("drain", "web", "192.0.2.21")
	}
	r = wait(follow("--since", "1", "--count", "1"))
	if r.code != 0 || !strings.Contains(r.err, "2 events lost (2..3)") || !strings.Contains(r.out, "\t4\tbgp\tpeer 192.0.2.1\tsession established") {
		t.Errorf("events -f --since 1 = exit %d, out %q, err %q; want event 4 and 2 lost", r.code, r.out, r.err)
	}
}
