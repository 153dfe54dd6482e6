package pipeline

import (
	"sync/atomic"
	"time"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// TraceKey is the flow of a traced packet: IPv4 (V4) or IPv6 (V6, Is6).
type TraceKey struct {
	Is6 bool
	V4  FlowKey
	V6  FlowKey6
}

// FlowProbe is what one worker's flow table holds for a flow
// (Worker.LookupFlow): a live entry's service, backend and state.
type FlowProbe struct {
	// Found reports a live entry; the other fields are zero without one.
	Found   bool
	Service uint32 // Service.ID
	// State is the entry's TCP state (syn, established, closing), udp,
	// or new before its first refresh.
	State string
	// ExpiresIn is how long the entry lives without another packet.
	ExpiresIn time.Duration
	state     uint8
	// backend and b6 are the entry's backend: an IPv4 address, or the
	// Backend.ID of an IPv6 backend (flowEntry).
	backend uint32
	b6      bool
}

// BackendIndex returns the index in svc.Backends of the entry's backend,
// -1 when svc no longer has it.
func (p FlowProbe) BackendIndex(svc *Service) int {
	if p.b6 {
		return svc.backendIndexByID(p.backend)
	}
	return svc.BackendIndex(p.backend)
}

// FlowProbeForTest is a probe of a live entry of service on backend b of
// svc, for tests of the probe's users.
func FlowProbeForTest(svc *Service, b int, state string, expiresIn time.Duration) FlowProbe {
	be := &svc.Backends[b]
	p := FlowProbe{Found: true, Service: svc.ID, State: state, ExpiresIn: expiresIn, backend: be.IP, b6: be.Addr.Is6()}
	if p.b6 {
		p.backend = be.ID
	}
	for i, n := range flowStateNames {
		if n == state {
			p.state = uint8(i)
		}
	}
	return p
}

// flowStateNames are FlowProbe.State by flowEntry.state.
var flowStateNames = [...]string{0: "new", flowStateSyn: "syn", flowStateEstablished: "established",
	flowStateClosing: "closing", flowStateUDP: "udp"}

// probe looks k up in ft at time now without changing anything (no
// counters, no refresh, no expiry): safe only from the table's owner.
func (ft *FlowTable) probe(k *TraceKey, seed, now uint32) FlowProbe {
	var e *flowEntry
	if !k.Is6 {
		addrs, tag := k.V4.words()
		e = ft.find(addrs, tag, slotHash(addrs, tag, seed))
	} else if ft.buckets6 != nil {
		tag := k.V6.tag()
		b := &ft.buckets6[slotHash6(&k.V6, seed)&ft.mask]
		for i := range b {
			if b[i].tag == tag && b[i].src == k.V6.Src && b[i].dst == k.V6.Dst {
				e = &b[i].flowEntry
				break
			}
		}
	}
	if e == nil || int32(e.expires-now) <= 0 {
		return FlowProbe{}
	}
	p := FlowProbe{Found: true, Service: e.service, backend: e.backend, b6: e.b6, state: e.state,
		ExpiresIn: time.Duration(e.expires-now) * time.Millisecond}
	if int(e.state) < len(flowStateNames) {
		p.State = flowStateNames[e.state]
	}
	return p
}

// flowRequest is one LookupFlow waiting for a running worker's answer.
type flowRequest struct {
	key  TraceKey
	out  FlowProbe
	done atomic.Bool
}

// answerFlowRequest answers a pending LookupFlow from the worker's own
// goroutine, between two bursts.
func (w *Worker) answerFlowRequest(r *flowRequest) {
	r.out = w.Flows.probe(&r.key, w.Seed, w.Now)
	w.flowReq.CompareAndSwap(r, nil)
	r.done.Store(true)
}

// LookupFlow tells what the worker's flow table holds for k, read-only.
// While Run is active the worker answers between two bursts: the request
// is one atomic pointer the loop loads once per round, so that the table
// is only ever read by its owner; LookupFlow waits up to a second for the
// answer and reports false if none came (a worker stuck in a driver call).
// Otherwise it reads the table itself.
func (w *Worker) LookupFlow(k TraceKey) (FlowProbe, bool) {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	if !w.running.Load() {
		return w.Flows.probe(&k, w.Seed, w.Now), true
	}
	r := &flowRequest{key: k}
	w.flowReq.Store(r)
	awaitWorker(r.done.Load)
	if !r.done.Load() {
		// Withdrawn unless the worker took it (then it answers into r,
		// which nobody reads any more).
		w.flowReq.CompareAndSwap(r, nil)
		return FlowProbe{}, false
	}
	return r.out, true
}

// Trace is what the data plane does with one packet, found by running it
// through Process on a scratch Forwarder: the same code and snapshot as
// the workers, with none of their state touched.
type Trace struct {
	Verdict Verdict
	// Drop is the reason of VerdictDrop.
	Drop DropReason
	// FragNeeded: the VerdictTx packet is the ICMP fragmentation needed
	// sent back to the client instead of the packet.
	FragNeeded bool
	// Egress is the NIC port of VerdictTx.
	Egress int
	// Service is the index in Snapshot.Services of the service that owns
	// the packet, -1 for none; Backend the index of the chosen backend in
	// its Backends, -1 for none.
	Service, Backend int
	// ByFlow: the worker's flow table entry (the held FlowProbe) chose
	// the backend; otherwise Maglev did (a new flow). Remapped: the entry
	// pointed to a backend that no longer carries flows, so Maglev chose.
	ByFlow, Remapped bool
	// MaglevHash is the flow hash, MaglevSlot its slot in the service's
	// table and MaglevBackend the index of the backend the slot holds
	// (-1: no backend takes new flows): where a new flow goes.
	MaglevHash    uint32
	MaglevSlot    uint32
	MaglevBackend int
	// Frame is the packet as it would leave (VerdictTx), or as received.
	Frame []byte
}

// traceHeadroom is the headroom of the traced packet's buffer: more than
// any envelope.
const traceHeadroom = 128

// Trace runs frame, received on port rxPort, through Process with a
// scratch flow table that holds, when held is a live entry (FlowProbe
// of a worker), that entry. seed is the workers' flow hash seed. It
// allocates and touches nothing shared: for the control plane.
func (s *Snapshot) Trace(frame []byte, rxPort int, seed uint32, held FlowProbe) Trace {
	tr := Trace{Service: -1, Backend: -1, MaglevBackend: -1}
	f := NewForwarder(flowWays, DefaultFlowTimeouts, seed)
	f.Now = 1 << 20
	f.Use(s)
	key, ok := TraceKeyOf(frame)
	var e *flowEntry // the flow's entry in the scratch table
	if ok {
		si := -1
		if key.Is6 {
			si = s.LookupService6(&key.V6.Dst, key.V6.Proto, key.V6.DstPort)
			tr.MaglevHash = keyHash6(&key.V6, seed)
		} else {
			si = s.LookupService(key.V4.Dst, key.V4.Proto, key.V4.DstPort)
			tr.MaglevHash = keyHash(&key.V4, seed)
		}
		if si >= 0 {
			tr.Service = si
			svc := &s.Services[si]
			if len(svc.Table) > 0 {
				tr.MaglevSlot = tr.MaglevHash % uint32(len(svc.Table))
				if t := svc.Table[tr.MaglevSlot]; t != MaglevNone {
					tr.MaglevBackend = int(t)
				}
			}
			if held.Found && held.Service == svc.ID {
				if key.Is6 {
					f.Flows.enable6()
					e = f.Flows.Insert6(&key.V6, slotHash6(&key.V6, seed), f.Now, svc.ID)
				} else {
					e = f.Flows.Insert(&key.V4, slotHashKey(&key.V4, seed), f.Now, svc.ID, 0)
				}
				e.backend, e.b6, e.state = held.backend, held.b6, held.state
			}
		}
	}
	buf := make([]byte, traceHeadroom+len(frame))
	copy(buf[traceHeadroom:], frame)
	p := packet.Packet{Buf: buf, Off: traceHeadroom, Len: len(frame)}
	v, out, r := f.process(s, &p, rxPort, 0, false)
	if v == verdictSegment {
		v, r = VerdictDrop, DropSuperframe
	}
	tr.Verdict, tr.Drop, tr.Egress = v, r, out
	tr.Frame = append([]byte(nil), p.Data()...)
	tr.FragNeeded = f.C.FragNeededSent > 0
	tr.Remapped = f.C.FlowRemapped > 0
	if v != VerdictTx || tr.FragNeeded || tr.Service < 0 {
		return tr
	}
	svc := &s.Services[tr.Service]
	if key.Is6 {
		e = f.Flows.Lookup6(&key.V6, slotHash6(&key.V6, seed), f.Now)
	} else {
		addrs, tag := key.V4.words()
		e = f.Flows.find(addrs, tag, slotHashKey(&key.V4, seed))
	}
	if e != nil {
		tr.Backend = e.backendIndex(svc)
	}
	tr.ByFlow = tr.Backend >= 0 && f.C.Backends[svc.Backends[tr.Backend].ID].NewFlows == 0
	return tr
}

// TraceKeyOf returns the flow of an untagged or 802.1Q-tagged IPv4 or
// IPv6 (no extension headers) TCP or UDP frame.
func TraceKeyOf(frame []byte) (TraceKey, bool) {
	l3 := EthernetMinSize
	if len(frame) < l3+IPv4MinSize {
		return TraceKey{}, false
	}
	et := uint16(frame[12])<<8 | uint16(frame[13])
	if et == EtherTypeVLAN {
		l3 += VLANTagSize
		et = uint16(frame[16])<<8 | uint16(frame[17])
	}
	switch {
	case et == EtherTypeIPv4 && len(frame) >= l3+IPv4MinSize:
		ip := IPv4(frame[l3:])
		ihl := ip.HeaderLen()
		proto := ip.Protocol()
		if (proto != ProtoTCP && proto != ProtoUDP) || ihl < IPv4MinSize || len(ip) < ihl+4 {
			return TraceKey{}, false
		}
		l4 := Ports(ip[ihl:])
		return TraceKey{V4: FlowKey{Src: ip.SrcU32(), Dst: ip.DstU32(), SrcPort: l4.Src(), DstPort: l4.Dst(), Proto: proto}}, true
	case et == EtherTypeIPv6 && len(frame) >= l3+IPv6HeaderSize+4:
		ip := IPv6(frame[l3:])
		proto := ip.NextHeader()
		if proto != ProtoTCP && proto != ProtoUDP {
			return TraceKey{}, false
		}
		l4 := Ports(ip[IPv6HeaderSize:])
		return TraceKey{Is6: true, V6: FlowKey6{Src: ip.Src(), Dst: ip.Dst(), SrcPort: l4.Src(), DstPort: l4.Dst(), Proto: proto}}, true
	}
	return TraceKey{}, false
}
