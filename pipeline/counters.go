package pipeline

// ServiceCounters count one service's traffic on one worker.
type ServiceCounters struct {
	Packets, Bytes uint64
	// NoBackend counts packets dropped because no backend took new flows.
	NoBackend uint64
	// NewFlowLimited counts the new flows dropped over the service's
	// limit of new flows per second (drop reason new_flow_limit).
	NewFlowLimited uint64
}

// BackendCounters count one backend's traffic on one worker.
type BackendCounters struct {
	Packets, Bytes uint64
	// NewFlows counts flows assigned to this backend by Maglev.
	NewFlows uint64
	// SynRetransmits counts the SYNs clients sent again on new flows of
	// this backend that had seen no ACK (the same 5-tuple, its flow entry
	// still in the SYN state). UnansweredFlows counts the flows whose
	// client did so ServiceSpec.SynRetries times: the evidence of passive
	// failure detection, which control sums and judges.
	SynRetransmits, UnansweredFlows uint64
	// Probes counts health probes through the VIP sent to this backend
	// (not in Packets and Bytes, which are the clients').
	Probes uint64
}

// Counters are one worker's counters. Only the owning worker writes them;
// others read a published copy (Worker.Counters) and sum them with Add.
type Counters struct {
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	// ToKernel counts packets handed to the kernel (or, without a tap port,
	// counted and freed); FromKernel counts what the kernel sent out.
	ToKernel, FromKernel uint64
	// FragNeededSent counts ICMP fragmentation-needed replies generated;
	// ICMPErrorsForwarded counts ICMP errors sent to a flow's backend.
	FragNeededSent, ICMPErrorsForwarded uint64
	// PacketTooBigSent counts ICMPv6 Packet Too Big replies generated.
	PacketTooBigSent uint64
	// IPOptions counts forwarded VIP packets that carried IPv4 options.
	IPOptions uint64
	// L4ChecksumsCompleted counts TCP and UDP checksums completed on ports
	// that receive partial ones (PortSpec.PartialChecksums).
	L4ChecksumsCompleted uint64
	// GSOSegmented counts TCP super-frames (longer than the receiving
	// port's MTU) cut into segments, GSOSegments the segments made. Each
	// segment then gets a verdict and is counted like a received packet,
	// the super-frame itself none: RxPackets - GSOSegmented + GSOSegments
	// packets got a verdict.
	GSOSegmented, GSOSegments uint64
	// SuperframePorts has bit i set once port i received a super-frame
	// dropped as gso_superframe: control logs it once per port, naming
	// the peer setting to change. Not a count: Add ORs it.
	SuperframePorts uint64
	// ProbesSent counts health probes through the VIP sent to a backend;
	// ProbeReplies the backends' answers handed to the probe port.
	ProbesSent, ProbeReplies uint64

	Drops [NumDropReasons]uint64

	FlowEntries, FlowHits, FlowMisses, FlowEvictions, FlowExpired uint64
	// FlowRemapped counts flows moved because their backend went down or
	// left the service.
	FlowRemapped uint64
	// FlowStateless counts the packets of new flows forwarded by Maglev
	// without a flow table entry: over the new-flow rate
	// (SnapshotSpec.NewFlowsPerSecond) or with no way to take in the
	// flow's bucket. FlowTableFull counts the latter (FlowTable.Full).
	FlowStateless, FlowTableFull uint64

	// Polls and BusyPolls give the worker busy ratio; IdleSleeps counts
	// the sleeps of an idle worker (Worker.IdleSleep).
	Polls, BusyPolls, IdleSleeps uint64

	Services []ServiceCounters // indexed by Service.ID
	Backends []BackendCounters // indexed by Backend.ID
}

// Dropped returns the sum of all drops.
func (c *Counters) Dropped() uint64 {
	var n uint64
	for _, d := range c.Drops {
		n += d
	}
	return n
}

