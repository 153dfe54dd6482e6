package pipeline

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Health probes through the DSR path (`health.via: vip`).
//
// A backend that answers on its own address but not for the VIP (the VIP
// missing on lo, no decapsulator, a service bound to the real IP only)
// swallows its share of the clients' connections while a probe of its own
// address passes. A probe through the DSR path is addressed to the VIP and
// handed to that one backend exactly as a client's packet: in l2 to its
// MAC, in ipip and gre inside its envelope; the backend answers from the
// VIP to the appliance's port address, as it answers clients.
//
// The probes are ordinary sockets of the control plane, opened in a private
// network namespace whose only interface is the probe port (a second tap):
// there the VIPs are not local addresses, so a connection to a VIP leaves
// through the probe port, from a port address and a source port of the
// probe range. The worker polls the probe port (every clockEvery polls),
// finds the one backend a probe is for by its source port in the snapshot
// (SnapshotSpec: BackendSpec.ProbePort) and sends it out with that
// backend's headers (toProbed), without the flow table or Maglev: no client
// flow sees a probe, and a probe whose source port names no backend of its
// VIP is dropped (probe_unmatched), never sent to another backend. The
// backend's answers (to a port address, from a VIP, to a port of the probe
// range, or an ICMP error from a VIP) go to the probe port instead of the
// kernel (probeReply): the appliance's kernel never talks to a VIP over
// the wire, it owns them. A probe that comes back to the appliance as a
// new flow to the VIP (a backend without the VIP forwards it) is dropped
// (fromPort), never balanced to another backend.
//
// IPv6 VIPs take the same path: the probe namespace holds the ports' IPv6
// addresses, a probe's source port names its backend as for IPv4
// (toProbed6), the answers from an IPv6 VIP to a port's IPv6 address at a
// probe port, and ICMPv6 errors from a VIP, go to the probe port
// (probeReply6), and a new flow from a port's IPv6 address to a VIP is a
// probe looped back (fromPort6). An IPv6 VIP's probes come from its
// backend's egress port's IPv6 address; a probe of one family never
// reaches a VIP of the other.
//
// Cost for other packets: the burst loop tests one pointer per poll (and
// polls the probe port every clockEvery polls); process tests one slice
// length on packets to a port address and on new flows to a VIP; release
// has one more case for packets that are not transmitted. The fast path
// (flow table hits) is unchanged.

// The probe range of source ports. MUST NOT overlap the probe namespace's
// ephemeral ports (which the control plane sets above it). Each backend
// probed through the VIP owns ProbePortsPerTarget consecutive ports from
// ProbePortBase + k*ProbePortsPerTarget; its probes take them in turn, so
// that a probe never reuses the 4-tuple of the previous one, which the
// backend may still hold in TIME_WAIT.
const (
	ProbePortBase       = 16384
	ProbePortsPerTarget = 4
	MaxProbeTargets     = 4096 // ports 16384..32767
)

// probeDest is the backend a probe port belongs to: indexes into
// Snapshot.Services and that service's Backends; svc < 0 for none.
type probeDest struct {
	svc, backend int32
}

// indexProbes builds s.probes from the services' backends' probe ports.
func (s *Snapshot) indexProbes() error {
	hi := -1
	for i := range s.Services {
		for _, b := range s.Services[i].Backends {
			if b.probePort == 0 {
				continue
			}
			k := int(b.probePort) - ProbePortBase
			if k < 0 || k%ProbePortsPerTarget != 0 || k >= MaxProbeTargets*ProbePortsPerTarget {
				return fmt.Errorf("service %q: backend %v: probe port %d is not the first of a block of %d in %d..%d",
					s.Services[i].Name, b.Addr, b.probePort, ProbePortsPerTarget, ProbePortBase, ProbePortBase+MaxProbeTargets*ProbePortsPerTarget-1)
			}
			hi = max(hi, k+ProbePortsPerTarget)
		}
	}
	if hi < 0 {
		return nil
	}
	probes := make([]probeDest, hi)
	for k := range probes {
		probes[k] = probeDest{-1, -1}
	}
	for i := range s.Services {
		for j, b := range s.Services[i].Backends {
			if b.probePort == 0 {
				continue
			}
			k := int(b.probePort) - ProbePortBase
			for p := k; p < k+ProbePortsPerTarget; p++ {
				if probes[p].svc >= 0 {
					return fmt.Errorf("service %q: backend %v: probe port %d is taken", s.Services[i].Name, b.Addr, b.probePort)
				}
				probes[p] = probeDest{int32(i), int32(j)}
			}
		}
	}
	s.probes = probes
	return nil
}

