package pipeline

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// CaptureFilter selects the packets a capture keeps: those to VIP (IPv4
// or IPv6) and, when Backend is valid, only those sent to that backend: in
// an envelope to it (ipip, gre) or, without one (l2), to BackendMAC.
type CaptureFilter struct {
	VIP        netip.Addr
	Backend    netip.Addr
	BackendMAC MAC
}

// captureMatch is a CaptureFilter in the form the worker compares.
type captureMatch struct {
	vip6, backend6 bool
	vip, backend   [16]byte // IPv4 in the first 4 bytes
	anyBackend     bool
	backendMAC     MAC
}

func (f CaptureFilter) match() captureMatch {
	m := captureMatch{vip6: f.VIP.Is6(), backend6: f.Backend.Is6(), anyBackend: !f.Backend.IsValid(), backendMAC: f.BackendMAC}
	copy(m.vip[:], f.VIP.AsSlice())
	copy(m.backend[:], f.Backend.AsSlice())
	return m
}

// CaptureRecord is one captured packet as received (In) and as sent (Out,
// empty unless the verdict is VerdictTx), each cut to the ring's snap
// length, with their lengths on the wire.
type CaptureRecord struct {
	Time    time.Time
	Verdict Verdict
	// Segmented: a TCP super-frame the worker cut into segments, each
	// forwarded on its own and not captured; Verdict is then VerdictDrop.
	Segmented     bool
	In, Out       []byte
	InLen, OutLen int
}

// captureSlot is one record of a ring; its buffers are allocated with the
// ring.
type captureSlot struct {
	time          int64
	verdict       Verdict
	keep          bool
	in, out       []byte // snap bytes each
	inN, outN     int    // bytes held
	inLen, outLen int
}

// CaptureRing is one worker's live capture: a ring of preallocated
// records that the worker fills (never blocking, never allocating: a full
// ring counts the packet as lost) and control drains. Single producer (the
// worker), single consumer (Drain).
type CaptureRing struct {
	filter captureMatch
	slots  []captureSlot
	head   atomic.Uint64 // records published by the worker
	tail   atomic.Uint64 // records consumed by Drain
	lost   atomic.Uint64
}

// NewCaptureRingMin is the fewest records a ring has: one burst.
const NewCaptureRingMin = packet.BurstSize

// NewCaptureRing returns a ring of size records of up to snap bytes per
// packet (both directions) for f. Memory: 2 * size * snap bytes.
func NewCaptureRing(f CaptureFilter, size, snap int) *CaptureRing {
	r := &CaptureRing{filter: f.match(), slots: make([]captureSlot, max(size, NewCaptureRingMin))}
	mem := make([]byte, 2*len(r.slots)*snap)
	for i := range r.slots {
		r.slots[i].in = mem[2*i*snap : (2*i+1)*snap : (2*i+1)*snap]
		r.slots[i].out = mem[(2*i+1)*snap : (2*i+2)*snap : (2*i+2)*snap]
	}
	return r
}

// Lost returns how many matching packets found the ring full.
func (r *CaptureRing) Lost() uint64 { return r.lost.Load() }

// Drain calls fn with every record published since the last Drain, oldest
// first, and frees them; fn must not keep the record's slices. Drain and
// the worker may run at once; two Drains may not.
func (r *CaptureRing) Drain(fn func(*CaptureRecord)) int {
	tail, head := r.tail.Load(), r.head.Load()
	var rec CaptureRecord
	n := 0
	for ; tail < head; tail++ {
		s := &r.slots[tail%uint64(len(r.slots))]
		if !s.keep {
			continue
		}
		rec = CaptureRecord{Time: time.Unix(0, s.time), Verdict: s.verdict, Segmented: s.verdict == verdictSegment,
			In: s.in[:s.inN], InLen: s.inLen, Out: s.out[:s.outN], OutLen: s.outLen}
		if rec.Segmented {
			rec.Verdict = VerdictDrop // the super-frame itself is freed
		}
		fn(&rec)
		n++
	}
	r.tail.Store(tail)
	return n
}

// toVIP reports whether the untagged or 802.1Q-tagged frame f is an IP
// packet to m's VIP.
func (m *captureMatch) toVIP(f []byte) bool {
	l3, et := EthernetMinSize, uint16(0)
	if len(f) >= EthernetMinSize+VLANTagSize {
		if et = binary.BigEndian.Uint16(f[12:]); et == EtherTypeVLAN {
			l3, et = l3+VLANTagSize, binary.BigEndian.Uint16(f[16:])
		}
	}
	switch {
	case !m.vip6 && et == EtherTypeIPv4 && len(f) >= l3+IPv4MinSize:
		return [4]byte(f[l3+ipv4Dst:]) == [4]byte(m.vip[:])
	case m.vip6 && et == EtherTypeIPv6 && len(f) >= l3+IPv6HeaderSize:
		return [16]byte(f[l3+ipv6Dst:]) == m.vip
	}
	return false
}

