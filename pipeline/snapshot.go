package pipeline

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"unsafe"
)

// Mode is how a service hands packets to its backends.
type Mode uint8

// Forwarding modes: how a VIP packet reaches its backend, unchanged
// inside; the backend answers the client directly (Direct Server Return).
const (
	// ModeL2 rewrites the Ethernet addresses only; backends are on-link.
	ModeL2 Mode = iota + 1
	// ModeIPIP prepends an outer IPv4 header, protocol 4 (RFC 2003).
	ModeIPIP
	// ModeGRE prepends an outer IPv4 header, protocol 47, and a 4-byte GRE
	// header (RFC 2784).
	ModeGRE
)

// String returns the config name of m.
func (m Mode) String() string {
	switch m {
	case ModeL2:
		return "l2"
	case ModeIPIP:
		return "ipip"
	case ModeGRE:
		return "gre"
	}
	return "unknown"
}

// Overhead returns the bytes the mode adds in front of the IP packet.
func (m Mode) Overhead() int {
	switch m {
	case ModeIPIP:
		return IPv4MinSize
	case ModeGRE:
		return IPv4MinSize + greSize
	}
	return 0
}

// BackendState is whether a backend takes new flows.
type BackendState uint8

const (
	// BackendActive takes new flows and keeps its old ones.
	BackendActive BackendState = iota
	// BackendDrain keeps its established flows and takes no new ones.
	BackendDrain
	// BackendDown takes nothing: disabled, failed its health check, or its
	// next-hop MAC is unknown. Its flows move to the Maglev choice at once.
	BackendDown
	// BackendHeld is held down by passive failure detection: like
	// BackendDrain it takes no new flows and keeps its established ones,
	// and a flow whose client sends its SYN again (no ACK yet: the backend
	// never answered) is given a new backend by Maglev.
	BackendHeld
)

// String returns the API name of s.
func (s BackendState) String() string {
	switch s {
	case BackendActive:
		return "active"
	case BackendDrain:
		return "drain"
	case BackendHeld:
		return "held"
	}
	return "down"
}

const greSize = 4

// MaxPorts is the most NIC ports a snapshot has (DPDK's RTE_MAX_ETHPORTS
// is 32 in Debian's build): per-port flags are bits of a uint64.
const MaxPorts = 64

// PortSpec describes a NIC port to NewSnapshot.
type PortSpec struct {
	MAC MAC
	IP  netip.Addr // the appliance's own address on this port
	// IP6 is the appliance's own IPv6 address on this port: the source of
	// IPv6 envelopes and ICMPv6 errors. Invalid: the port has none.
	IP6 netip.Addr
	MTU int // largest IP packet the port sends; 0 means 1500
	// PartialChecksums marks a port that receives what a local kernel
	// sends (net_af_packet on a veth, a replayed capture): TCP and UDP
	// checksums there may hold only the pseudo-header sum
	// (CHECKSUM_PARTIAL, left to an offload that never runs), which
	// Process completes. Real NICs never deliver such frames; leave it off
	// for them, it costs a check per received packet.
	PartialChecksums bool
}

// BackendSpec describes one backend of a service to NewSnapshot.
type BackendSpec struct {
	// ID is a stable index for this backend's counters, unique within the
	// snapshot and kept while the backend exists.
	ID     uint32
	IP     netip.Addr
	Weight uint32
	State  BackendState
	// NextHop is the destination MAC of rewritten packets: the backend's own
	// MAC when on-link, else the gateway's. Zero means unresolved, which
	// makes the backend take no new flows.
	NextHop MAC
	// Port is the index (into SnapshotSpec.Ports) of the egress port.
	Port int
	// ProbePort, when not 0, is the first source port of the block of
	// ProbePortsPerTarget ports whose health probes through the VIP go to
	// this backend (see probe.go): ProbePortBase + k*ProbePortsPerTarget.
	ProbePort uint16
}