func (s *Snapshot) probeDest(port uint16) (probeDest, bool) {
	k := int(port) - ProbePortBase
	if k < 0 || k >= len(s.probes) || s.probes[k].svc < 0 {
		return probeDest{}, false
	}
	return s.probes[k], true
}

// probeReply reports whether ip, a packet to a port address (validated,
// header length ihl), is a backend's answer to a probe: from a VIP, and
// TCP or UDP to a port of the probe range, or ICMP (an error about a
// probe; the appliance's kernel never sends to a VIP).
func (s *Snapshot) probeReply(ip IPv4, ihl int) bool {
	if !s.IsVIP(ip.SrcU32()) {
		return false
	}
	l4 := ip[ihl:]
	switch ip.Protocol() {
	case ProtoICMP:
		return true
	case ProtoTCP, ProtoUDP:
		if len(l4) < 4 {
			return false
		}
		k := int(Ports(l4).Dst()) - ProbePortBase
		return k >= 0 && k < MaxProbeTargets*ProbePortsPerTarget
	}
	return false
}

// probeReply6 is probeReply for ip, an IPv6 packet to a port's IPv6
// address (validated, trimmed to its payload length): from a VIP, and TCP
// or UDP to a port of the probe range, or an ICMPv6 error. Other ICMPv6
// from a VIP (neighbour discovery, echo) stays the kernel's.
func (s *Snapshot) probeReply6(ip IPv6) bool {
	if !s.IsVIP6((*[16]byte)(ip[ipv6Src:])) {
		return false
	}
	proto, off, r := upperLayer6(ip)
	if r != DropNone || off+4 > len(ip) {
		return false
	}
	switch proto {
	case ProtoICMPv6:
		return isICMPv6Error(ip[off])
	case ProtoTCP, ProtoUDP:
		k := int(Ports(ip[off:]).Dst()) - ProbePortBase
		return k >= 0 && k < MaxProbeTargets*ProbePortsPerTarget
	}
	return false
}

// fromPort reports whether src is a port address. A new flow from one to a
// VIP is a probe looped back: a backend without the VIP that forwards what
// it does not own sends the probe on to its route to the VIP, the
// appliance; handed to Maglev it would reach another backend, which would
// answer for the one probed. process drops it (probe_looped), so the probe
// fails as it should.
func (s *Snapshot) fromPort(src uint32) bool {
	for i := range s.Ports {
		if s.Ports[i].IP == src {
			return true
		}
	}
	return false
}

// fromPort6 is fromPort for an IPv6 source: a new flow from a port's
// IPv6 address to an IPv6 VIP is a probe looped back (toService6).
func (s *Snapshot) fromPort6(src *[16]byte) bool {
	for i := range s.Ports {
		if s.Ports[i].IP6 == *src {
			return true
		}
	}
	return false
}

// toProbed decides p, a packet the probe namespace's kernel sent through
// the probe port: a probe to a VIP, sent to the one backend its source
// port names with that backend's headers (as a client's packet, without
// the flow table). It returns the verdict and the egress port.
func (f *Forwarder) toProbed(s *Snapshot, p *packet.Packet) (Verdict, int, DropReason) {
	if p.Off < 0 || p.Len < 0 || p.Off+p.Len > len(p.Buf) {
		return VerdictDrop, 0, DropTruncated
	}
	frame := p.Buf[p.Off : p.Off+p.Len]
	const l3 = EthernetMinSize
	if len(frame) < l3+IPv4MinSize {
		return VerdictDrop, 0, DropTruncated
	}
	switch et := uint16(frame[12])<<8 | uint16(frame[13]); et {
	case EtherTypeIPv4:
	case EtherTypeIPv6:
		return f.toProbed6(s, p, frame)
	default:
		return VerdictDrop, 0, DropProbeUnmatched // ARP: the probe namespace has nothing to say on the wire
	}
	ip := IPv4(frame[l3:])
	ihl := ip.HeaderLen()
	if ip.Version() != 4 || ihl < IPv4MinSize || ihl > len(ip) {
		return VerdictDrop, 0, DropBadIHL
	}
	tot := int(ip.TotalLen())
	if tot < ihl+4 || tot > len(ip) {
		return VerdictDrop, 0, DropBadTotalLen
	}
	ip = ip[:tot]
	proto := ip.Protocol()
	if proto != ProtoTCP && proto != ProtoUDP {
		return VerdictDrop, 0, DropProbeUnmatched
	}
	d, ok := s.probeDest(Ports(ip[ihl:]).Src())
	if !ok {
		return VerdictDrop, 0, DropProbeUnmatched
	}
	svc := &s.Services[d.svc]
	if svc.IPv6 || ip.DstU32() != svc.VIP {
		return VerdictDrop, 0, DropProbeUnmatched
	}
	return f.sendProbe(s, &svc.Backends[d.backend], p, l3, tot, ip[ipv4TOS], ip.FlagsFrag()&IPv4FlagDF)
}

