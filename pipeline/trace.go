package pipeline

import (
	"sync/atomic"
	"time"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// FlowProbe is what one worker's flow table holds for a flow
// (Worker.LookupFlow): a live entry's service, backend and state.
type FlowProbe struct {
	// Found reports a live entry; the other fields are zero without one.
	Found   bool
	Service uint32 // Service.ID
	Backend uint32 // the backend's IPv4 address, host order
	// State is the entry's TCP state (syn, established, closing), udp,
	// or new before its first refresh.
	State string
	// ExpiresIn is how long the entry lives without another packet.
	ExpiresIn time.Duration
	state     uint8
}

// flowStateNames are FlowProbe.State by flowEntry.state.
var flowStateNames = [...]string{0: "new", flowStateSyn: "syn", flowStateEstablished: "established",
	flowStateClosing: "closing", flowStateUDP: "udp"}

// probe looks k up in ft at time now without changing anything (no
// counters, no refresh, no expiry): safe only from the table's owner.
func (ft *FlowTable) probe(k *FlowKey, seed, now uint32) FlowProbe {
	addrs, tag := k.words()
	e := ft.find(addrs, tag, slotHash(addrs, tag, seed))
	if e == nil || int32(e.expires-now) <= 0 {
		return FlowProbe{}
	}
	p := FlowProbe{Found: true, Service: e.service, Backend: e.backend, state: e.state,
		ExpiresIn: time.Duration(e.expires-now) * time.Millisecond}
	if int(e.state) < len(flowStateNames) {
		p.State = flowStateNames[e.state]
	}
	return p
}

// flowRequest is one LookupFlow waiting for a running worker's answer.
type flowRequest struct {
	key  FlowKey
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
func (w *Worker) LookupFlow(k FlowKey) (FlowProbe, bool) {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	if !w.running.Load() {
		return w.Flows.probe(&k, w.Seed, w.Now), true
	}
	r := &flowRequest{key: k}
	w.flowReq.Store(r)
	deadline := time.Now().Add(publishWait)
	for !r.done.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Microsecond)
	}
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
	key, ok := traceKey(frame)
	if ok {
		if si := s.LookupService(key.Dst, key.Proto, key.DstPort); si >= 0 {
			tr.Service = si
			svc := &s.Services[si]
			tr.MaglevHash = keyHash(&key, seed)
			if len(svc.Table) > 0 {
				tr.MaglevSlot = tr.MaglevHash % uint32(len(svc.Table))
				if t := svc.Table[tr.MaglevSlot]; t != MaglevNone {
					tr.MaglevBackend = int(t)
				}
			}
			if held.Found && held.Service == svc.ID {
				e := f.Flows.Insert(&key, slotHashKey(&key, seed), f.Now, held.Service, held.Backend)
				e.state = held.state
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
	addrs, tag := key.words()
	if e := f.Flows.find(addrs, tag, slotHashKey(&key, seed)); e != nil {
		tr.Backend = svc.BackendIndex(e.backend)
	}
	tr.ByFlow = tr.Backend >= 0 && f.C.Backends[svc.Backends[tr.Backend].ID].NewFlows == 0
	return tr
}

// traceKey returns the flow of an untagged or 802.1Q-tagged IPv4 TCP or
// UDP frame.
func traceKey(frame []byte) (FlowKey, bool) {
	l3 := EthernetMinSize
	if len(frame) < l3+IPv4MinSize {
		return FlowKey{}, false
	}
	et := uint16(frame[12])<<8 | uint16(frame[13])
	if et == EtherTypeVLAN {
		l3 += VLANTagSize
		et = uint16(frame[16])<<8 | uint16(frame[17])
	}
	if et != EtherTypeIPv4 || len(frame) < l3+IPv4MinSize {
		return FlowKey{}, false
	}
	ip := IPv4(frame[l3:])
	ihl := ip.HeaderLen()
	proto := ip.Protocol()
	if (proto != ProtoTCP && proto != ProtoUDP) || ihl < IPv4MinSize || len(ip) < ihl+4 {
		return FlowKey{}, false
	}
	l4 := Ports(ip[ihl:])
	return FlowKey{Src: ip.SrcU32(), Dst: ip.DstU32(), SrcPort: l4.Src(), DstPort: l4.Dst(), Proto: proto}, true
}
