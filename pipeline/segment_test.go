package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/packet"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// fakeAlloc hands out left buffers of room bytes after the headroom.
type fakeAlloc struct {
	room, left, given int
}

func (a *fakeAlloc) Alloc(pkts []packet.Packet) int {
	k := min(len(pkts), a.left)
	for i := range k {
		pkts[i] = packet.Packet{Buf: make([]byte, headroom+a.room), Off: headroom, Handle: uintptr(1000000 + a.given)}
		a.given++
	}
	a.left -= k
	return k
}

func (a *fakeAlloc) FrameRoom() int { return a.room }

// superTCP is a TCP super-frame of n payload bytes from the client to the
// l2 VIP, as a peer's kernel hands it over with TSO: one header, a partial
// checksum, PSH and FIN on (only the last segment may keep them) and CWR
// (only the first may).
func superTCP(dst netip.Addr, port uint16, n int) testpkt.Packet {
	p := tcpTo(dst, port, 4000)
	p.Payload = make([]byte, n)
	for i := range p.Payload {
		p.Payload[i] = byte(i * 7)
	}
	p.TCPFlags = TCPFlagACK | TCPFlagPSH | TCPFlagFIN | TCPFlagCWR
	p.Seq = 0xfffff000 // wraps within the frame
	p.ID = 0xfffe      // so does the IP ID
	p.PartialChecksum = true
	return p
}

// segRun sends frames through a worker on a port with partial checksums
// (snapshot s) whose tap is tap (nil: none) and returns what it sent.
func segRun(t *testing.T, s *Snapshot, frames [][]byte, a packet.Allocator, tap *listPort) (*listPort, Counters) {
	t.Helper()
	lp := &listPort{frames: frames, r: rand.New(rand.NewSource(1))}
	var snap atomic.Pointer[Snapshot]
	snap.Store(s)
	wp := WorkerPort{NIC: lp}
	if tap != nil {
		wp.Tap = tap
	}
	w := NewWorker([]WorkerPort{wp}, &snap, 1024, DefaultFlowTimeouts, 0)
	if a != nil {
		w.SetAllocator(a)
	}
	for lp.next < len(frames) {
		w.Poll()
	}
	w.Poll()
	return lp, w.Counters()
}

// checkSegments checks segs, the IP packets a super-frame p was cut into
// with mss payload bytes each, field by field.
func checkSegments(t *testing.T, p testpkt.Packet, segs [][]byte, mss int) {
	t.Helper()
	want := (len(p.Payload) + mss - 1) / mss
	if len(segs) != want {
		t.Fatalf("%d segments, want %d", len(segs), want)
	}
	var payload []byte
	for i, ip := range segs {
		n := min(mss, len(p.Payload)-i*mss)
		tcp := ip[20:]
		flags := uint8(TCPFlagACK)
		if i == 0 {
			flags |= TCPFlagCWR
		}
		if i == len(segs)-1 {
			flags |= TCPFlagPSH | TCPFlagFIN
		}
		for _, c := range []struct {
			name      string
			got, want uint64
		}{
			{"ip total length", uint64(binary.BigEndian.Uint16(ip[2:])), uint64(40 + n)},
			{"ip id", uint64(binary.BigEndian.Uint16(ip[4:])), uint64(p.ID + uint16(i))},
			{"ip df", uint64(ip[6] & 0x40), 0x40},
			{"ip checksum ok", uint64(Checksum(ip[:20], 0)), 0},
			{"ports", uint64(binary.BigEndian.Uint32(tcp)), uint64(p.SrcPort)<<16 | uint64(p.DstPort)},
			{"seq", uint64(binary.BigEndian.Uint32(tcp[4:])), uint64(p.Seq + uint32(i*mss))},
			{"flags", uint64(tcp[13]), uint64(flags)},
			{"tcp checksum ok", uint64(l4Sum(ip)), 0xffff},
		} {
			if c.got != c.want {
				t.Errorf("segment %d: %s = %#x, want %#x", i, c.name, c.got, c.want)
			}
		}
		if len(ip) != 40+n {
			t.Errorf("segment %d: %d bytes, want %d", i, len(ip), 40+n)
		}
		payload = append(payload, tcp[20:]...)
	}
	if !bytes.Equal(payload, p.Payload) {
		t.Errorf("segments' payloads do not add up to the super-frame's")
	}
}