// ArmCapture makes the worker capture into r from its next round; nil
// disarms it. Disarmed, the worker pays one atomic load per round.
func (w *Worker) ArmCapture(r *CaptureRing) { w.capArm.Store(r) }

// CaptureIdle reports whether the worker no longer uses r: it saw the ring
// it was last armed with replaced (ArmCapture) at the start of a round, so
// r is drained completely once CaptureIdle is true. A worker that is not
// running is idle.
func (w *Worker) CaptureIdle(r *CaptureRing) bool {
	return !w.running.Load() || w.capAck.Load() != r
}

// captureIn reserves a record for each packet of the burst to the
// filter's VIP and copies it as received; capSlot[i] is its record + 1.
func (w *Worker) captureIn(pkts []packet.Packet) {
	r := w.capRing
	head := r.head.Load()
	free := uint64(len(r.slots)) - (head - r.tail.Load())
	var now int64
	k := uint64(0)
	for i := range pkts {
		w.capSlot[i] = 0
		p := &pkts[i]
		if p.Off < 0 || p.Off+p.Len > len(p.Buf) || !r.filter.toVIP(p.Buf[p.Off:p.Off+p.Len]) {
			continue
		}
		if k == free {
			r.lost.Add(1)
			continue
		}
		if now == 0 {
			now = time.Now().UnixNano()
		}
		s := &r.slots[(head+k)%uint64(len(r.slots))]
		k++
		s.time, s.verdict, s.keep, s.outN, s.outLen = now, verdictSegment, r.filter.anyBackend, 0, 0
		s.inLen = p.Len
		s.inN = copy(s.in, p.Buf[p.Off:p.Off+p.Len])
		w.capSlot[i] = uint32(head + k) // record head+k-1, plus one
	}
	w.capPending = k
}

// captureOut records the verdict of packets lo..hi-1 of the burst (taken:
// the fast path's) and copies those sent as they leave, before they are
// handed to the driver.
func (w *Worker) captureOut(pkts []packet.Packet, lo, hi int, taken uint32) {
	r := w.capRing
	for i := lo; i < hi; i++ {
		if w.capSlot[i] == 0 {
			continue
		}
		s := &r.slots[uint64(w.capSlot[i]-1)%uint64(len(r.slots))]
		v := w.verdict[i]
		if taken&(1<<uint(i)) != 0 {
			v = VerdictTx
		}
		s.verdict = v
		if v != VerdictTx {
			continue
		}
		p := &pkts[i]
		f := p.Buf[p.Off : p.Off+p.Len]
		s.outLen = p.Len
		s.outN = copy(s.out, f)
		if !r.filter.anyBackend {
			s.keep = r.filter.sentTo(f)
		}
	}
}

// capturePublish hands the records of the burst to the consumer.
func (w *Worker) capturePublish() {
	if w.capPending > 0 {
		w.capRing.head.Add(w.capPending)
		w.capPending = 0
	}
}

// sentTo reports whether frame f, as sent, goes to m's backend: the outer
// destination of an envelope (IPv4 or IPv6 carrying IPv4, IPv6 or GRE),
// else (L2) the destination MAC.
func (m *captureMatch) sentTo(f []byte) bool {
	envelope := func(p uint8) bool { return p == ProtoIPIP || p == ProtoIPv6 || p == ProtoGRE }
	if len(f) >= EthernetMinSize+IPv6HeaderSize {
		switch binary.BigEndian.Uint16(f[12:]) {
		case EtherTypeIPv4:
			if envelope(f[EthernetMinSize+ipv4Protocol]) {
				return !m.backend6 && [4]byte(f[EthernetMinSize+ipv4Dst:]) == [4]byte(m.backend[:])
			}
		case EtherTypeIPv6:
			if envelope(f[EthernetMinSize+ipv6NextHeader]) {
				return m.backend6 && [16]byte(f[EthernetMinSize+ipv6Dst:]) == m.backend
			}
		}
	}
	return len(f) >= 6 && MAC(f[0:6]) == m.backendMAC
}

// NextHopMAC returns the MAC b's packets are sent to: b's own (on-link)
// or the gateway's; zero while unresolved.
func (b *Backend) NextHopMAC() MAC { return MAC(b.hdr[0:6]) }
