package health

import (
	"strings"
	"testing"
)

func TestHealthObserveHysteresis(t *testing.T) {
	tests := []struct {
		desc       string
		rise, fall int
		results    string // + success, - failure
		want       string // state after each result: u unknown, d down, U up
		changes    int
	}{
		{"rise 1 up at first success", 1, 1, "+", "U", 1},
		{"rise 3 needs three in a row", 3, 2, "++-+++", "uuuuuU", 1},
		{"fall 2 ignores one failure", 1, 2, "+-+-+", "UUUUU", 1},
		{"fall 2 then down", 1, 2, "+--", "UUd", 2},
		{"unknown goes down after fall", 2, 3, "---+", "uudd", 1},
		{"flapping never rises nor falls", 2, 2, "+-+-+-", "uuuuuu", 0},
		{"up, down, up", 2, 2, "++--++", "uUUddU", 3},
		{"down then rise", 2, 1, "--++", "dddU", 2},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var m hysteresis
			var got strings.Builder
			changes := 0
			for _, r := range tc.results {
				if m.observe(r == '+', tc.rise, tc.fall) {
					changes++
				}
				got.WriteByte(map[State]byte{Unknown: 'u', Down: 'd', Up: 'U'}[m.state])
			}
			if got.String() != tc.want || changes != tc.changes {
				t.Errorf("results %s: got states %s with %d changes, want %s with %d", tc.results, got.String(), changes, tc.want, tc.changes)
			}
		})
	}
}
