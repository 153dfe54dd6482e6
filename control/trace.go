package control

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// FlowAnswer is one worker's answer to a flow table lookup.
type FlowAnswer struct {
	Probe pipeline.FlowProbe
	// Answered is false when the worker did not answer in time.
	Answered bool
}

// FlowLookup asks every worker what its flow table holds for a flow, one
// answer per worker in worker order (pipeline.Worker.LookupFlow).
type FlowLookup interface {
	LookupFlow(k pipeline.TraceKey) []FlowAnswer
}

// traceClientMAC is the source MAC of a traced frame: the data plane does
// not look at it.
var traceClientMAC = [6]byte{0x02, 0, 0, 0, 0, 0xfe}

// maxTraceSize is the largest payload a trace request may ask for.
const maxTraceSize = 9000

// tcpFlagNames are the flags a trace request may set.
var tcpFlagNames = map[string]uint8{"syn": pipeline.TCPFlagSYN, "ack": pipeline.TCPFlagACK,
	"fin": pipeline.TCPFlagFIN, "rst": pipeline.TCPFlagRST, "psh": 0x08}

// tracePacket checks req and builds its frame as received on a port of t
// (an IPv4 packet with DF, TTL 64, or an IPv6 one with hop limit 64),
// returning the frame and the port index.
func tracePacket(t *Typed, snap *pipeline.Snapshot, req v1.TraceRequest) ([]byte, int, error) {
	var errs errList
	vip, err := netip.ParseAddr(req.VIP)
	if err != nil || vip.Is4In6() || vip.Zone() != "" {
		errs.add(rootField("vip"), "want an IPv4 or IPv6 address, got %q", req.VIP)
	}
	p := testpkt.Packet{SrcMAC: traceClientMAC, Dst: vip, DF: true, TTL: 64, PadTo: 60, TCPFlags: pipeline.TCPFlagSYN}
	switch req.Protocol {
	case "tcp":
		p.Proto = pipeline.ProtoTCP
	case "udp":
		p.Proto = pipeline.ProtoUDP
	default:
		errs.add(rootField("protocol"), "want tcp or udp, got %q", req.Protocol)
	}
	src, err := netip.ParseAddrPort(req.Src)
	switch {
	case err != nil:
		errs.add(rootField("src"), "want IP:PORT ([IPv6]:PORT), got %q", req.Src)
	case vip.IsValid() && src.Addr().Is4() != vip.Is4():
		errs.add(rootField("src"), "%v and the VIP %v are of different families", src.Addr(), vip)
	}
	p.Src, p.SrcPort = src.Addr(), src.Port()
	if req.DstPort < 0 || req.DstPort > 65535 {
		errs.add(rootField("dport"), "must be 0..65535, got %d", req.DstPort)
	}
	p.DstPort = uint16(req.DstPort)
	if req.Flags != "" && p.Proto == pipeline.ProtoTCP {
		p.TCPFlags = 0
		for _, f := range strings.Split(req.Flags, ",") {
			bit, ok := tcpFlagNames[strings.ToLower(strings.TrimSpace(f))]
			if !ok {
				errs.add(rootField("flags"), "unknown TCP flag %q (syn, ack, fin, rst, psh)", f)
			}
			p.TCPFlags |= bit
		}
	}
	if req.Size < 0 || req.Size > maxTraceSize {
		errs.add(rootField("size"), "must be 0..%d, got %d", maxTraceSize, req.Size)
	} else {
		p.Payload = make([]byte, req.Size)
	}
	port := 0
	if req.Port != "" {
		port = -1
		for i, tp := range t.Ports {
			if tp.Name == req.Port {
				port = i
			}
		}
		if port < 0 {
			errs.add(rootField("port"), "no port named %q", req.Port)
		}
	}
	if err := errs.err(); err != nil {
		return nil, 0, err
	}
	if port < len(snap.Ports) {
		p.DstMAC = snap.Ports[port].MAC
	}
	return p.Build(), port, nil
}