// TestSuperframeSegmented: a TCP super-frame from a port that reads a
// kernel's frames is cut into segments that fit the port's MTU and, once
// encapsulated, the backend's; each is forwarded as a received packet,
// in the burst's order, and counted.
func TestSuperframeSegmented(t *testing.T) {
	s := offloadSnapshot(t, true)
	for _, tc := range []struct {
		desc     string
		dst      netip.Addr
		port     uint16
		overhead int
	}{
		{"l2", vipL2, 80, 0},
		{"gre", vipGRE, 443, 24},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			sp := superTCP(tc.dst, tc.port, 60000)
			before, after := tcpTo(tc.dst, tc.port, 4001), tcpTo(tc.dst, tc.port, 4002)
			frames := [][]byte{before.Build(), sp.Build(), after.Build()}
			a := &fakeAlloc{room: 2048, left: 1000}
			lp, c := segRun(t, s, frames, a, nil)
			mss := 1500 - tc.overhead - 40
			n := (60000 + mss - 1) / mss
			if len(lp.sent) != n+2 {
				t.Fatalf("sent %d packets, want %d segments and 2 (drops %v)", len(lp.sent), n, c.Drops)
			}
			var segs [][]byte
			for i, out := range lp.sent {
				if len(out)-14 > 1500 {
					t.Errorf("packet %d: %d bytes of IP, more than the MTU", i, len(out)-14)
				}
				inner := out[14+tc.overhead:]
				sport := binary.BigEndian.Uint16(inner[20:])
				switch {
				case i == 0 && sport != 4001, i == n+1 && sport != 4002, i > 0 && i <= n && sport != 4000:
					t.Errorf("packet %d: source port %d: out of order", i, sport)
				}
				if i > 0 && i <= n {
					segs = append(segs, inner)
				}
			}
			checkSegments(t, sp, segs, mss)
			if c.GSOSegmented != 1 || c.GSOSegments != uint64(n) || c.RxPackets != 3 || c.Dropped() != 0 ||
				c.Services[0].Packets+c.Services[2].Packets != uint64(n+2) || c.TxPackets != uint64(n+2) {
				t.Errorf("counters: segmented %d segments %d rx %d dropped %d tx %d; want 1, %d, 3, 0, %d",
					c.GSOSegmented, c.GSOSegments, c.RxPackets, c.Dropped(), c.TxPackets, n, n+2)
			}
			if a.given != n || lp.freed != 1 {
				t.Errorf("allocated %d buffers, freed %d packets; want %d and 1 (the super-frame)", a.given, lp.freed, n)
			}
			writeAndDissect(t, lp.sent, sp, mss, tc.overhead)
		})
	}

	t.Run("to the kernel", func(t *testing.T) {
		sp := superTCP(portIP, 179, 10000)
		tap := &listPort{r: rand.New(rand.NewSource(2))}
		lp, c := segRun(t, s, [][]byte{sp.Build()}, &fakeAlloc{room: 2048, left: 100}, tap)
		if len(lp.sent) != 0 || c.ToKernel != 7 || c.GSOSegments != 7 {
			t.Fatalf("sent %d, to kernel %d, segments %d; want 0, 7, 7", len(lp.sent), c.ToKernel, c.GSOSegments)
		}
		var segs [][]byte
		for _, f := range tap.sent {
			segs = append(segs, f[14:])
		}
		checkSegments(t, sp, segs, 1460)
	})
}

// writeAndDissect writes frames to a capture and has tshark, an
// independent dissector, check every segment: IP and TCP checksums good,
// lengths, sequence numbers and flags.
func writeAndDissect(t *testing.T, frames [][]byte, sp testpkt.Packet, mss, overhead int) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (make deps installs it)")
	}
	path := filepath.Join(t.TempDir(), "segments.pcap")
	if err := pcap.WriteFile(path, frames); err != nil {
		t.Fatal(err)
	}
	fields := []string{"tcp.srcport", "ip.len", "ip.checksum.status", "tcp.seq_raw", "tcp.len", "tcp.flags", "tcp.checksum.status"}
	args := []string{"-r", path, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-T", "fields", "-E", "separator=|",
		"-E", "occurrence=l"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	i := 0
	for _, row := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(row, "|")
		if f[0] != strconv.Itoa(int(sp.SrcPort)) {
			continue
		}
		n := min(mss, len(sp.Payload)-i*mss)
		flags := TCPFlagACK
		if i == 0 {
			flags |= TCPFlagCWR
		}
		if (i+1)*mss >= len(sp.Payload) {
			flags |= TCPFlagPSH | TCPFlagFIN
		}
		want := []string{f[0], strconv.Itoa(40 + n), "1", strconv.FormatUint(uint64(sp.Seq+uint32(i*mss)), 10), strconv.Itoa(n),
			fmt.Sprintf("0x%04x", flags), "1"}
		for j := range want {
			if f[j] != want[j] {
				t.Errorf("tshark segment %d: %s = %q, want %q (row %q)", i, fields[j], f[j], want[j], row)
			}
		}
		i++
	}
	if want := (len(sp.Payload) + mss - 1) / mss; i != want {
		t.Errorf("tshark saw %d segments, want %d", i, want)
	}
}

