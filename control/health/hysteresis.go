package health

// State is a backend's health as seen by its monitor.
type State uint8

// Health states. A monitored backend starts Unknown and counts as not
// healthy until its first `rise` consecutive successes.
const (
	Unknown State = iota // no verdict yet; not healthy
	Down                 // failed `fall` consecutive probes
	Up                   // passed `rise` consecutive probes
)

// String returns "unknown", "down" or "up".
func (s State) String() string {
	switch s {
	case Down:
		return "down"
	case Up:
		return "up"
	default:
		return "unknown"
	}
}

// MarshalText writes s as its String, for JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// hysteresis is seesaw's rise/fall rule: a backend goes up after `rise`
// consecutive successes and down after `fall` consecutive failures; a
// result in between changes nothing but the counts. The zero value is
// Unknown with no results.
type hysteresis struct {
	state      State
	succ, fail int // consecutive counts; one of them is 0
}

// observe applies one probe result and returns whether the state changed.
// A failing backend of unknown state goes down after fall failures, so
// Status tells "never came up" from "not checked yet"; unknown and down
// are both unhealthy.
func (h *hysteresis) observe(ok bool, rise, fall int) bool {
	if ok {
		h.succ++
		h.fail = 0
		if h.state != Up && h.succ >= rise {
			h.state = Up
			return true
		}
		return false
	}
	h.fail++
	h.succ = 0
	if h.state != Down && h.fail >= fall {
		h.state = Down
		return true
	}
	return false
}