// Trace answers req: it builds the packet, asks the workers (flows, may be
// nil) whether their flow tables hold its flow, and runs it through the
// data plane's code on snap, the published snapshot, with the seed of t
// (pipeline.Snapshot.Trace). Nothing of the workers changes. A bad request
// is a FieldErrors naming each field.
func Trace(snap *pipeline.Snapshot, t *Typed, req v1.TraceRequest, flows FlowLookup) (v1.TraceResult, error) {
	frame, rxPort, err := tracePacket(t, snap, req)
	if err != nil {
		return v1.TraceResult{}, err
	}
	res := v1.TraceResult{Generation: snap.Generation}
	var held pipeline.FlowProbe
	worker := -1
	if k, ok := pipeline.TraceKeyOf(frame); ok && flows != nil {
		answers := flows.LookupFlow(k)
		res.Workers = len(answers)
		for i, a := range answers {
			if !a.Answered {
				continue
			}
			res.WorkersAnswered++
			if a.Probe.Found && worker < 0 {
				held, worker = a.Probe, i
			}
		}
	}
	tr := snap.Trace(frame, rxPort, t.Seed, held)
	res.Verdict = map[pipeline.Verdict]string{pipeline.VerdictTx: v1.TraceForward, pipeline.VerdictKernel: v1.TraceKernel,
		pipeline.VerdictDrop: v1.TraceDrop}[tr.Verdict]
	if tr.FragNeeded {
		res.Verdict = v1.TraceFragNeeded
	}
	var svc *pipeline.Service
	if tr.Service >= 0 {
		svc = &snap.Services[tr.Service]
		res.Service, res.Mode = svc.Name, svc.Mode.String()
		for _, b := range svc.Backends {
			res.Backends = append(res.Backends, v1.TraceBackend{IP: b.Addr.String(), Weight: b.Weight,
				Forwarding: b.State.String(), Usable: b.State == pipeline.BackendActive && b.Weight > 0})
		}
		m := &v1.TraceMaglev{Hash: tr.MaglevHash, Slot: tr.MaglevSlot, TableSize: len(svc.Table)}
		if tr.MaglevBackend >= 0 {
			m.Backend = svc.Backends[tr.MaglevBackend].Addr.String()
		}
		res.Maglev = m
		if worker >= 0 && held.Service == svc.ID {
			res.Flow = &v1.TraceFlow{Worker: worker, Backend: "a backend no longer in the service", State: held.State,
				ExpiresInMS: held.ExpiresIn.Milliseconds(), Remapped: tr.Remapped}
			if j := held.BackendIndex(svc); j >= 0 {
				res.Flow.Backend = svc.Backends[j].Addr.String()
			}
		}
	}
	if tr.Verdict == pipeline.VerdictTx {
		res.Envelope = envelopeOf(t, tr.Frame, tr.Egress)
		if svc != nil && !tr.FragNeeded {
			res.Envelope.Mode = svc.Mode.String()
		}
	}
	switch {
	case tr.Verdict == pipeline.VerdictDrop:
		res.DropReason = tr.Drop.String()
		res.Reason = "dropped: " + res.DropReason
		if svc != nil {
			res.Reason += " (service " + svc.Name + ")"
		}
	case tr.Verdict == pipeline.VerdictKernel:
		res.Reason = "to the kernel: the appliance's own address, ARP, ICMP echo or multicast"
	case tr.FragNeeded:
		res.Reason = fmt.Sprintf("too big for the %s envelope with DF set: ICMP fragmentation needed back to the client", svc.Mode)
	case tr.Backend >= 0:
		b := &svc.Backends[tr.Backend]
		res.Backend = b.Addr.String()
		if tr.ByFlow {
			res.Decision = v1.TraceByFlowTable
			res.Reason = fmt.Sprintf("established flow: worker %d's flow table holds it on %s (%s)", worker, res.Backend, b.State)
		} else {
			res.Decision = v1.TraceByMaglev
			res.Reason = fmt.Sprintf("new flow: Maglev slot %d of %d holds %s", tr.MaglevSlot, len(svc.Table), res.Backend)
			if tr.Remapped && res.Flow != nil {
				res.Reason += fmt.Sprintf("; the flow table's %s no longer carries flows", res.Flow.Backend)
			}
		}
		if hop, _ := t.NextHop(b.Addr); hop.IsValid() && res.Envelope != nil {
			res.Envelope.NextHop = hop.String()
		}
	}
	return res, nil
}

// envelopeOf describes frame as it leaves port egress.
func envelopeOf(t *Typed, frame []byte, egress int) *v1.TraceEnvelope {
	e := &v1.TraceEnvelope{Length: len(frame)}
	if egress < len(t.Ports) {
		e.EgressPort = t.Ports[egress].Name
	}
	if len(frame) < pipeline.EthernetMinSize {
		return e
	}
	e.DstMAC = pipeline.MAC(frame[0:6]).String()
	e.SrcMAC = pipeline.MAC(frame[6:12]).String()
	l3 := pipeline.EthernetMinSize
	et := binary.BigEndian.Uint16(frame[12:])
	if et == pipeline.EtherTypeVLAN && len(frame) >= l3+pipeline.VLANTagSize {
		l3 += pipeline.VLANTagSize
		et = binary.BigEndian.Uint16(frame[16:])
	}
	ip := frame[l3:]
	// An envelope is an outer header carrying IPv4 (4), IPv6 (41) or GRE
	// (47); the client's own packet carries TCP or UDP.
	envelope := func(p uint8) bool { return p == pipeline.ProtoIPIP || p == 41 || p == pipeline.ProtoGRE }
	switch {
	case et == pipeline.EtherTypeIPv4 && len(ip) >= pipeline.IPv4MinSize && envelope(ip[9]):
		e.OuterSrc = netip.AddrFrom4([4]byte(ip[12:16])).String()
		e.OuterDst = netip.AddrFrom4([4]byte(ip[16:20])).String()
		e.OuterProto = int(ip[9])
	case et == pipeline.EtherTypeIPv6 && len(ip) >= pipeline.IPv6HeaderSize && envelope(ip[6]):
		e.OuterSrc = netip.AddrFrom16([16]byte(ip[8:24])).String()
		e.OuterDst = netip.AddrFrom16([16]byte(ip[24:40])).String()
		e.OuterProto = int(ip[6])
	}
	return e
}
