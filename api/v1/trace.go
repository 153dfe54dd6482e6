package v1

// TraceRequest is the body of POST /api/v1/trace: a packet to trace
// through the data plane, described by its flow.
type TraceRequest struct {
	VIP      string `json:"vip"`
	Protocol string `json:"protocol"` // tcp or udp
	// Src is the client's address and port, IP:PORT or [IPv6]:PORT, of
	// the VIP's family.
	Src     string `json:"src"`
	DstPort int    `json:"dport"`
	// Flags are the TCP flags, comma-separated (syn, ack, fin, rst, psh);
	// default syn. Ignored for udp.
	Flags string `json:"flags,omitempty"`
	// Port names the receiving port; default the first.
	Port string `json:"port,omitempty"`
	// Size is the payload length in bytes (default 0); with DF set, a
	// packet too big for the envelope traces to fragmentation needed.
	Size int `json:"size,omitempty"`
}

// Trace verdicts.
const (
	TraceForward    = "forward"
	TraceKernel     = "kernel"
	TraceDrop       = "drop"
	TraceFragNeeded = "frag_needed"
)

// Trace decisions: how the backend was chosen.
const (
	TraceByFlowTable = "flow_table"
	TraceByMaglev    = "maglev"
)

// TraceResult is the answer of POST /api/v1/trace: what the data plane
// does with the packet, found by running it through the workers' code on
// the published snapshot without touching their state.
type TraceResult struct {
	// Generation is the snapshot traced.
	Generation uint64 `json:"generation"`
	// Verdict is forward, kernel, drop or frag_needed (an ICMP
	// fragmentation needed goes back to the client).
	Verdict string `json:"verdict"`
	// DropReason is the counter the drop is counted under.
	DropReason string `json:"drop_reason,omitempty"`
	// Reason says the outcome and why in a sentence.
	Reason  string `json:"reason"`
	Service string `json:"service,omitempty"`
	Mode    string `json:"mode,omitempty"`
	Backend string `json:"backend,omitempty"`
	// Decision is flow_table (an established flow keeps its backend) or
	// maglev (a new flow).
	Decision string `json:"decision,omitempty"`
	// Flow is the flow table entry that decided, or that Maglev replaced.
	Flow *TraceFlow `json:"flow,omitempty"`
	// Maglev is where the flow lands in the service's Maglev table: where
	// a new flow goes.
	Maglev *TraceMaglev `json:"maglev,omitempty"`
	// Backends are the service's backends as the snapshot has them.
	Backends []TraceBackend `json:"backends,omitempty"`
	// Envelope is how the packet leaves (forward, frag_needed).
	Envelope *TraceEnvelope `json:"envelope,omitempty"`
	// Workers is how many worker lcores were asked for their flow table
	// entry, WorkersAnswered how many answered within a second.
	Workers         int `json:"workers"`
	WorkersAnswered int `json:"workers_answered"`
}

// TraceFlow is a worker's flow table entry for the traced flow.
type TraceFlow struct {
	Worker  int    `json:"worker"`
	Backend string `json:"backend"`
	// State is syn, established, closing, udp or new.
	State       string `json:"state"`
	ExpiresInMS int64  `json:"expires_in_ms"`
	// Remapped: the entry's backend no longer carries flows (down or
	// gone), so Maglev chose again.
	Remapped bool `json:"remapped,omitempty"`
}

// TraceMaglev is the flow's place in the Maglev table.
type TraceMaglev struct {
	Hash      uint32 `json:"hash"`
	Slot      uint32 `json:"slot"`
	TableSize int    `json:"table_size"`
	// Backend is the slot's backend; empty when no backend takes new
	// flows.
	Backend string `json:"backend,omitempty"`
}

// TraceBackend is one backend of the traced service.
type TraceBackend struct {
	IP     string `json:"ip"`
	Weight uint32 `json:"weight"`
	// Forwarding is active (takes new flows), drain or down.
	Forwarding string `json:"forwarding"`
	// Usable: takes new flows (active, weight above 0).
	Usable bool `json:"usable"`
}

// TraceEnvelope is the packet as it leaves.
type TraceEnvelope struct {
	Mode       string `json:"mode,omitempty"`
	EgressPort string `json:"egress_port"`
	SrcMAC     string `json:"src_mac"`
	DstMAC     string `json:"dst_mac"`
	// NextHop is the backend (on-link) or the gateway the frame is sent to.
	NextHop string `json:"next_hop,omitempty"`
	// OuterSrc, OuterDst and OuterProto are the envelope's IPv4 or IPv6
	// header in ipip and gre modes (protocol 4, 41 or 47).
	OuterSrc   string `json:"outer_src,omitempty"`
	OuterDst   string `json:"outer_dst,omitempty"`
	OuterProto int    `json:"outer_proto,omitempty"`
	// Length is the frame's length in bytes.
	Length int `json:"length"`
}