// ServiceSpec describes one virtual service to NewSnapshot.
type ServiceSpec struct {
	ID       uint32 // stable counter index, unique within the snapshot
	Name     string
	VIP      netip.Addr
	Proto    uint8  // ProtoTCP or ProtoUDP
	Port     uint16 // 0 = every port
	Mode     Mode
	Backends []BackendSpec
	// SynRetries is how many times a client may send a new flow's SYN
	// again, with no ACK, before the flow counts as unanswered against
	// its backend (BackendCounters.UnansweredFlows); 0 means
	// DefaultSynRetries.
	SynRetries uint8
	// NewFlowsPerSecond limits, per worker, the new flows of the service
	// (TCP SYNs and UDP packets without a flow entry); the rest are
	// dropped as new_flow_limit. 0 means no limit.
	NewFlowsPerSecond uint32
}

// DefaultSynRetries is ServiceSpec.SynRetries when not set: a Linux
// client sends its SYN again after 1 s and 3 s, so a flow counts as
// unanswered 3 s after its first SYN.
const DefaultSynRetries = 2

// SnapshotSpec is everything NewSnapshot compiles.
type SnapshotSpec struct {
	Generation uint64
	Ports      []PortSpec
	Services   []ServiceSpec
	// MaglevSize is the lookup table size (a prime of MaglevSizes); 0 means
	// DefaultMaglevSize.
	MaglevSize uint32
	// MaglevSeed seeds the Maglev permutations. Every appliance behind the
	// same ECMP group MUST use the same seed.
	MaglevSeed uint32
	// NewFlowsPerSecond is the rate, per worker, above which new flows
	// get no flow table entry: Maglev forwards them statelessly
	// (Counters.FlowStateless). 0 means no limit.
	NewFlowsPerSecond uint32
	// ICMPErrorsPerSecond is the rate, per worker, of the ICMP errors
	// the data plane writes (fragmentation needed, Packet Too Big, one
	// bucket for both); above it the packets that would draw one are
	// dropped (icmp_error_limit). 0 means no limit.
	ICMPErrorsPerSecond uint32
}

// Snapshot is an immutable, compiled forwarding state. Control builds one
// with NewSnapshot and publishes it; workers load it once per burst.
// Nothing in a published Snapshot may be modified.
type Snapshot struct {
	Generation uint64
	Ports      []PortState
	Services   []Service

	vipSlots []vipSlot // open-addressing index of (VIP, proto, port)
	vipMask  uint32
	// protoSlots index (VIP, proto), same size and mask as vipSlots: one
	// probe answers LookupService (see protoSlot).
	protoSlots []protoSlot
	// vipAddrs holds every VIP address (sorted) so that packets to a VIP on
	// an unserved protocol (ICMP echo) can be told from strangers.
	vipAddrs []uint32
	// vip6Slots index the IPv6 services by (VIP, proto, port), and every
	// IPv6 VIP address by (VIP, 0, 0) (snapshot6.go).
	vip6Slots []vip6Slot
	vip6Mask  uint32
	// has6: some service has an IPv6 VIP (workers then give their flow
	// tables IPv6 buckets).
	has6 bool

	// svcByID maps a Service.ID to its index in Services, -1 for none.
	svcByID []int32
	// fastByID maps a Service.ID to the service if the fast path may
	// confirm a flow's service by comparing (owns, and the VIP is no
	// port's own address), to noFastService otherwise: one load per
	// packet, no nil test.
	fastByID []*Service
	// partialPorts has bit i set when Ports[i].PartialChecksums.
	partialPorts uint64
	// probes maps a probe source port (less ProbePortBase) to the backend
	// it probes through the VIP; empty when no backend is (probe.go).
	probes []probeDest

	// MaxServiceID and MaxBackendID bound the IDs, for counter arrays.
	MaxServiceID uint32
	MaxBackendID uint32

	// NewFlowsPerSecond is SnapshotSpec.NewFlowsPerSecond.
	NewFlowsPerSecond uint32
	// ICMPErrorsPerSecond is SnapshotSpec.ICMPErrorsPerSecond.
	ICMPErrorsPerSecond uint32
}

// PortState is a compiled port.
type PortState struct {
	MAC MAC
	IP  uint32 // host order
	// IP6 is the port's IPv6 address; all zeros (::, never a port's
	// address) when it has none.
	IP6 [16]byte
	MTU int
	// PartialChecksums: see PortSpec.
	PartialChecksums bool
}

