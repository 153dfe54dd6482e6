package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"net/netip"
	"sync/atomic"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// offloadSnapshot is testSnapshot with the port marked as receiving a
// kernel's frames (PartialChecksums) when partial is set.
func offloadSnapshot(t testing.TB, partial bool) *Snapshot {
	t.Helper()
	spec := SnapshotSpec{Generation: 1, Ports: []PortSpec{{MAC: portMAC, IP: portIP, MTU: 1500, PartialChecksums: partial}}}
	for _, svc := range testSnapshot(t).Services {
		ss := ServiceSpec{ID: svc.ID, Name: svc.Name, VIP: netip.AddrFrom4(svc.VIPBytes()), Proto: svc.Proto, Port: svc.Port, Mode: svc.Mode}
		for _, b := range svc.Backends {
			ss.Backends = append(ss.Backends, BackendSpec{ID: b.ID, IP: b.Addr, Weight: b.Weight, NextHop: gwMAC})
		}
		spec.Services = append(spec.Services, ss)
	}
	s, err := NewSnapshot(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// l4Sum verifies a TCP or UDP checksum the way a receiver does: the one's
// complement sum of pseudo-header and segment folds to 0xffff (RFC 1071).
func l4Sum(ip []byte) uint16 {
	ihl := int(ip[0]&0xf) * 4
	l4 := ip[ihl:binary.BigEndian.Uint16(ip[2:])]
	var s uint32
	for _, w := range [][]byte{ip[12:20], {0, ip[9]}, {byte(len(l4) >> 8), byte(len(l4))}, l4} {
		for i := 0; i < len(w); i += 2 {
			v := uint32(w[i]) << 8
			if i+1 < len(w) {
				v |= uint32(w[i+1])
			}
			s += v
		}
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// udpZeroSum returns a UDP packet to the ipip VIP whose complete checksum
// computes to 0 and is therefore sent as 0xffff (RFC 768).
func udpZeroSum(t *testing.T) testpkt.Packet {
	t.Helper()
	p := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP,
		SrcPort: 5353, DstPort: 53, Payload: []byte{0, 0}}
	for w := 0; w < 1<<16; w++ {
		binary.BigEndian.PutUint16(p.Payload, uint16(w))
		if fr := p.Build(); binary.BigEndian.Uint16(fr[14+26:]) == 0xffff && l4Sum(fr[14:]) == 0xffff {
			// 0xffff from a computed 0 (a computed 0xffff is impossible
			// for a non-zero sum); the payload word made it so.
			return p
		}
	}
	t.Fatal("no payload gives a zero UDP checksum")
	return p
}

// TestPartialChecksums: on a port marked PartialChecksums, a TCP or UDP
// packet whose checksum holds the pseudo-header sum leaves with the
// complete checksum, field by field equal to what the sender's NIC would
// have written; complete checksums, UDP without checksum, other ports and
// fragments are left as they are.
func TestPartialChecksums(t *testing.T) {
	udp := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP,
		SrcPort: 5353, DstPort: 53, DF: true, Payload: []byte("query")}
	toKernel := tcpTo(portIP, 179, 40000)
	toKernel.Payload = bytes.Repeat([]byte("bgp"), 300)
	for _, tc := range []struct {
		desc      string
		pkt       testpkt.Packet
		partial   bool // the port receives partial checksums
		verdict   Verdict
		completed uint64
		wantField func(complete, partial uint16) uint16
	}{
		{"tcp to an l2 service", tcpTo(vipL2, 80, 1000), true, VerdictTx, 1, first},
		{"tcp to a gre service, inner completed", tcpTo(vipGRE, 443, 1001), true, VerdictTx, 1, first},
		{"udp to an ipip service", udp, true, VerdictTx, 1, first},
		{"udp whose checksum computes to 0", udpZeroSum(t), true, VerdictTx, 1, first},
		{"tcp to the port's own address, for the kernel", toKernel, true, VerdictKernel, 1, first},
		{"port without partial checksums", tcpTo(vipL2, 80, 1002), false, VerdictTx, 0, second},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := offloadSnapshot(t, tc.partial)
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			complete := tc.pkt.Build()
			pp := tc.pkt
			pp.PartialChecksum = true
			in := pp.Build()
			off := 14 + 20 + 16
			if tc.pkt.Proto == ProtoUDP {
				off = 14 + 20 + 6
			}
			if bytes.Equal(in, complete) {
				t.Fatal("the partial and the complete packet are the same: pick another")
			}
			p := newPacket(in)
			v, _ := f.Process(s, p, 0)
			if v != tc.verdict {
				t.Fatalf("verdict %v, want %v (drops %v)", v, tc.verdict, f.C.Drops)
			}
			got := p.Data()
			ip := got[len(got)-(len(in)-14):] // the (inner) IP packet ends the frame
			want := tc.wantField(binary.BigEndian.Uint16(complete[off:]), binary.BigEndian.Uint16(in[off:]))
			if c := binary.BigEndian.Uint16(ip[off-14:]); c != want {
				t.Errorf("checksum field %#04x, want %#04x", c, want)
			}
			if tc.completed == 1 {
				if !bytes.Equal(ip, complete[14:]) {
					t.Errorf("IP packet differs from the sender's complete one:\n got %x\nwant %x", ip, complete[14:])
				}
				if sum := l4Sum(ip); sum != 0xffff {
					t.Errorf("receiver's check sums to %#04x, want 0xffff", sum)
				}
			} else if !bytes.Equal(ip, in[14:]) {
				t.Errorf("IP packet changed:\n got %x\nwant %x", ip, in[14:])
			}
			if f.C.L4ChecksumsCompleted != tc.completed {
				t.Errorf("l4_checksums_completed %d, want %d", f.C.L4ChecksumsCompleted, tc.completed)
			}
		})
	}

	// Left alone on a port with partial checksums: a complete checksum
	// (even one equal to the pseudo-header sum would be recomputed to
	// itself), UDP without checksum, a fragment (its checksum is never
	// partial), a packet to nobody.
	s := offloadSnapshot(t, true)
	noSum := udp
	noSum.Payload = []byte("no checksum")
	noSumFrame := noSum.Build()
	noSumFrame[14+26], noSumFrame[14+27] = 0, 0
	frag := udp
	frag.MoreFrags, frag.DF = true, false
	stranger := udp
	stranger.Dst = netip.MustParseAddr("198.51.100.200")
	for _, tc := range []struct {
		desc    string
		frame   []byte
		verdict Verdict
	}{
		{"complete tcp", tcpTo(vipL2, 80, 1003).Build(), VerdictTx},
		{"udp without checksum", noSumFrame, VerdictTx},
		{"fragment", func() []byte { p := frag; p.PartialChecksum = true; return p.Build() }(), VerdictDrop},
		{"stranger", func() []byte { p := stranger; p.PartialChecksum = true; return p.Build() }(), VerdictDrop},
	} {
		f := NewForwarder(1024, DefaultFlowTimeouts, 0)
		f.Use(s)
		p := newPacket(tc.frame)
		v, _ := f.Process(s, p, 0)
		got := p.Data()
		if v != tc.verdict || !bytes.Equal(got[len(got)-(len(tc.frame)-14):], tc.frame[14:]) || f.C.L4ChecksumsCompleted != 0 {
			t.Errorf("%s: verdict %v (want %v), completed %d (want 0), IP packet changed: %v",
				tc.desc, v, tc.verdict, f.C.L4ChecksumsCompleted, !bytes.Equal(got[len(got)-(len(tc.frame)-14):], tc.frame[14:]))
		}
	}
}

