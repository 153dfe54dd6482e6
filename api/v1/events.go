package v1

import "time"

// Event is one change an operator may want to know about: a backend's
// health, a config change, a BGP announcement or session, a passive
// failure detection. It is an element of GET /api/v1/events and the data
// of one server-sent event of its stream.
type Event struct {
	// Seq numbers the events of one process from 1, without holes: a gap
	// between two events a client received means it lost the ones between
	// (a slow stream, or history that no longer holds them).
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Kind is one of the EventKind constants.
	Kind string `json:"kind"`
	// Object names what changed: "service web/backend 192.0.2.21",
	// "service web", "peer 192.0.2.1", "vip 203.0.113.10".
	Object string `json:"object"`
	// Reason says what happened and why, in a sentence.
	Reason string `json:"reason"`
	// Data holds the details as stable keys (from, state, by, change...).
	Data map[string]string `json:"data,omitempty"`
}

// Event kinds.
const (
	EventHealth  = "health"
	EventConfig  = "config"
	EventBGP     = "bgp"
	EventPassive = "passive"
)

// EventList is the body of GET /api/v1/events: the events kept in memory
// (a bounded history), oldest first, newest last.
type EventList struct {
	Events []Event `json:"events"`
}