// Service is a compiled virtual service.
type Service struct {
	ID   uint32
	Name string
	VIP  uint32 // host order; 0 for an IPv6 service
	// VIP6 is the VIP of an IPv6 service (IPv6 true).
	VIP6 [16]byte
	IPv6 bool
	// VIPAddr is the VIP of either family.
	VIPAddr netip.Addr
	Proto   uint8
	Port    uint16
	Mode    Mode
	// Backends are sorted by address, the stable key: the IPv4 ones
	// first (n4 of them), then the IPv6 ones.
	Backends []Backend
	n4       int
	// Table is the Maglev lookup table: indexes into Backends, MaglevNone
	// when no backend takes new flows.
	Table []uint16
	// vipIsPortIP: the VIP is also a port's own address, whose packets go
	// to the kernel first; the fast path leaves them to Process.
	vipIsPortIP bool
	// owns: LookupService gives this service every packet that matches
	// its VIP, protocol and port (always for a single-port service; for an
	// all-ports one, when no single-port service shares its VIP and
	// protocol). The fast path then confirms a flow's service by
	// comparing instead of looking it up.
	owns bool
	// fastMask and fastTag: a flow's tag word (flowTag) is one of this
	// service's when tag&fastMask == fastTag (protocol, and port unless
	// the service takes all ports); fastTTL is the lowest TTL it
	// forwards (2 when it routes, 0 in L2 mode). For the fast path.
	fastMask, fastTag uint64
	fastTTL           int
	// segMax is the longest IP packet every backend's egress port carries
	// once encapsulated: the worker cuts TCP super-frames to it.
	segMax int
	// synRetries is ServiceSpec.SynRetries, never 0.
	synRetries uint8
	// newFlowLimit is ServiceSpec.NewFlowsPerSecond.
	newFlowLimit uint32
}

// Backend is a compiled backend with its prebuilt headers.
type Backend struct {
	ID uint32
	IP uint32 // host order; 0 for an IPv6 backend
	// Addr is the backend's address, of either family.
	Addr   netip.Addr
	Weight uint32
	State  BackendState
	Port   int
	// hdr is the Ethernet header, then for IPIP/GRE the outer IPv4 header
	// with TOS, total length, ID, flags and checksum zero, then GRE.
	hdr    [EthernetMinSize + IPv4MinSize + greSize]byte
	hdrLen int
	// maxTot is the longest client packet (IPv4 total length) that fits
	// the egress port's MTU once encapsulated, and at most the smallest
	// port MTU (a longer one is a super-frame on some port: process's);
	// -1 when the backend is down (the fast path tests all at once).
	maxTot int
	// outerSum is the unfolded checksum of the outer IPv4 template.
	outerSum uint32
	// svcCounters and counters are the byte offsets of its service's
	// and its own counters in a worker's Counters.Services and
	// Counters.Backends (ID times the size): the fast path adds them to
	// the arrays' addresses, needing neither the service nor a multiply.
	// 32 bits, in what was padding, so that a Backend stays 128 bytes
	// (an index is a shift); a backend whose offsets do not fit is left
	// to process (maxTot -1).
	svcCounters uint32
	// hdr6, for an IPv6 backend in an L3 mode, replaces hdr: Ethernet,
	// the outer IPv6 header with traffic class, flow label and payload
	// length zero, then GRE (snapshot6.go). hdrLen is then its length.
	// Nil otherwise.
	hdr6 *[EthernetMinSize + IPv6HeaderSize + greSize]byte
	// probePort is BackendSpec.ProbePort; resolved tells whether its next
	// hop's MAC is known (the templates hold it).
	probePort uint16
	resolved  bool
	counters  uint32 // see svcCounters
}

// partialChecksums reports whether port pi receives partial checksums
// (PortSpec.PartialChecksums): for the burst loop, which then leaves what a
// kernel left unfinished to process (offloaded), one bit test per burst.
func (s *Snapshot) partialChecksums(pi int) bool { return s.partialPorts>>uint(pi)&1 != 0 }