func first(a, _ uint16) uint16  { return a }
func second(_, b uint16) uint16 { return b }

// TestPartialChecksumsWorker: through the worker's burst loop, a port with
// partial checksums completes them for packets of established flows (which
// the fast path would otherwise take), and a port without does not.
func TestPartialChecksumsWorker(t *testing.T) {
	for _, partial := range []bool{true, false} {
		var frames [][]byte
		for i := range 64 {
			p := tcpTo(vipL2, 80, uint16(2000+i%4)) // 4 flows: most packets hit the flow table
			p.PartialChecksum = i%2 == 0
			frames = append(frames, p.Build())
		}
		lp := &listPort{frames: frames, r: rand.New(rand.NewSource(1))}
		var snap atomic.Pointer[Snapshot]
		snap.Store(offloadSnapshot(t, partial))
		w := NewWorker([]WorkerPort{{NIC: lp}}, &snap, 1024, DefaultFlowTimeouts, 0)
		for lp.next < len(frames) {
			w.Poll()
		}
		w.Poll()
		if len(lp.sent) != len(frames) {
			t.Fatalf("partial=%v: sent %d of %d", partial, len(lp.sent), len(frames))
		}
		completed := 0
		for i, out := range lp.sent {
			ok := l4Sum(out[14:]) == 0xffff
			if ok && i%2 == 0 {
				completed++
			}
			if ok != (partial || i%2 == 1) {
				t.Errorf("partial=%v: packet %d: receiver's check ok=%v", partial, i, ok)
			}
		}
		c := w.Counters()
		if c.L4ChecksumsCompleted != uint64(completed) || (partial && completed != 32) {
			t.Errorf("partial=%v: l4_checksums_completed %d, %d packets completed", partial, c.L4ChecksumsCompleted, completed)
		}
		if c.FlowHits == 0 {
			t.Errorf("partial=%v: no flow table hit: the fast path was not exercised", partial)
		}
	}
}
