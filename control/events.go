package control

import (
	"maps"
	"sync"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// DefaultEventHistory is the number of events an Events bus keeps.
const DefaultEventHistory = 1000

// Events is the bus of operator events (health, config, BGP, passive
// detection): a bounded ring of the latest events, numbered from 1, and
// subscribers woken on every publish. Publish never blocks on a reader: a
// subscriber is only signalled (signals coalesce) and reads the ring with
// Since, so a reader that falls more than the ring's size behind finds a
// gap in the sequence numbers where it lost events. Safe for concurrent
// use; a nil *Events drops every event, so a component may publish
// without checking whether anyone listens.
type Events struct {
	mu   sync.Mutex
	ring []v1.Event // ring[(seq-1) % len(ring)] holds event seq
	last uint64     // seq of the latest event; 0 before the first
	subs map[chan struct{}]struct{}
	now  func() time.Time
}

// NewEvents returns a bus that keeps the latest history events (at least
// one).
func NewEvents(history int) *Events {
	return &Events{ring: make([]v1.Event, max(history, 1)), subs: map[chan struct{}]struct{}{}, now: time.Now}
}

// Publish records an event now, with the next sequence number, and wakes
// the subscribers. data is copied.
func (e *Events) Publish(kind, object, reason string, data map[string]string) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last++
	ev := v1.Event{Seq: e.last, Time: e.now().UTC(), Kind: kind, Object: object, Reason: reason}
	if len(data) > 0 {
		ev.Data = maps.Clone(data)
	}
	e.ring[(e.last-1)%uint64(len(e.ring))] = ev
	for ch := range e.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is pending: the reader will find this event too
		}
	}
}

// Since returns the kept events with a sequence number above seq, oldest
// first. Since(0) is the whole history.
func (e *Events) Since(seq uint64) []v1.Event {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	first := uint64(1)
	if n := uint64(len(e.ring)); e.last > n {
		first = e.last - n + 1
	}
	first = max(first, seq+1)
	if first > e.last {
		return nil
	}
	out := make([]v1.Event, 0, e.last-first+1)
	for s := first; s <= e.last; s++ {
		ev := e.ring[(s-1)%uint64(len(e.ring))]
		ev.Data = maps.Clone(ev.Data)
		out = append(out, ev)
	}
	return out
}

// Last returns the sequence number of the latest event, 0 before any.
func (e *Events) Last() uint64 {
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// Subscribe returns a channel that receives after every Publish from now
// on (signals coalesce: read the events with Since) and a function that
// ends the subscription. On a nil bus the channel never receives.
func (e *Events) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	if e == nil {
		return ch, func() {}
	}
	e.mu.Lock()
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.subs, ch)
		e.mu.Unlock()
	}
}