// VIPBytes returns the VIP of an IPv4 service as four bytes.
func (svc *Service) VIPBytes() [4]byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], svc.VIP)
	return b
}

// Usable reports whether b may carry packets of established flows.
func (b *Backend) Usable() bool { return b.State != BackendDown }

type vipSlot struct {
	key uint64 // vipKey(...) | 1<<63 when used
	svc int32
}

// protoSlot is everything served on one (VIP, protocol): the all-ports
// service and up to two single-port services inline; with more, LookupService
// also probes vipSlots.
type protoSlot struct {
	key   uint64 // vipKey(vip, proto, 0) when used
	any   int32  // the all-ports service, or -1
	svc   [2]int32
	port  [2]uint16
	ports uint8 // single-port services on this (VIP, protocol)
}

func vipKey(vip uint32, proto uint8, port uint16) uint64 {
	return 1<<63 | uint64(vip)<<24 | uint64(proto)<<16 | uint64(port)
}

func mixKey(k uint64) uint32 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	return uint32(k)
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// NewSnapshot compiles spec: validates it, builds every service's Maglev
// table and every backend's header template, and indexes the VIPs. Specs
// are expected to come from control's validated config; errors here are
// programming or consistency errors.
func NewSnapshot(spec SnapshotSpec) (*Snapshot, error) {
	size := spec.MaglevSize
	if size == 0 {
		size = DefaultMaglevSize
	}
	s := &Snapshot{Generation: spec.Generation, NewFlowsPerSecond: spec.NewFlowsPerSecond}
	s.ICMPErrorsPerSecond = spec.ICMPErrorsPerSecond
	if len(spec.Ports) > MaxPorts {
		return nil, fmt.Errorf("%d ports, at most %d", len(spec.Ports), MaxPorts)
	}
	for i, p := range spec.Ports {
		if !p.IP.Is4() {
			return nil, fmt.Errorf("port %d: ip %v is not IPv4", i, p.IP)
		}
		mtu := p.MTU
		if mtu == 0 {
			mtu = 1500
		}
		ps := PortState{MAC: p.MAC, IP: addrU32(p.IP), MTU: mtu, PartialChecksums: p.PartialChecksums}
		if p.IP6.IsValid() {
			if !p.IP6.Is6() || p.IP6.Is4In6() || p.IP6.IsUnspecified() {
				return nil, fmt.Errorf("port %d: ip6 %v is not an IPv6 address", i, p.IP6)
			}
			ps.IP6 = p.IP6.As16()
		}
		s.Ports = append(s.Ports, ps)
		if p.PartialChecksums {
			s.partialPorts |= 1 << uint(i)
		}
	}
	n := 16
	for n < 2*len(spec.Services) {
		n <<= 1
	}
	s.vipSlots = make([]vipSlot, n)
	s.protoSlots = make([]protoSlot, n)
	s.vipMask = uint32(n - 1)
	vips := map[uint32]bool{}
	s.vip6Slots = make([]vip6Slot, 2*n)
	s.vip6Mask = uint32(2*n - 1)
	for _, ss := range spec.Services {
		svc, err := s.compileService(ss, size, spec.MaglevSeed)
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", ss.Name, err)
		}
		if svc.IPv6 {
			if err := s.index6(&svc, int32(len(s.Services))); err != nil {
				return nil, fmt.Errorf("service %q: %w", ss.Name, err)
			}
			s.Services = append(s.Services, svc)
			s.noteIDs(&svc)
			continue
		}
		key := vipKey(svc.VIP, svc.Proto, svc.Port)
		if s.findVIP(key) >= 0 {
			return nil, fmt.Errorf("service %q: duplicate (vip, protocol, port)", ss.Name)
		}
		s.insertVIP(key, int32(len(s.Services)))
		s.indexProto(svc.VIP, svc.Proto, svc.Port, int32(len(s.Services)))
		for _, p := range s.Ports {
			svc.vipIsPortIP = svc.vipIsPortIP || p.IP == svc.VIP
		}
		s.Services = append(s.Services, svc)
		s.noteIDs(&svc)
		if !vips[svc.VIP] {
			vips[svc.VIP] = true
			s.vipAddrs = append(s.vipAddrs, svc.VIP)
		}
	}
	sort.Slice(s.vipAddrs, func(i, j int) bool { return s.vipAddrs[i] < s.vipAddrs[j] })
	s.svcByID = make([]int32, int(s.MaxServiceID)+1)
	for i := range s.svcByID {
		s.svcByID[i] = -1
	}
	for i := range s.Services {
		svc := &s.Services[i]
		if s.svcByID[svc.ID] >= 0 {
			return nil, fmt.Errorf("service %q: duplicate service id %d", svc.Name, svc.ID)
		}
		s.svcByID[svc.ID] = int32(i)
		svc.owns = !svc.IPv6 && (svc.Port != 0 || s.singlePorts(svc.VIP, svc.Proto) == 0)
	}
	s.fastByID = make([]*Service, len(s.svcByID))
	for i := range s.fastByID {
		s.fastByID[i] = &noFastService
	}
	for i := range s.Services {
		if svc := &s.Services[i]; svc.owns && !svc.vipIsPortIP {
			s.fastByID[svc.ID] = svc
			svc.fastMask, svc.fastTag = 0xff00, uint64(svc.Proto)<<8
			if svc.Port != 0 {
				svc.fastMask |= 0xffff << 32
				svc.fastTag |= uint64(svc.Port) << 32
			}
			if svc.Mode != ModeL2 {
				svc.fastTTL = 2
			}
		}
	}
	if err := s.indexProbes(); err != nil {
		return nil, err
	}
	return s, nil
}

