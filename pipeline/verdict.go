package pipeline

// Verdict is what the fast path decided for one packet.
type Verdict uint8

const (
	// VerdictDrop frees the packet; the DropReason says why.
	VerdictDrop Verdict = iota
	// VerdictTx sends the (rewritten) packet out of a NIC port.
	VerdictTx
	// VerdictKernel hands the packet unchanged to the kernel (tap port).
	VerdictKernel
	// VerdictProbe hands the packet to the probe port: a backend's answer
	// to a health probe through the VIP (see probe.go).
	VerdictProbe
)

// DropReason says why a packet was dropped. Every drop is counted under
// exactly one reason.
type DropReason uint8

// Drop reasons. Their names (DropReason.String) are stable: they appear in
// replay and bench JSON, the API and metrics labels.
const (
	DropNone DropReason = iota
	DropTruncated
	DropNotIP
	DropBadVersion
	DropBadIHL
	DropBadTotalLen
	DropBadChecksum
	DropTruncatedL4
	DropTTL
	DropFragment
	DropNoService
	DropNoBackend
	DropTooBig
	// DropNoRoute is produced for health probes only: config validation
	// rejects a backend no port reaches, and NewSnapshot marks one whose
	// next hop is not resolved down (backend_up 0), so a client's chosen
	// backend always has a route; a probe goes to its backend whatever its
	// state, and is dropped while that backend's next hop is unresolved.
	DropNoRoute
	DropTxFull
	// DropMultiSegment is never produced: ports enable no rx offload, so
	// scatter is off and a received frame is one mbuf. It stays for its
	// name, as DropNoRoute.
	DropMultiSegment
	DropNoKernel
	DropICMPUnrelated
	DropSuperframe
	DropNoBuffer
	DropExtHeader
	// DropProbeUnmatched: a packet from the probe port that is no probe
	// of a backend of its VIP (see probe.go).
	DropProbeUnmatched
	// DropProbeLooped: a new flow to a VIP from a port address (probe.go).
	DropProbeLooped
	DropNewFlowLimit
	// DropICMPErrorLimit: an oversized packet that would have drawn a
	// fragmentation needed or Packet Too Big over the worker's rate of
	// ICMP errors (icmplimit.go).
	DropICMPErrorLimit
	NumDropReasons
)

// verdictSegment is process's answer for a TCP super-frame it leaves to
// the worker to cut into segments (Forwarder.seg says how); it never
// leaves the package.
const verdictSegment Verdict = VerdictProbe + 1

var dropReasonNames = [NumDropReasons]string{
	DropNone:          "none",
	DropTruncated:     "truncated",
	DropNotIP:         "not_ip",
	DropBadVersion:    "bad_version",
	DropBadIHL:        "bad_ihl",
	DropBadTotalLen:   "bad_total_length",
	DropBadChecksum:   "bad_checksum",
	DropTruncatedL4:   "truncated_l4",
	DropTTL:           "ttl_exceeded",
	DropFragment:      "fragment",
	DropNoService:     "no_service",
	DropNoBackend:     "no_backend",
	DropTooBig:        "too_big",
	DropNoRoute:       "no_route",
	DropTxFull:        "tx_full",
	DropMultiSegment:  "multi_segment",
	DropNoKernel:      "no_kernel_port",
	DropICMPUnrelated: "icmp_unrelated",
	// A GSO/GRO super-frame (longer than the receiving port's MTU, from a
	// peer's kernel) that cannot be segmented: not TCP, cut by the
	// driver's ring frame, or no buffers to segment into.
	DropSuperframe: "gso_superframe",
	// No buffer left in the pool for the segments of a super-frame.
	DropNoBuffer: "no_buffer",
	// An IPv6 packet to a VIP with an extension header dsrlb does not
	// forward: a routing header with segments left, a header cut short,
	// or a chain of more than eight.
	DropExtHeader: "ipv6_ext_header",
	// A packet from the health probes' namespace whose source port names
	// no backend probed through its destination VIP: never sent anywhere.
	DropProbeUnmatched: "probe_unmatched",
	// A new flow to a VIP from the appliance's own port address: a health
	// probe the backend it was for sent back (a backend without the VIP
	// that forwards what it does not own), never handed to a backend.
	DropProbeLooped: "probe_looped",
	// A new flow (a TCP SYN or a UDP packet without a flow entry) to a
	// service over its limit of new flows per second.
	DropNewFlowLimit: "new_flow_limit",
	// An oversized packet to a VIP left unanswered: the worker sent its
	// Snapshot.ICMPErrorsPerSecond of ICMP errors this second.
	DropICMPErrorLimit: "icmp_error_limit",
}

// String returns the stable name of r.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// DropReasonNames lists every reason's name in order, for reports.
func DropReasonNames() []string { return dropReasonNames[:] }