// Service returns the counters of the service with the given ID, zero when
// the worker has not yet grown its counters to id (a service newer than
// them).
func (c *Counters) Service(id uint32) ServiceCounters {
	if int(id) < len(c.Services) {
		return c.Services[id]
	}
	return ServiceCounters{}
}

// Backend returns the counters of the backend with the given ID, zero when
// the worker has not yet grown its counters to id.
func (c *Counters) Backend(id uint32) BackendCounters {
	if int(id) < len(c.Backends) {
		return c.Backends[id]
	}
	return BackendCounters{}
}

// grow makes room for service and backend IDs up to the given maxima. It
// allocates only when a snapshot brings larger IDs, never per packet.
func (c *Counters) grow(maxService, maxBackend uint32) {
	if int(maxService) >= len(c.Services) {
		s := isolatedSlice[ServiceCounters](int(maxService) + 1 + 16)
		copy(s, c.Services)
		c.Services = s
	}
	if int(maxBackend) >= len(c.Backends) {
		b := isolatedSlice[BackendCounters](int(maxBackend) + 1 + 64)
		copy(b, c.Backends)
		c.Backends = b
	}
}

// CopyTo copies c into dst, reusing dst's slices where they are big enough.
func (c *Counters) CopyTo(dst *Counters) {
	svc, be := dst.Services, dst.Backends
	*dst = *c
	dst.Services = append(svc[:0], c.Services...)
	dst.Backends = append(be[:0], c.Backends...)
}

// Add adds o into c (for summing workers).
func (c *Counters) Add(o *Counters) {
	c.RxPackets += o.RxPackets
	c.RxBytes += o.RxBytes
	c.TxPackets += o.TxPackets
	c.TxBytes += o.TxBytes
	c.ToKernel += o.ToKernel
	c.FromKernel += o.FromKernel
	c.FragNeededSent += o.FragNeededSent
	c.ICMPErrorsForwarded += o.ICMPErrorsForwarded
	c.PacketTooBigSent += o.PacketTooBigSent
	c.IPOptions += o.IPOptions
	c.L4ChecksumsCompleted += o.L4ChecksumsCompleted
	c.GSOSegmented += o.GSOSegmented
	c.GSOSegments += o.GSOSegments
	c.SuperframePorts |= o.SuperframePorts
	c.ProbesSent += o.ProbesSent
	c.ProbeReplies += o.ProbeReplies
	for i := range c.Drops {
		c.Drops[i] += o.Drops[i]
	}
	c.FlowEntries += o.FlowEntries
	c.FlowHits += o.FlowHits
	c.FlowMisses += o.FlowMisses
	c.FlowEvictions += o.FlowEvictions
	c.FlowExpired += o.FlowExpired
	c.FlowRemapped += o.FlowRemapped
	c.FlowStateless += o.FlowStateless
	c.FlowTableFull += o.FlowTableFull
	c.Polls += o.Polls
	c.BusyPolls += o.BusyPolls
	c.IdleSleeps += o.IdleSleeps
	if len(o.Services) > len(c.Services) {
		c.Services = append(c.Services, make([]ServiceCounters, len(o.Services)-len(c.Services))...)
	}
	for i, s := range o.Services {
		c.Services[i].Packets += s.Packets
		c.Services[i].Bytes += s.Bytes
		c.Services[i].NoBackend += s.NoBackend
		c.Services[i].NewFlowLimited += s.NewFlowLimited
	}
	if len(o.Backends) > len(c.Backends) {
		c.Backends = append(c.Backends, make([]BackendCounters, len(o.Backends)-len(c.Backends))...)
	}
	for i, b := range o.Backends {
		c.Backends[i].Packets += b.Packets
		c.Backends[i].Bytes += b.Bytes
		c.Backends[i].NewFlows += b.NewFlows
		c.Backends[i].SynRetransmits += b.SynRetransmits
		c.Backends[i].UnansweredFlows += b.UnansweredFlows
		c.Backends[i].Probes += b.Probes
	}
}
