package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// TestCaptureRunningWorker: armed on a running worker, a capture ring
// holds every packet to its VIP as received and as sent, paired and in
// order, and nothing else; a backend filter keeps only that backend's;
// disarmed, the worker lets go of the ring.
func TestCaptureRunningWorker(t *testing.T) {
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	q := &queuePort{}
	w := NewWorker([]WorkerPort{{NIC: q}}, &snap, 1<<12, DefaultFlowTimeouts, 0)
	defer runWorker(w)()

	var frames [][]byte
	for i := range 300 {
		p := tcpTo(vipL2, 80, uint16(1000+i))
		switch i % 3 {
		case 1:
			p = testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP, SrcPort: uint16(i), DstPort: 53}
		case 2:
			p.DstPort = 81 // to the VIP, no service: dropped, captured with its verdict
		}
		frames = append(frames, p.Build())
	}
	backend2 := netip.MustParseAddr("192.0.2.22")
	for _, tc := range []struct {
		desc   string
		filter CaptureFilter
	}{
		{"vip", CaptureFilter{VIP: vipL2}},
		{"vip and backend", CaptureFilter{VIP: vipL2, Backend: backend2, BackendMAC: MAC{2, 0, 0, 0, 0, 0x22}}},
	} {
		r := NewCaptureRing(tc.filter, 1024, 128)
		w.ArmCapture(r)
		for !w.CaptureIdle(nil) { // the worker saw the ring: it no longer holds nil
			time.Sleep(time.Millisecond)
		}
		q.push(frames...)
		sent := q.takeSent(t, 200) // 100 l2 + 100 ipip forwarded
		w.ArmCapture(nil)
		for !w.CaptureIdle(r) {
			time.Sleep(time.Millisecond)
		}
		// What the worker sent to the l2 VIP, in order.
		var l2Sent [][]byte
		for _, f := range sent {
			if bytes.Equal(f[30:34], vipL2.AsSlice()) && f[23] == ProtoTCP {
				l2Sent = append(l2Sent, f)
			}
		}
		var recs []CaptureRecord
		r.Drain(func(rec *CaptureRecord) {
			c := *rec
			c.In, c.Out = append([]byte(nil), rec.In...), append([]byte(nil), rec.Out...)
			recs = append(recs, c)
		})
		on2 := 0
		for _, f := range l2Sent {
			if f[5] == 0x22 {
				on2++
			}
		}
		if on2 == 0 || on2 == len(l2Sent) {
			t.Fatalf("%d of %d flows on backend 2: the test needs both backends", on2, len(l2Sent))
		}
		if r.Lost() != 0 {
			t.Fatalf("%s: %d lost", tc.desc, r.Lost())
		}
		// What the ring must hold: each l2-VIP frame received, with what
		// was sent for it (port 80) or a drop (port 81); with the backend
		// filter only those sent to backend 2.
		type pair struct{ in, out []byte }
		var want []pair
		si := 0
		for _, f := range frames {
			if vipDstOf(f) != vipL2 {
				continue
			}
			var out []byte
			if binary.BigEndian.Uint16(f[36:]) == 80 {
				out = l2Sent[si]
				si++
			}
			if tc.filter.Backend.IsValid() && (out == nil || out[5] != 0x22) {
				continue
			}
			want = append(want, pair{f, out})
		}
		if len(recs) != len(want) {
			t.Fatalf("%s: %d records, want %d", tc.desc, len(recs), len(want))
		}
		for i, rec := range recs {
			w := want[i]
			if !bytes.Equal(rec.In, w.in[:min(128, len(w.in))]) || rec.InLen != len(w.in) {
				t.Fatalf("%s record %d: in %x (len %d), want %x", tc.desc, i, rec.In, rec.InLen, w.in)
			}
			switch {
			case w.out == nil && (rec.Verdict != VerdictDrop || len(rec.Out) != 0):
				t.Errorf("%s record %d: port 81: verdict %d, out %d bytes; want a drop", tc.desc, i, rec.Verdict, len(rec.Out))
			case w.out != nil && (rec.Verdict != VerdictTx || !bytes.Equal(rec.Out, w.out) || rec.OutLen != len(w.out)):
				t.Fatalf("%s record %d: out %x, want the sent %x", tc.desc, i, rec.Out, w.out)
			}
			if time.Since(rec.Time) > 10*time.Second || rec.Time.After(time.Now()) {
				t.Errorf("%s record %d: time %v", tc.desc, i, rec.Time)
			}
		}
	}
}