// TestSuperframeDropped: what cannot be segmented is dropped as
// gso_superframe, its port flagged for the log: a TCP super-frame without
// an allocator, a UDP GSO frame, a super-frame the driver cut short. A
// datagram the kernel reassembled keeps the usual rules; a pool that runs
// dry drops the super-frame as no_buffer and leaks nothing.
func TestSuperframeDropped(t *testing.T) {
	s := offloadSnapshot(t, true)
	udpGSO := testpkt.Packet{SrcMAC: gwMAC, DstMAC: portMAC, Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP,
		SrcPort: 5353, DstPort: 53, Payload: make([]byte, 8000), PartialChecksum: true}
	reassembled := udpGSO
	reassembled.PartialChecksum = false
	cut := superTCP(vipL2, 80, 20000).Build()[:2048] // the ring frame's length
	for _, tc := range []struct {
		desc  string
		frame []byte
		alloc packet.Allocator
		drop  string
	}{
		{"tcp without allocator", superTCP(vipL2, 80, 20000).Build(), nil, "gso_superframe"},
		{"udp gso", udpGSO.Build(), &fakeAlloc{room: 2048, left: 100}, "gso_superframe"},
		{"cut by the ring", cut, &fakeAlloc{room: 2048, left: 100}, "gso_superframe"},
		{"reassembled udp", reassembled.Build(), &fakeAlloc{room: 2048, left: 100}, "too_big"},
		{"pool runs dry", superTCP(vipL2, 80, 20000).Build(), &fakeAlloc{room: 2048, left: 10}, "no_buffer"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			lp, c := segRun(t, s, [][]byte{tc.frame}, tc.alloc, nil)
			var got []string
			for r := DropReason(1); r < NumDropReasons; r++ {
				if c.Drops[r] != 0 {
					got = append(got, fmt.Sprintf("%s=%d", r, c.Drops[r]))
				}
			}
			if len(got) != 1 || got[0] != tc.drop+"=1" || len(lp.sent) != 0 {
				t.Errorf("drops %v, sent %d; want %s=1, 0", got, len(lp.sent), tc.drop)
			}
			if flagged := c.SuperframePorts == 1; flagged != (tc.drop == "gso_superframe") {
				t.Errorf("superframe ports %#x", c.SuperframePorts)
			}
			allocated := 0
			if fa, ok := tc.alloc.(*fakeAlloc); ok {
				allocated = fa.given
			}
			if lp.freed != 1+allocated {
				t.Errorf("freed %d, want the frame and %d buffers", lp.freed, allocated)
			}
		})
	}
}

// FuzzSegment sends a frame, often a super-frame, through a worker that
// segments (on a port with partial checksums): no panic, nothing sent
// longer than the MTU, every buffer sent or freed exactly once, and the
// counters add up (RxPackets - GSOSegmented + GSOSegments verdicts).
func FuzzSegment(f *testing.F) {
	f.Add(superTCP(vipL2, 80, 5000).Build(), uint16(100))
	f.Add(superTCP(vipGRE, 443, 3000).Build(), uint16(3))
	f.Add(superTCP(portIP, 22, 4000).Build(), uint16(100))
	f.Add(testpkt.Packet{Src: clientIP, Dst: vipIPIP, Proto: ProtoUDP, DstPort: 9, Payload: make([]byte, 3000)}.Build(), uint16(5))
	s := offloadSnapshot(f, true)
	f.Fuzz(func(t *testing.T, frame []byte, bufs uint16) {
		a := &fakeAlloc{room: 2048, left: int(bufs)}
		tap := &listPort{r: rand.New(rand.NewSource(2))}
		lp, c := segRun(t, s, [][]byte{frame}, a, tap)
		for _, out := range append(lp.sent, tap.sent...) {
			if len(out) > 14+1500 {
				t.Fatalf("sent a %d-byte frame", len(out))
			}
		}
		if got, want := len(lp.sent)+len(tap.sent)+lp.freed, 1+a.given; got != want {
			t.Fatalf("sent %d + to kernel %d + freed %d != received 1 + allocated %d",
				len(lp.sent), len(tap.sent), lp.freed, a.given)
		}
		var svc uint64
		for _, sc := range c.Services {
			svc += sc.Packets
		}
		if c.RxPackets-c.GSOSegmented+c.GSOSegments != svc+c.ToKernel+c.Dropped()+c.FragNeededSent {
			t.Fatalf("rx %d - segmented %d + segments %d != service %d + kernel %d + dropped %d + frag-needed %d",
				c.RxPackets, c.GSOSegmented, c.GSOSegments, svc, c.ToKernel, c.Dropped(), c.FragNeededSent)
		}
	})
}

// TestProcessDropsSuperframe: Process alone cannot send several packets,
// so a TCP super-frame is dropped there even when the forwarder is a
// worker's with an allocator.
func TestProcessDropsSuperframe(t *testing.T) {
	s := offloadSnapshot(t, true)
	var snap atomic.Pointer[Snapshot]
	snap.Store(s)
	w := NewWorker([]WorkerPort{{NIC: &listPort{}}}, &snap, 1024, DefaultFlowTimeouts, 0)
	w.SetAllocator(&fakeAlloc{room: 2048, left: 100})
	w.Use(s)
	v, _ := w.Process(s, newPacket(superTCP(vipL2, 80, 5000).Build()), 0)
	if v != VerdictDrop || w.C.Drops[DropSuperframe] != 1 || w.C.SuperframePorts != 1 {
		t.Errorf("verdict %v, gso_superframe %d, ports %#x; want a drop counted and flagged", v, w.C.Drops[DropSuperframe], w.C.SuperframePorts)
	}
}
