package v1

// Stats is the JSON view of the workers' counters, summed and named after
// the snapshot's services and backends: the body of GET /api/v1/stats and
// the last stdout line of `dsrlb replay` and `dsrlb bench`.
type Stats struct {
	Generation uint64 `json:"generation"`
	Totals     Totals `json:"totals"`
	// Drops counts dropped packets by reason (the data plane's DropReason
	// names); every reason is present, zero or not, so scripts can rely on
	// the keys.
	Drops    map[string]uint64 `json:"drops"`
	Flows    FlowStats         `json:"flows"`
	Services []ServiceStats    `json:"services"`
	Workers  []WorkerStats     `json:"workers"`
	Changes  *Changes          `json:"changes,omitempty"`
}

// Totals are appliance-wide packet counters.
type Totals struct {
	RxPackets           uint64 `json:"rx_packets"`
	RxBytes             uint64 `json:"rx_bytes"`
	TxPackets           uint64 `json:"tx_packets"`
	TxBytes             uint64 `json:"tx_bytes"`
	ToKernel            uint64 `json:"to_kernel_packets"`
	FromKernel          uint64 `json:"from_kernel_packets"`
	Dropped             uint64 `json:"dropped_packets"`
	FragNeededSent      uint64 `json:"frag_needed_sent"`
	ICMPErrorsForwarded uint64 `json:"icmp_errors_forwarded"`
	IPOptions           uint64 `json:"ip_options"`
	// L4ChecksumsCompleted counts TCP and UDP checksums completed on ports
	// that read a kernel's frames (partial checksums of peers with
	// checksum offload).
	L4ChecksumsCompleted uint64 `json:"l4_checksums_completed"`
	// GSOSegmented counts TCP super-frames (longer than the receiving
	// port's MTU, from a peer's TSO/GSO or GRO) cut into segments;
	// GSOSegments the segments made.
	GSOSegmented uint64 `json:"gso_superframes_segmented"`
	GSOSegments  uint64 `json:"gso_segments"`
	// PacketTooBigSent counts ICMPv6 Packet Too Big replies generated.
	PacketTooBigSent uint64 `json:"packet_too_big_sent"`
	// ProbesSent counts health probes through the VIP sent to a backend;
	// ProbeReplies the backends' answers handed back to the probes.
	ProbesSent   uint64 `json:"probes_sent"`
	ProbeReplies uint64 `json:"probe_replies"`
}

// FlowStats are flow table counters, summed over workers.
type FlowStats struct {
	Entries   uint64 `json:"entries"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Evictions uint64 `json:"evictions"`
	Expired   uint64 `json:"expired"`
	Remapped  uint64 `json:"remapped"`
	// Stateless counts the packets of new flows forwarded without a flow
	// entry (over flows.new_flows_per_second, or the table full);
	// TableFull the new flows that found no way to take.
	Stateless uint64 `json:"stateless"`
	TableFull uint64 `json:"table_full"`
}

// ServiceStats are one service's counters.
type ServiceStats struct {
	Name      string         `json:"name"`
	Packets   uint64         `json:"packets"`
	Bytes     uint64         `json:"bytes"`
	NoBackend uint64         `json:"no_backend_drops"`
	Backends  []BackendStats `json:"backends"`
	// NewFlowLimited counts new flows dropped over the service's
	// limits.new_flows_per_second.
	NewFlowLimited uint64 `json:"new_flow_limit_drops"`
}

// BackendStats are one backend's counters.
type BackendStats struct {
	IP       string `json:"ip"`
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	NewFlows uint64 `json:"new_flows"`
	// SynRetransmits counts SYNs clients sent again on new flows of the
	// backend that saw no ACK; UnansweredFlows the flows that did so
	// health.passive.syn_retries times (default 2): passive detection's
	// evidence.
	SynRetransmits  uint64 `json:"syn_retransmits"`
	UnansweredFlows uint64 `json:"unanswered_flows"`
	// Probes counts health probes through the VIP sent to the backend.
	Probes uint64 `json:"probes"`
}

// WorkerStats are one worker lcore's counters.
type WorkerStats struct {
	Worker      int    `json:"worker"`
	RxPackets   uint64 `json:"rx_packets"`
	TxPackets   uint64 `json:"tx_packets"`
	Dropped     uint64 `json:"dropped_packets"`
	FlowEntries uint64 `json:"flow_entries"`
	Polls       uint64 `json:"polls"`
	BusyPolls   uint64 `json:"busy_polls"`
	// BusyRatio is BusyPolls/Polls since the worker started.
	BusyRatio float64 `json:"busy_ratio"`
	// IdleSleeps counts the worker's sleeps while idle
	// (dataplane.idle_sleep).
	IdleSleeps uint64 `json:"idle_sleeps"`
}

// Changes count config changes through the store since start.
type Changes struct {
	Accepted uint64 `json:"accepted"`
	Rejected uint64 `json:"rejected"`
}

// Service returns the stats of the service named name, if present.
func (st *Stats) Service(name string) (ServiceStats, bool) {
	for _, s := range st.Services {
		if s.Name == name {
			return s, true
		}
	}
	return ServiceStats{}, false
}