// noFastService is the entry of Snapshot.fastByID of a service the fast
// path leaves to Process: no flow's tag (bit 0 set) matches fastTag 0
// under fastMask 1.
var noFastService = Service{fastMask: 1}

// noteIDs raises MaxServiceID and MaxBackendID to svc's IDs.
func (s *Snapshot) noteIDs(svc *Service) {
	s.MaxServiceID = max(s.MaxServiceID, svc.ID)
	for _, b := range svc.Backends {
		s.MaxBackendID = max(s.MaxBackendID, b.ID)
	}
}

// singlePorts returns how many single-port services share (vip, proto).
func (s *Snapshot) singlePorts(vip uint32, proto uint8) int {
	key := vipKey(vip, proto, 0)
	for i := mixKey(key) & s.vipMask; s.protoSlots[i].key != 0; i = (i + 1) & s.vipMask {
		if s.protoSlots[i].key == key {
			return int(s.protoSlots[i].ports)
		}
	}
	return 0
}

func (s *Snapshot) compileService(ss ServiceSpec, size, seed uint32) (Service, error) {
	if !ss.VIP.Is4() && (!ss.VIP.Is6() || ss.VIP.Is4In6() || ss.VIP.IsUnspecified()) {
		return Service{}, fmt.Errorf("vip %v is neither IPv4 nor IPv6", ss.VIP)
	}
	if ss.Proto != ProtoTCP && ss.Proto != ProtoUDP {
		return Service{}, fmt.Errorf("protocol %d is not tcp or udp", ss.Proto)
	}
	if ss.Mode < ModeL2 || ss.Mode > ModeGRE {
		return Service{}, fmt.Errorf("mode %d unknown", ss.Mode)
	}
	svc := Service{ID: ss.ID, Name: ss.Name, VIPAddr: ss.VIP, IPv6: ss.VIP.Is6(), Proto: ss.Proto, Port: ss.Port, Mode: ss.Mode, segMax: 1 << 16,
		synRetries: ss.SynRetries, newFlowLimit: ss.NewFlowsPerSecond}
	if svc.synRetries == 0 {
		svc.synRetries = DefaultSynRetries
	}
	if svc.IPv6 {
		svc.VIP6 = ss.VIP.As16()
	} else {
		svc.VIP = addrU32(ss.VIP)
	}
	minMTU := 1 << 16
	for _, p := range s.Ports {
		minMTU = min(minMTU, p.MTU)
	}
	bs := append([]BackendSpec(nil), ss.Backends...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].IP.Less(bs[j].IP) })
	mb := make([]MaglevBackend, len(bs))
	for i, bsp := range bs {
		if !bsp.IP.Is4() && (!bsp.IP.Is6() || bsp.IP.Is4In6() || bsp.IP.IsUnspecified()) {
			return Service{}, fmt.Errorf("backend %v is neither IPv4 nor IPv6", bsp.IP)
		}
		if bsp.Port < 0 || bsp.Port >= len(s.Ports) {
			return Service{}, fmt.Errorf("backend %v: port index %d out of range", bsp.IP, bsp.Port)
		}
		b := Backend{ID: bsp.ID, Addr: bsp.IP, Weight: bsp.Weight, State: bsp.State, Port: bsp.Port,
			probePort: bsp.ProbePort}
		svcOff := uint64(ss.ID) * uint64(unsafe.Sizeof(ServiceCounters{}))
		off := uint64(bsp.ID) * uint64(unsafe.Sizeof(BackendCounters{}))
		b.svcCounters, b.counters = uint32(svcOff), uint32(off)
		if bsp.IP.Is4() {
			b.IP = addrU32(bsp.IP)
			svc.n4++
		}
		b.resolved = !bsp.NextHop.IsZero()
		if !b.resolved {
			b.State = BackendDown
		}
		if err := b.buildTemplate(ss.Mode, svc.IPv6, bsp.NextHop, s.Ports[bsp.Port]); err != nil {
			return Service{}, fmt.Errorf("backend %v: %w", bsp.IP, err)
		}
		svc.segMax = min(svc.segMax, b.maxTot)
		b.maxTot = min(b.maxTot, minMTU)
		// The burst loop's fast path (fastPath) writes IPv4 envelopes
		// only: an IPv6 one is Process's, as for a backend that is down.
		if b.State == BackendDown || b.hdr6 != nil || svcOff > math.MaxUint32 || off > math.MaxUint32 {
			b.maxTot = -1
		}
		svc.Backends = append(svc.Backends, b)
		w := bsp.Weight
		if b.State != BackendActive {
			w = 0
		}
		mb[i] = MaglevBackend{Key: bsp.IP.String(), Weight: w}
	}
	table, err := BuildMaglev(mb, size, seed)
	if err != nil {
		return Service{}, err
	}
	svc.Table = table
	return svc, nil
}

