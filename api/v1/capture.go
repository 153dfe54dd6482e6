package v1

import "time"

// CaptureRequest is the body of POST /api/v1/captures: capture the packets
// to a VIP (optionally only those sent to one backend) as received and as
// sent, until Count pairs or Duration, whichever comes first.
type CaptureRequest struct {
	VIP     string `json:"vip"`
	Backend string `json:"backend,omitempty"`
	// Count is the most packets (pairs) kept; default 1000.
	Count int `json:"count,omitempty"`
	// Duration is the longest the capture runs, e.g. "30s"; default 10s.
	Duration string `json:"duration,omitempty"`
	// SnapLen is the most bytes kept of each packet; default 256.
	SnapLen int `json:"snaplen,omitempty"`
}

// Capture states.
const (
	CaptureRunning = "running"
	CaptureDone    = "done"
)

// CaptureStatus is the state of a capture (POST and GET
// /api/v1/captures/ID); its packets are at /api/v1/captures/ID/pcap.
type CaptureStatus struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	VIP      string `json:"vip"`
	Backend  string `json:"backend,omitempty"`
	Count    int    `json:"count"`
	Duration string `json:"duration"`
	SnapLen  int    `json:"snaplen"`
	// Packets is the number of packets kept, each as received and, when
	// forwarded, as sent (a pcapng record per direction).
	Packets int `json:"packets"`
	// Lost counts matching packets a worker could not keep: its ring was
	// full (the capture never slows forwarding down).
	Lost    uint64    `json:"lost"`
	Started time.Time `json:"started"`
	// Ended and Reason (count reached, duration elapsed, stopped) are set
	// once done.
	Ended  *time.Time `json:"ended,omitempty"`
	Reason string     `json:"reason,omitempty"`
}
