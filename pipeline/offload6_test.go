package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// l4Sum6 verifies the TCP or UDP checksum of the IPv6 packet ip (upper
// layer after the fixed header): 0 when it is right.
func l4Sum6(ip []byte) uint16 {
	l4 := ip[40 : 40+int(binary.BigEndian.Uint16(ip[4:]))]
	return testpkt.Checksum(l4, testpkt.Pseudo6([16]byte(ip[8:24]), [16]byte(ip[24:40]), ip[6], len(l4)))
}

// TestPartialChecksums6: on a port that receives a kernel's frames, IPv6
// TCP and UDP packets whose checksum holds the pseudo-header sum leave
// with the complete checksum.
func TestPartialChecksums6(t *testing.T) {
	s := testSnapshot6Partial(t, true)
	udp := tcp6To(vip6IP4, 53, 5353)
	udp.Proto = ProtoUDP
	for _, in := range []testpkt.Packet{tcp6To(vip6IP, 443, 1), udp} {
		in.PartialChecksum = true
		frame := in.Build()
		if l4Sum6(frame[14:]) == 0 {
			t.Fatal("the input's checksum is already complete")
		}
		f, p, v, _ := process1(t, s, frame)
		if v != VerdictTx || f.C.L4ChecksumsCompleted != 1 {
			t.Fatalf("proto %d: verdict %v completed %d, want tx and 1; drops %v", in.Proto, v, f.C.L4ChecksumsCompleted, f.C.Drops)
		}
		out := p.Data()
		inner := out[len(out)-(len(frame)-14):]
		if l4Sum6(inner) != 0 {
			t.Errorf("proto %d: forwarded checksum does not verify", in.Proto)
		}
		in.PartialChecksum = false
		if !bytes.Equal(inner, in.Build()[14:]) {
			t.Errorf("proto %d: inner packet is not what the sender's NIC would have sent", in.Proto)
		}
	}
}

// TestSuperframeSegmented6: an IPv6 TCP super-frame is cut into segments
// that fit the port's MTU once in the IPv6 envelope, each with its payload
// length, sequence number, flags and a complete checksum.
func TestSuperframeSegmented6(t *testing.T) {
	s := testSnapshot6Partial(t, true)
	sp := tcp6To(vip6IP, 443, 4000)
	sp.Payload = make([]byte, 20000)
	for i := range sp.Payload {
		sp.Payload[i] = byte(i * 7)
	}
	sp.TCPFlags = TCPFlagACK | TCPFlagPSH | TCPFlagFIN
	sp.Seq = 0xfffff000
	sp.PartialChecksum = true
	a := &fakeAlloc{room: 2048, left: 1000}
	lp, c := segRun(t, s, [][]byte{sp.Build()}, a, nil)
	mss := 1500 - 40 - 40 - 20
	n := (len(sp.Payload) + mss - 1) / mss
	if len(lp.sent) != n || c.GSOSegmented != 1 || c.GSOSegments != uint64(n) || c.Dropped() != 0 {
		t.Fatalf("sent %d, segmented %d into %d, dropped %d (%v); want %d segments", len(lp.sent), c.GSOSegmented, c.GSOSegments, c.Dropped(), c.Drops, n)
	}
	var payload []byte
	for i, out := range lp.sent {
		if len(out)-14 > 1500 {
			t.Errorf("segment %d: %d bytes of IP, more than the MTU", i, len(out)-14)
		}
		inner := out[14+40:]
		tcp := inner[40:]
		chunk := tcp[20:]
		if got := int(binary.BigEndian.Uint16(inner[4:])); got != 20+len(chunk) || len(chunk) != min(mss, len(sp.Payload)-i*mss) {
			t.Errorf("segment %d: payload length %d, chunk %d", i, got, len(chunk))
		}
		if seq := binary.BigEndian.Uint32(tcp[4:]); seq != sp.Seq+uint32(i*mss) {
			t.Errorf("segment %d: seq %#x, want %#x", i, seq, sp.Seq+uint32(i*mss))
		}
		flags := uint8(TCPFlagACK)
		if i == n-1 {
			flags |= TCPFlagPSH | TCPFlagFIN
		}
		if tcp[13] != flags {
			t.Errorf("segment %d: flags %#x, want %#x", i, tcp[13], flags)
		}
		if l4Sum6(inner) != 0 {
			t.Errorf("segment %d: TCP checksum does not verify", i)
		}
		payload = append(payload, chunk...)
	}
	if !bytes.Equal(payload, sp.Payload) {
		t.Error("the segments' payloads are not the super-frame's")
	}
}