func vipDstOf(f []byte) netip.Addr { return netip.AddrFrom4([4]byte(f[30:34])) }

// TestCaptureRingFull: a full ring never blocks the worker: the packets
// that find it full are counted lost and forwarded all the same.
func TestCaptureRingFull(t *testing.T) {
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	bp := newBenchPort(mixFrames(1024))
	w := NewWorker([]WorkerPort{{NIC: bp}}, &snap, 1<<12, DefaultFlowTimeouts, 0)
	r := NewCaptureRing(CaptureFilter{VIP: vipL2}, 32, 64)
	w.ArmCapture(r)
	for range 200 {
		w.Poll()
	}
	c := w.Counters()
	n := r.Drain(func(*CaptureRecord) {})
	if n != 32 || r.Lost() == 0 || c.RxPackets != 199*32 || c.TxPackets+c.Dropped() != c.RxPackets {
		t.Errorf("ring of 32: %d records, %d lost; rx %d tx %d dropped %d", n, r.Lost(), c.RxPackets, c.TxPackets, c.Dropped())
	}
}

// TestCapturePollZeroAllocs: an armed capture allocates nothing either.
func TestCapturePollZeroAllocs(t *testing.T) {
	var snap atomic.Pointer[Snapshot]
	snap.Store(testSnapshot(t))
	w := NewWorker([]WorkerPort{{NIC: newBenchPort(mixFrames(4096))}}, &snap, 1<<16, DefaultFlowTimeouts, 0)
	r := NewCaptureRing(CaptureFilter{VIP: vipL2}, 1<<16, 128) // room for every burst measured
	w.ArmCapture(r)
	w.Poll()
	if allocs := testing.AllocsPerRun(1000, func() { w.Poll() }); allocs != 0 {
		t.Errorf("%v allocs per armed burst, want 0", allocs)
	}
}

// TestCaptureIPv6: a capture of an IPv6 VIP keeps its packets only, and a
// backend filter keeps those in an envelope to that backend, of either
// family.
func TestCaptureIPv6(t *testing.T) {
	s := testSnapshot6(t)
	var frames [][]byte
	for i := range 64 {
		frames = append(frames, tcp6To(vip6Mix, 443, uint16(2000+i)).Build(), tcp6To(vip6GRE, 443, uint16(2000+i)).Build())
	}
	for _, tc := range []struct {
		desc    string
		backend netip.Addr
		outer   []byte // the outer destination of every packet kept
	}{
		{"vip", netip.Addr{}, nil},
		{"v4 backend", netip.MustParseAddr("10.1.0.7"), []byte{10, 1, 0, 7}},
		{"v6 backend", netip.MustParseAddr("2001:db8:0:2::27"), netip.MustParseAddr("2001:db8:0:2::27").AsSlice()},
	} {
		var snap atomic.Pointer[Snapshot]
		snap.Store(s)
		q := &queuePort{}
		q.push(frames...)
		w := NewWorker([]WorkerPort{{NIC: q}}, &snap, 1<<12, DefaultFlowTimeouts, 0)
		r := NewCaptureRing(CaptureFilter{VIP: vip6Mix, Backend: tc.backend, BackendMAC: gwMAC}, 256, 256)
		w.ArmCapture(r)
		for range 8 {
			w.Poll()
		}
		n := 0
		r.Drain(func(rec *CaptureRecord) {
			n++
			if got := netip.AddrFrom16([16]byte(rec.In[14+24:])); got != vip6Mix || rec.Verdict != VerdictTx {
				t.Errorf("%s: kept a packet to %v, verdict %d", tc.desc, got, rec.Verdict)
			}
			if tc.outer != nil && !bytes.Equal(outerDst(rec.Out), tc.outer) {
				t.Errorf("%s: kept a packet sent to %x", tc.desc, outerDst(rec.Out))
			}
		})
		if (tc.outer == nil && n != 64) || n == 0 || (tc.outer != nil && n == 64) {
			t.Errorf("%s: %d of 64 packets kept", tc.desc, n)
		}
	}
}
