package control

import (
	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
)

// CounterKind says how a value behaves over time, as Prometheus types it.
type CounterKind uint8

const (
	// KindCounter only grows; its metric name ends in _total.
	KindCounter CounterKind = iota
	// KindGauge goes up and down.
	KindGauge
)

// Counter is one row of the counters table: one value of the data plane's
// counters (C is pipeline.Counters, ServiceCounters or BackendCounters),
// the field of the JSON stats that shows it (J is the v1 document it
// belongs to) and the Prometheus metric that exports it. BuildStats makes
// the JSON stats from these tables and the API's /metrics the metrics, so
// a counter added here appears in both. The names are stable: scripts,
// dashboards and the testbed read them.
type Counter[C, J any] struct {
	// Metric is the Prometheus name after "dsrlb_"; empty for a value
	// shown per worker in JSON only (its sum is a metric of its own).
	Metric string
	// Help is the metric's help text.
	Help string
	Kind CounterKind
	// Read returns the value from one worker's, or the summed, counters.
	Read func(*C) uint64
	// JSON returns the field of the JSON stats that holds the value.
	JSON func(*J) *uint64
}

// TotalCounters are the appliance-wide counters, summed over workers: the
// totals and flows of the JSON stats. Drops by reason are not rows: every
// pipeline.DropReason but DropNone is one (its String is the JSON key and
// the metric's reason label).
var TotalCounters = []Counter[pipeline.Counters, v1.Stats]{
	{"rx_packets_total", "Packets received from the NICs.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.RxPackets }, func(s *v1.Stats) *uint64 { return &s.Totals.RxPackets }},
	{"rx_bytes_total", "Bytes received from the NICs.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.RxBytes }, func(s *v1.Stats) *uint64 { return &s.Totals.RxBytes }},
	{"tx_packets_total", "Packets sent out of the NICs.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.TxPackets }, func(s *v1.Stats) *uint64 { return &s.Totals.TxPackets }},
	{"tx_bytes_total", "Bytes sent out of the NICs.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.TxBytes }, func(s *v1.Stats) *uint64 { return &s.Totals.TxBytes }},
	{"to_kernel_packets_total", "Packets handed to the kernel (tap).", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.ToKernel }, func(s *v1.Stats) *uint64 { return &s.Totals.ToKernel }},
	{"from_kernel_packets_total", "Packets the kernel sent out through the tap.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FromKernel }, func(s *v1.Stats) *uint64 { return &s.Totals.FromKernel }},
	{"frag_needed_sent_total", "ICMP fragmentation-needed replies generated.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FragNeededSent }, func(s *v1.Stats) *uint64 { return &s.Totals.FragNeededSent }},
	{"icmp_errors_forwarded_total", "ICMP errors sent to the backend owning the flow.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.ICMPErrorsForwarded },
		func(s *v1.Stats) *uint64 { return &s.Totals.ICMPErrorsForwarded }},
	{"ip_options_total", "Forwarded VIP packets that carried IPv4 options.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.IPOptions }, func(s *v1.Stats) *uint64 { return &s.Totals.IPOptions }},
	{"l4_checksums_completed_total", "TCP and UDP checksums completed on ports that read a kernel's frames (partial checksums).", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.L4ChecksumsCompleted },
		func(s *v1.Stats) *uint64 { return &s.Totals.L4ChecksumsCompleted }},
	{"gso_superframes_segmented_total", "TCP super-frames (longer than the port MTU, from a peer's TSO/GSO/GRO) cut into segments.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.GSOSegmented }, func(s *v1.Stats) *uint64 { return &s.Totals.GSOSegmented }},
	{"gso_segments_total", "Segments made of TCP super-frames.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.GSOSegments }, func(s *v1.Stats) *uint64 { return &s.Totals.GSOSegments }},
	{"packet_too_big_sent_total", "ICMPv6 Packet Too Big replies generated.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.PacketTooBigSent }, func(s *v1.Stats) *uint64 { return &s.Totals.PacketTooBigSent }},
	{"probes_sent_total", "Health probes through the VIP sent to a backend.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.ProbesSent }, func(s *v1.Stats) *uint64 { return &s.Totals.ProbesSent }},
	{"probe_replies_total", "Backends' answers to health probes through the VIP handed to the probes.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.ProbeReplies }, func(s *v1.Stats) *uint64 { return &s.Totals.ProbeReplies }},
	{"flow_entries", "Flow table entries in use.", KindGauge,
		func(c *pipeline.Counters) uint64 { return c.FlowEntries }, func(s *v1.Stats) *uint64 { return &s.Flows.Entries }},
	{"flow_hits_total", "Flow table hits.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FlowHits }, func(s *v1.Stats) *uint64 { return &s.Flows.Hits }},
	{"flow_misses_total", "Flow table misses.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FlowMisses }, func(s *v1.Stats) *uint64 { return &s.Flows.Misses }},
	{"flow_evictions_total", "Flow table entries evicted to make room.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FlowEvictions }, func(s *v1.Stats) *uint64 { return &s.Flows.Evictions }},
	{"flow_expired_total", "Flow table entries expired.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FlowExpired }, func(s *v1.Stats) *uint64 { return &s.Flows.Expired }},
	{"flow_remapped_total", "Flows moved because their backend went down or left.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FlowRemapped }, func(s *v1.Stats) *uint64 { return &s.Flows.Remapped }},
	{"flow_stateless_total", "Packets of new flows forwarded by Maglev without a flow entry (over flows.new_flows_per_second, or the table full).", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FlowStateless }, func(s *v1.Stats) *uint64 { return &s.Flows.Stateless }},
	{"flow_table_full_total", "New flows that found every way of their bucket held by an established flow (never evicted).", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.FlowTableFull }, func(s *v1.Stats) *uint64 { return &s.Flows.TableFull }},
}

// WorkerCounters are one worker's counters, labelled "worker" in metrics.
// The worker's dropped packets and busy ratio are derived, not rows.
var WorkerCounters = []Counter[pipeline.Counters, v1.WorkerStats]{
	{"", "", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.RxPackets }, func(w *v1.WorkerStats) *uint64 { return &w.RxPackets }},
	{"", "", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.TxPackets }, func(w *v1.WorkerStats) *uint64 { return &w.TxPackets }},
	{"", "", KindGauge,
		func(c *pipeline.Counters) uint64 { return c.FlowEntries }, func(w *v1.WorkerStats) *uint64 { return &w.FlowEntries }},
	{"worker_polls_total", "Poll rounds of the worker.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.Polls }, func(w *v1.WorkerStats) *uint64 { return &w.Polls }},
	{"worker_busy_polls_total", "Poll rounds of the worker that found packets.", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.BusyPolls }, func(w *v1.WorkerStats) *uint64 { return &w.BusyPolls }},
	{"worker_idle_sleeps_total", "Sleeps of the idle worker (dataplane.idle_sleep).", KindCounter,
		func(c *pipeline.Counters) uint64 { return c.IdleSleeps }, func(w *v1.WorkerStats) *uint64 { return &w.IdleSleeps }},
}

// ServiceCounters are one service's counters, labelled "service".
var ServiceCounters = []Counter[pipeline.ServiceCounters, v1.ServiceStats]{
	{"service_packets_total", "Packets received for the service.", KindCounter,
		func(c *pipeline.ServiceCounters) uint64 { return c.Packets }, func(s *v1.ServiceStats) *uint64 { return &s.Packets }},
	{"service_bytes_total", "Bytes received for the service.", KindCounter,
		func(c *pipeline.ServiceCounters) uint64 { return c.Bytes }, func(s *v1.ServiceStats) *uint64 { return &s.Bytes }},
	{"service_no_backend_drops_total", "Packets of the service dropped because no backend took new flows.", KindCounter,
		func(c *pipeline.ServiceCounters) uint64 { return c.NoBackend }, func(s *v1.ServiceStats) *uint64 { return &s.NoBackend }},
	{"service_new_flow_limit_drops_total", "New flows of the service dropped over limits.new_flows_per_second.", KindCounter,
		func(c *pipeline.ServiceCounters) uint64 { return c.NewFlowLimited }, func(s *v1.ServiceStats) *uint64 { return &s.NewFlowLimited }},
}

// BackendCounters are one backend's counters, labelled "service" and
// "backend" (its IP).
var BackendCounters = []Counter[pipeline.BackendCounters, v1.BackendStats]{
	{"backend_packets_total", "Packets forwarded to the backend.", KindCounter,
		func(c *pipeline.BackendCounters) uint64 { return c.Packets }, func(b *v1.BackendStats) *uint64 { return &b.Packets }},
	{"backend_bytes_total", "Bytes forwarded to the backend.", KindCounter,
		func(c *pipeline.BackendCounters) uint64 { return c.Bytes }, func(b *v1.BackendStats) *uint64 { return &b.Bytes }},
	{"backend_new_flows_total", "Flows Maglev assigned to the backend.", KindCounter,
		func(c *pipeline.BackendCounters) uint64 { return c.NewFlows }, func(b *v1.BackendStats) *uint64 { return &b.NewFlows }},
	{"backend_syn_retransmits_total", "SYNs clients sent again on new flows of the backend that saw no ACK.", KindCounter,
		func(c *pipeline.BackendCounters) uint64 { return c.SynRetransmits }, func(b *v1.BackendStats) *uint64 { return &b.SynRetransmits }},
	{"backend_unanswered_flows_total", "New flows of the backend whose client sent the SYN again syn_retries times with no ACK (passive detection).", KindCounter,
		func(c *pipeline.BackendCounters) uint64 { return c.UnansweredFlows }, func(b *v1.BackendStats) *uint64 { return &b.UnansweredFlows }},
	{"backend_probes_total", "Health probes through the VIP sent to the backend.", KindCounter,
		func(c *pipeline.BackendCounters) uint64 { return c.Probes }, func(b *v1.BackendStats) *uint64 { return &b.Probes }},
}

// fill writes every row's value from c into j.
func fill[C, J any](rows []Counter[C, J], c *C, j *J) {
	for _, r := range rows {
		*r.JSON(j) = r.Read(c)
	}
}