// toProbed6 is toProbed for an IPv6 frame from the probe port: a probe to
// an IPv6 VIP. What else the probe namespace's kernel might send (it is
// set up to send no neighbour discovery, router solicitation or MLD:
// kernel.ProbeNS) is dropped as probe_unmatched.
func (f *Forwarder) toProbed6(s *Snapshot, p *packet.Packet, frame []byte) (Verdict, int, DropReason) {
	const l3 = EthernetMinSize
	if len(frame) < l3+IPv6HeaderSize {
		return VerdictDrop, 0, DropTruncated
	}
	ip := IPv6(frame[l3:])
	if ip.Version() != 6 {
		return VerdictDrop, 0, DropBadVersion
	}
	tot := IPv6HeaderSize + int(ip.PayloadLen())
	if tot > len(ip) {
		return VerdictDrop, 0, DropBadTotalLen
	}
	ip = ip[:tot]
	proto, off, r := upperLayer6(ip)
	if r != DropNone {
		return VerdictDrop, 0, r
	}
	if proto != ProtoTCP && proto != ProtoUDP || off+4 > tot {
		return VerdictDrop, 0, DropProbeUnmatched
	}
	d, ok := s.probeDest(Ports(ip[off:]).Src())
	if !ok {
		return VerdictDrop, 0, DropProbeUnmatched
	}
	svc := &s.Services[d.svc]
	if !svc.IPv6 || svc.VIP6 != *(*[16]byte)(ip[ipv6Dst:]) {
		return VerdictDrop, 0, DropProbeUnmatched
	}
	// DF as for an IPv6 client's packet in an IPv4 envelope (toService6).
	return f.sendProbe(s, &svc.Backends[d.backend], p, l3, tot, ip.TrafficClass(), IPv4FlagDF)
}

// sendProbe puts b's headers in front of p, a probe of tot bytes at l3
// (TOS or traffic class tos, DF flag df for an IPv4 envelope), and
// counts it.
func (f *Forwarder) sendProbe(s *Snapshot, b *Backend, p *packet.Packet, l3, tot int, tos uint8, df uint16) (Verdict, int, DropReason) {
	if !b.resolved {
		return VerdictDrop, 0, DropNoRoute // next hop not resolved
	}
	if tot+b.Overhead() > s.Ports[b.Port].MTU {
		return VerdictDrop, 0, DropTooBig
	}
	start := b.frameStart(p.Off, l3)
	if start < 0 {
		return VerdictDrop, 0, DropTruncated
	}
	f.writeHeaders(b, p, start, l3, tot, tos, df, 0)
	f.C.ProbesSent++
	f.C.Backends[b.ID].Probes++
	return VerdictTx, b.Port, DropNone
}

// ProbeSource returns where the probes through the VIP of backend (of
// service) come from: the address of the VIP's family on the backend's
// egress port (IP or IP6) and the first port of its block; false when it
// is not probed through the VIP, or that port has no address of the VIP's
// family.
func (s *Snapshot) ProbeSource(service string, backend netip.Addr) (netip.AddrPort, bool) {
	svc := s.FindService(service)
	if svc == nil {
		return netip.AddrPort{}, false
	}
	i := svc.BackendByAddr(backend)
	if i < 0 || svc.Backends[i].probePort == 0 {
		return netip.AddrPort{}, false
	}
	b := &svc.Backends[i]
	port := &s.Ports[b.Port]
	if svc.IPv6 {
		if port.IP6 == ([16]byte{}) {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16(port.IP6), b.probePort), true
	}
	var ip [4]byte
	binary.BigEndian.PutUint32(ip[:], port.IP)
	return netip.AddrPortFrom(netip.AddrFrom4(ip), b.probePort), true
}

// ProbeResolved tells whether the next hop of backend (of service) is
// resolved in s: while it is not, the data plane drops its probes
// (no_route), so the health checker sends none.
func (s *Snapshot) ProbeResolved(service string, backend netip.Addr) bool {
	svc := s.FindService(service)
	if svc == nil {
		return false
	}
	i := svc.BackendByAddr(backend)
	return i >= 0 && svc.Backends[i].resolved
}
