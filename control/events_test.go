package control

import (
	"fmt"
	"sync"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

func seqs(evs []v1.Event) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// TestEventsRing: the bus keeps the latest events, numbered without holes,
// and Since shows a reader that fell behind where it lost events.
func TestEventsRing(t *testing.T) {
	e := NewEvents(4)
	if got := e.Since(0); len(got) != 0 {
		t.Fatalf("empty bus: Since(0) = %v", got)
	}
	clock := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)
	e.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	data := map[string]string{"from": "up"}
	for i := 1; i <= 10; i++ {
		e.Publish(v1.EventHealth, fmt.Sprintf("service web/backend 192.0.2.%d", i), "down", data)
	}
	data["from"] = "changed after publish"
	for _, tc := range []struct {
		since uint64
		want  string
	}{
		{0, "[7 8 9 10]"}, {2, "[7 8 9 10]"}, {7, "[8 9 10]"}, {9, "[10]"}, {10, "[]"}, {99, "[]"},
	} {
		if got := fmt.Sprint(seqs(e.Since(tc.since))); got != tc.want {
			t.Errorf("Since(%d) = %s, want %s", tc.since, got, tc.want)
		}
	}
	ev := e.Since(9)[0]
	want := v1.Event{Seq: 10, Time: time.Date(2026, 12, 3, 18, 0, 10, 0, time.UTC), Kind: "health",
		Object: "service web/backend 192.0.2.10", Reason: "down", Data: map[string]string{"from": "up"}}
	if fmt.Sprint(ev) != fmt.Sprint(want) {
		t.Errorf("event 10 = %+v, want %+v", ev, want)
	}
	ev.Data["from"] = "changed by a reader"
	if got := e.Since(9)[0].Data["from"]; got != "up" {
		t.Errorf("a reader changed the kept event: from = %q", got)
	}
	if e.Last() != 10 {
		t.Errorf("Last = %d, want 10", e.Last())
	}
}

// TestEventsSubscribersNeverBlock: a subscriber that never reads holds up
// no publisher; one that reads finds every event with Since.
func TestEventsSubscribersNeverBlock(t *testing.T) {
	e := NewEvents(DefaultEventHistory)
	_, stopIdle := e.Subscribe() // never read
	defer stopIdle()
	wake, stop := e.Subscribe()
	defer stop()

	const publishers, each = 4, 200
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e.Publish(v1.EventConfig, fmt.Sprintf("service s%d", p), fmt.Sprint(i), nil)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var got []v1.Event
	var last uint64
	for last < publishers*each {
		select {
		case <-wake:
		case <-done:
		}
		evs := e.Since(last)
		got = append(got, evs...)
		if len(evs) > 0 {
			last = evs[len(evs)-1].Seq
		}
	}
	for i, ev := range got {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: a hole", i, ev.Seq)
		}
	}
	if len(got) != publishers*each {
		t.Errorf("read %d events, want %d", len(got), publishers*each)
	}
	stop()
	e.Publish(v1.EventBGP, "peer 192.0.2.1", "established", nil) // no one to wake: must not block
}

// TestEventsNil: a nil bus drops events, so publishers need no check.
func TestEventsNil(t *testing.T) {
	var e *Events
	e.Publish(v1.EventHealth, "x", "y", nil)
	if e.Since(0) != nil || e.Last() != 0 {
		t.Error("a nil bus kept an event")
	}
	_, stop := e.Subscribe()
	stop()
}
