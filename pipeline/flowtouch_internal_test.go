package pipeline

import (
	"testing"
	"time"
)

// TestTouchStep: Touch writes an entry when its state changes or its
// expiry moves by a step (a sixteenth of the timeout, at most a second) or
// more, and leaves it untouched in between; an idle entry expires at most
// one step early.
func TestTouchStep(t *testing.T) {
	to := FlowTimeouts{TCPSyn: 5 * time.Second, TCPEstablished: 300 * time.Second, TCPClosing: 10 * time.Second, UDP: 8 * time.Millisecond}
	ft := NewFlowTable(64, to)
	tcp := FlowKey{Src: 1, Dst: 2, SrcPort: 3, DstPort: 80, Proto: ProtoTCP}
	e := ft.Insert(&tcp, 7, 1000, 0, 1)
	for _, st := range []struct {
		desc    string
		flags   uint8
		now     uint32
		state   uint8
		expires uint32
	}{
		{"first SYN: state set", TCPFlagSYN, 1000, flowStateSyn, 6000},
		{"SYN again 312 ms later: under the step (5000/16 = 312), kept", TCPFlagSYN, 1311, flowStateSyn, 6000},
		{"SYN 312 ms after the write: moved", TCPFlagSYN, 1312, flowStateSyn, 6312},
		{"ACK: state change, written at once", TCPFlagACK, 1313, flowStateEstablished, 301313},
		{"ACK 999 ms later: under the step (capped at 1 s), kept", TCPFlagACK, 2312, flowStateEstablished, 301313},
		{"ACK 1 s after the write: moved", TCPFlagACK, 2313, flowStateEstablished, 302313},
		{"SYN on an established flow: kept (no state change)", TCPFlagSYN, 2314, flowStateEstablished, 302313},
		{"FIN: closing, written at once (the expiry moves back)", TCPFlagFIN | TCPFlagACK, 2315, flowStateClosing, 12315},
		{"ACK after FIN: still closing, under the step (625)", TCPFlagACK, 2939, flowStateClosing, 12315},
	} {
		ft.Touch(e, st.flags, st.now)
		if e.state != st.state || e.expires != st.expires {
			t.Errorf("%s: state %d expires %d, want %d %d", st.desc, e.state, e.expires, st.state, st.expires)
		}
	}
	// The last packet (2939) did not move the expiry: the entry lives
	// until 12315, 10000 - 624 ms after it, within one step of the timeout.
	if ft.Lookup(&tcp, 7, 12314) == nil || ft.Lookup(&tcp, 7, 12315) != nil {
		t.Errorf("the closing entry should live until 12315 and no longer")
	}

	// A timeout under 16 ms has no step: every packet writes.
	udp := FlowKey{Src: 1, Dst: 2, SrcPort: 3, DstPort: 53, Proto: ProtoUDP}
	u := ft.Insert(&udp, 9, 100, 0, 1)
	for now := uint32(100); now < 110; now++ {
		ft.Touch(u, 0, now)
		if u.state != flowStateUDP || u.expires != now+8 {
			t.Fatalf("UDP at %d: state %d expires %d, want %d %d", now, u.state, u.expires, flowStateUDP, now+8)
		}
	}
}

// TestTouchStepDefaults pins the steps of the default timeouts.
func TestTouchStepDefaults(t *testing.T) {
	ft := NewFlowTable(64, DefaultFlowTimeouts)
	want := [5]uint32{312, 312, 1000, 625, 1000} // new, SYN 5 s, established 300 s, closing 10 s, UDP 30 s
	if ft.step != want {
		t.Errorf("steps %v, want %v", ft.step, want)
	}
}