// buildTemplate prebuilds the headers the rewriter prepends, with their
// partial checksum, so that per packet only length, ID and checksum are
// written. The envelope's family follows the backend's address (an IPv6
// one gets hdr6, buildTemplate6), what it announces inside follows the
// VIP's (inner6: IPv6): protocol 4 or 41, GRE protocol 0x0800 or 0x86DD.
func (b *Backend) buildTemplate(m Mode, inner6 bool, nextHop MAC, port PortState) error {
	innerType, innerProto := uint16(EtherTypeIPv4), uint8(ProtoIPIP)
	if inner6 {
		innerType, innerProto = EtherTypeIPv6, ProtoIPv6
	}
	h := b.hdr[:]
	copy(h[0:6], nextHop[:])
	copy(h[6:12], port.MAC[:])
	binary.BigEndian.PutUint16(h[12:], innerType)
	b.hdrLen = EthernetMinSize
	b.maxTot = port.MTU
	if m == ModeL2 {
		return nil
	}
	if b.Addr.Is6() {
		return b.buildTemplate6(m, innerType, innerProto, port)
	}
	binary.BigEndian.PutUint16(h[12:], EtherTypeIPv4)
	ip := h[EthernetMinSize:]
	ip[ipv4VersIHL] = 0x45
	ip[ipv4TTL] = outerTTL
	ip[ipv4Protocol] = innerProto
	if m == ModeGRE {
		ip[ipv4Protocol] = ProtoGRE
		// GRE (RFC 2784): no checksum, version 0, the inner protocol.
		binary.BigEndian.PutUint16(h[EthernetMinSize+IPv4MinSize+2:], innerType)
	}
	binary.BigEndian.PutUint32(ip[ipv4Src:], port.IP)
	binary.BigEndian.PutUint32(ip[ipv4Dst:], b.IP)
	b.outerSum = sum(ip[:IPv4MinSize], 0)
	b.hdrLen = EthernetMinSize + m.Overhead()
	b.maxTot = port.MTU - m.Overhead()
	return nil
}

// outerTTL is the TTL of outer IPv4 headers.
const outerTTL = 64

func (s *Snapshot) insertVIP(key uint64, svc int32) {
	i := mixKey(key) & s.vipMask
	for s.vipSlots[i].key != 0 {
		i = (i + 1) & s.vipMask
	}
	s.vipSlots[i] = vipSlot{key: key, svc: svc}
}

func (s *Snapshot) findVIP(key uint64) int32 {
	i := mixKey(key) & s.vipMask
	for {
		sl := &s.vipSlots[i]
		if sl.key == key {
			return sl.svc
		}
		if sl.key == 0 {
			return -1
		}
		i = (i + 1) & s.vipMask
	}
}

// indexProto records service svc, serving (vip, proto, port), in
// protoSlots.
func (s *Snapshot) indexProto(vip uint32, proto uint8, port uint16, svc int32) {
	key := vipKey(vip, proto, 0)
	i := mixKey(key) & s.vipMask
	for s.protoSlots[i].key != 0 && s.protoSlots[i].key != key {
		i = (i + 1) & s.vipMask
	}
	sl := &s.protoSlots[i]
	if sl.key == 0 {
		*sl = protoSlot{key: key, any: -1}
	}
	switch {
	case port == 0:
		sl.any = svc
	case sl.ports < uint8(len(sl.port)):
		sl.port[sl.ports], sl.svc[sl.ports] = port, svc
		sl.ports++
	case sl.ports < 255: // saturates: LookupService only asks "more than fit inline?"
		sl.ports++ // more than fit inline: vipSlots has them
	}
}

// LookupService returns the index of the service for (vip, proto, port),
// trying the exact port first and then the all-ports service, or -1. It is
// one probe of protoSlots in the usual case (at most two single-port
// services per VIP and protocol).
func (s *Snapshot) LookupService(vip uint32, proto uint8, port uint16) int {
	key := vipKey(vip, proto, 0)
	i := mixKey(key) & s.vipMask
	for {
		sl := &s.protoSlots[i]
		if sl.key == key {
			if sl.ports > 0 && port != 0 {
				if sl.port[0] == port {
					return int(sl.svc[0])
				}
				if sl.ports > 1 && sl.port[1] == port {
					return int(sl.svc[1])
				}
				if sl.ports > uint8(len(sl.port)) {
					if j := s.findVIP(vipKey(vip, proto, port)); j >= 0 {
						return int(j)
					}
				}
			}
			return int(sl.any)
		}
		if sl.key == 0 {
			return -1
		}
		i = (i + 1) & s.vipMask
	}
}

// lookupServiceSlow is LookupService on vipSlots alone: the reference the
// tests hold LookupService to.
func (s *Snapshot) lookupServiceSlow(vip uint32, proto uint8, port uint16) int {
	if i := s.findVIP(vipKey(vip, proto, port)); i >= 0 {
		return int(i)
	}
	return int(s.findVIP(vipKey(vip, proto, 0)))
}

// IsVIP reports whether a is the address of any service.
func (s *Snapshot) IsVIP(a uint32) bool {
	lo, hi := 0, len(s.vipAddrs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.vipAddrs[m] < a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(s.vipAddrs) && s.vipAddrs[lo] == a
}

// BackendIndex returns the index in svc.Backends of the IPv4 backend with
// address ip, or -1 (binary search over the sorted IPv4 backends).
func (svc *Service) BackendIndex(ip uint32) int {
	bs := svc.Backends[:svc.n4]
	lo, hi := 0, len(bs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bs[m].IP < ip {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(bs) && bs[lo].IP == ip {
		return lo
	}
	return -1
}

// FindService returns the service named name, or nil.
func (s *Snapshot) FindService(name string) *Service {
	for i := range s.Services {
		if s.Services[i].Name == name {
			return &s.Services[i]
		}
	}
	return nil
}
