package dpdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// The EAL initialises once per process, so TestMain brings it up with the
// virtual devices all tests share:
//
//	net_null0         generates 64-byte packets on rx, frees on tx
//	net_null1,no-rx=1 a pure sink
//	net_ring0         loopback: what queue q sends, queue q receives
var (
	pool    *Mempool
	null0   *Port // source
	sink    *Port // net_null1, tx only
	ring0   *Port // loopback
	baseUse uint32
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	prefix := fmt.Sprintf("dsrlbtest%d", os.Getpid())
	args := []string{
		"--no-huge", "--no-pci", "-m", "512", "--file-prefix", prefix,
		"-l", "0,1", "--log-level=*:error",
		"--vdev=net_null0", "--vdev=net_null1,no-rx=1", "--vdev=net_ring0",
	}
	if err := Init(args); err != nil {
		fmt.Fprintln(os.Stderr, "Init:", err)
		return 1
	}
	defer os.RemoveAll(filepath.Join("/var/run/dpdk", prefix))
	defer Cleanup()

	var err error
	if pool, err = NewPktMbufPool("dsrlbtest", 8191, 256, DefaultDataRoom, SocketAny); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Free()
	open := func(name string, nbRx uint16) (*Port, error) {
		id, err := PortByName(name)
		if err != nil {
			return nil, err
		}
		p, err := Configure(id, nbRx, 1, PortConfig{Pool: pool, RxDesc: 256, TxDesc: 256})
		if err != nil {
			return nil, err
		}
		return p, p.Start()
	}
	for _, o := range []struct {
		p    **Port
		name string
		nbRx uint16
	}{{&null0, "net_null0", 1}, {&sink, "net_null1", 0}, {&ring0, "net_ring0", 1}} {
		if *o.p, err = open(o.name, o.nbRx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer (*o.p).Close()
	}
	baseUse = pool.InUse() // mbufs parked in null0's and ring0's rx rings
	return m.Run()
}

// checkNoLeak fails t if mbufs taken during the test were not returned.
func checkNoLeak(t *testing.T) {
	t.Helper()
	if got := pool.InUse(); got != baseUse {
		t.Errorf("pool in use: got %d mbufs, want %d (leak)", got, baseUse)
	}
}

// udpFrame builds an Ethernet + IPv4 + UDP frame from 10.0.0.1:1000+i to
// 10.0.0.2:80 whose payload names i.
func udpFrame(i int) []byte {
	payload := []byte(fmt.Sprintf("dsrlb test packet %d", i))
	f := make([]byte, 14+20+8+len(payload))
	eth, ip, udp := f[:14], f[14:34], f[34:42]
	copy(eth[0:6], []byte{0x02, 0, 0, 0, 0, 0x02})  // dst
	copy(eth[6:12], []byte{0x02, 0, 0, 0, 0, 0x01}) // src
	binary.BigEndian.PutUint16(eth[12:], 0x0800)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	binary.BigEndian.PutUint16(ip[4:], uint16(i))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8], ip[9] = 64, 17
	copy(ip[12:16], []byte{10, 0, 0, 1})
	copy(ip[16:20], []byte{10, 0, 0, 2})
	var sum uint32
	for j := 0; j < 20; j += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[j:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(udp[0:], uint16(1000+i))
	binary.BigEndian.PutUint16(udp[2:], 80)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(f[42:], payload)
	return f
}

// writePcap writes frames as a classic little-endian pcap file (24-byte
// global header, 16-byte record headers, LINKTYPE_ETHERNET).
func writePcap(path string, frames [][]byte) error {
	var b bytes.Buffer
	hdr := struct {
		Magic         uint32
		Major, Minor  uint16
		ThisZone      int32
		SigFigs       uint32
		SnapLen, Link uint32
	}{0xa1b2c3d4, 2, 4, 0, 0, 65535, 1}
	binary.Write(&b, binary.LittleEndian, hdr)
	for i, f := range frames {
		rec := [4]uint32{uint32(1700000000 + i), 0, uint32(len(f)), uint32(len(f))}
		binary.Write(&b, binary.LittleEndian, rec)
		b.Write(f)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// readPcap returns the frames of a little-endian pcap file with micro- or
// nanosecond timestamps.
func readPcap(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 24 {
		return nil, fmt.Errorf("%s: %d bytes, shorter than a pcap header", path, len(data))
	}
	if m := binary.LittleEndian.Uint32(data); m != 0xa1b2c3d4 && m != 0xa1b23c4d {
		return nil, fmt.Errorf("%s: bad magic %#x", path, m)
	}
	var frames [][]byte
	for r := data[24:]; len(r) > 0; {
		if len(r) < 16 {
			return nil, fmt.Errorf("%s: truncated record header", path)
		}
		n := int(binary.LittleEndian.Uint32(r[8:]))
		if len(r) < 16+n {
			return nil, fmt.Errorf("%s: truncated record", path)
		}
		frames = append(frames, r[16:16+n])
		r = r[16+n:]
	}
	return frames, nil
}

// rxN receives until want packets arrived or a second passed.
func rxN(t *testing.T, p *Port, want int) []packet.Packet {
	t.Helper()
	var got []packet.Packet
	buf := make([]packet.Packet, packet.BurstSize)
	for deadline := time.Now().Add(time.Second); len(got) < want && time.Now().Before(deadline); {
		n := p.RxBurst(0, buf[:min(len(buf), want-len(got))])
		got = append(got, buf[:n]...)
	}
	if len(got) != want {
		t.Fatalf("received %d packets, want %d", len(got), want)
	}
	return got
}

func TestLcores(t *testing.T) {
	if got := MainLcore(); got != 0 {
		t.Errorf("MainLcore: got %d, want 0", got)
	}
	if got, want := WorkerLcores(), []uint{1}; !slices.Equal(got, want) {
		t.Errorf("WorkerLcores: got %v, want %v", got, want)
	}
	if got := LcoreCount(); got != 2 {
		t.Errorf("LcoreCount: got %d, want 2", got)
	}
	if got := CurrentLcore(); got == 1 {
		t.Errorf("CurrentLcore on a test goroutine: got worker lcore %d", got)
	}
	if err := Launch(0, func() {}); err == nil {
		t.Error("Launch on the main lcore: got nil error")
	}
	if err := Init(nil); err == nil {
		t.Error("second Init: got nil error")
	}
}

func TestDevargsName(t *testing.T) {
	for _, tc := range []struct{ devargs, want string }{
		{"net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap", "net_pcap0"},
		{"net_null0", "net_null0"},
		{"0000:01:00.0", "0000:01:00.0"},
		{"net_tap0,iface=dsr0", "net_tap0"},
	} {
		if got := DevargsName(tc.devargs); got != tc.want {
			t.Errorf("DevargsName(%q): got %q, want %q", tc.devargs, got, tc.want)
		}
	}
}

func TestPortControl(t *testing.T) {
	if got := Count(); got < 3 {
		t.Errorf("Count: got %d, want at least 3", got)
	}
	id, err := AttachPort("net_null0,size=128") // exists: returned as is
	if err != nil || id != null0.PortID {
		t.Errorf("AttachPort(existing net_null0): got %d, %v; want %d, nil", id, err, null0.PortID)
	}
	if _, err := PortByName("net_nosuch0"); err == nil {
		t.Error("PortByName(net_nosuch0): got nil error")
	}
	if _, err := AttachPort("net_nosuch0"); err == nil {
		t.Error("AttachPort(net_nosuch0): got nil error")
	}
	name, err := ring0.Name()
	if err != nil || name != "net_ring0" {
		t.Errorf("Name: got %q, %v; want net_ring0", name, err)
	}
	info, err := null0.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Driver != "net_null" || info.MaxRxQueues == 0 || info.MaxTxQueues == 0 {
		t.Errorf("Info(net_null0): got %+v", info)
	}
	if _, err := null0.MAC(); err != nil {
		t.Errorf("MAC: %v", err)
	}
	link, err := ring0.Link()
	if err != nil || !link.Up {
		t.Errorf("Link(net_ring0): got %+v, %v; want up", link, err)
	}
	if err := ring0.SetPromiscuous(true); err != nil && !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("SetPromiscuous: %v", err)
	}
	if err := null0.SetMTU(1400); err != nil {
		t.Logf("SetMTU(net_null0): %v", err)
	}
	if err := ring0.SetMTU(1400); err != nil && !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("SetMTU: %v", err)
	} else if err == nil {
		if mtu, _ := ring0.MTU(); mtu != 1400 {
			t.Errorf("MTU after SetMTU(1400): got %d", mtu)
		}
		ring0.SetMTU(1500)
	}
	if rx, tx := ring0.Desc(); rx == 0 || tx == 0 {
		t.Errorf("Desc: got %d, %d", rx, tx)
	}
}

func TestNullRxTx(t *testing.T) {
	before, _ := sink.Stats()
	pkts := make([]packet.Packet, packet.BurstSize+8)
	n := null0.RxBurst(0, pkts)
	if n != packet.BurstSize {
		t.Fatalf("RxBurst: got %d packets, want %d (one full burst)", n, packet.BurstSize)
	}
	for i, p := range pkts[:n] {
		if p.Off != Headroom || p.Len != 64 || len(p.Buf) != DefaultDataRoom || p.Handle == 0 {
			t.Fatalf("packet %d: Off %d Len %d len(Buf) %d Handle %#x; want %d, 64, %d, non-zero",
				i, p.Off, p.Len, len(p.Buf), p.Handle, Headroom, DefaultDataRoom)
		}
		if NbSegs(p.Handle) != 1 || PktLen(p.Handle) != 64 || RxPort(p.Handle) != null0.PortID {
			t.Fatalf("packet %d: segs %d pkt_len %d port %d", i, NbSegs(p.Handle), PktLen(p.Handle), RxPort(p.Handle))
		}
	}
	sent := sink.TxBurst(0, pkts[:n])
	if sent != n {
		t.Errorf("TxBurst to sink: took %d, want %d", sent, n)
	}
	sink.Free(pkts[sent:n])
	after, err := sink.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := after.OPackets - before.OPackets; got != uint64(sent) {
		t.Errorf("sink opackets: got +%d, want +%d", got, sent)
	}
	checkNoLeak(t)
}

func TestRingLoopback(t *testing.T) {
	frame := udpFrame(1)
	pk, err := AllocMbuf(pool, frame)
	if err != nil {
		t.Fatal(err)
	}
	if pk.Off != Headroom || !bytes.Equal(pk.Data(), frame) {
		t.Fatalf("AllocMbuf: Off %d data %x; want %d, %x", pk.Off, pk.Data(), Headroom, frame)
	}
	if n := ring0.TxBurst(0, []packet.Packet{pk}); n != 1 {
		t.Fatalf("TxBurst: took %d, want 1", n)
	}
	got := rxN(t, ring0, 1)[0]
	if got.Off != Headroom || got.Len != len(frame) || !bytes.Equal(got.Data(), frame) {
		t.Fatalf("looped back: Off %d Len %d data %x; want %d, %d, %x",
			got.Off, got.Len, got.Data(), Headroom, len(frame), frame)
	}

	// Prepend an envelope into the headroom, as the IPIP/GRE rewriters do.
	env := []byte("ENVELOPE")
	got.Off -= len(env)
	got.Len += len(env)
	copy(got.Buf[got.Off:], env)
	if n := ring0.TxBurst(0, []packet.Packet{got}); n != 1 {
		t.Fatalf("TxBurst: took %d, want 1", n)
	}
	back := rxN(t, ring0, 1)[0]
	want := append(slices.Clone(env), frame...)
	if back.Off != Headroom-len(env) || !bytes.Equal(back.Data(), want) {
		t.Errorf("prepended: Off %d data %q; want %d, %q", back.Off, back.Data(), Headroom-len(env), want)
	}
	if PktLen(back.Handle) != uint32(len(want)) || NbSegs(back.Handle) != 1 {
		t.Errorf("prepended: pkt_len %d segs %d; want %d, 1", PktLen(back.Handle), NbSegs(back.Handle), len(want))
	}
	ring0.Free([]packet.Packet{back})

	// A burst larger than BurstSize moves BurstSize packets.
	var many []packet.Packet
	for i := range packet.BurstSize + 5 {
		p, err := AllocMbuf(pool, udpFrame(i))
		if err != nil {
			t.Fatal(err)
		}
		many = append(many, p)
	}
	n := ring0.TxBurst(0, many)
	if n != packet.BurstSize {
		t.Errorf("TxBurst of %d: took %d, want %d", len(many), n, packet.BurstSize)
	}
	ring0.Free(many[n:])
	recv := rxN(t, ring0, n)
	for i, p := range recv {
		if !bytes.Equal(p.Data(), udpFrame(i)) {
			t.Errorf("packet %d: got %q, want %q", i, p.Data(), udpFrame(i))
		}
	}
	ring0.Free(recv)
	checkNoLeak(t)
}

func TestAllocMbufTooBig(t *testing.T) {
	if _, err := AllocMbuf(pool, make([]byte, DefaultDataRoom)); err == nil {
		t.Error("AllocMbuf of a frame larger than the data room: got nil error")
	}
	checkNoLeak(t)
}

func TestFreeChain(t *testing.T) {
	// More than the C side's 64-mbuf batch, with holes (zero handles).
	pkts := make([]packet.Packet, 150)
	for i := range pkts {
		if i%7 == 3 {
			continue
		}
		p, err := AllocMbuf(pool, udpFrame(i))
		if err != nil {
			t.Fatal(err)
		}
		pkts[i] = p
	}
	FreePackets(pkts)
	FreePackets(nil)
	checkNoLeak(t)
}

func TestPcap(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	var frames [][]byte
	for i := range 5 {
		frames = append(frames, udpFrame(i))
	}
	if err := writePcap(in, frames); err != nil {
		t.Fatal(err)
	}
	id, err := AttachPort(fmt.Sprintf("net_pcap0,rx_pcap=%s,tx_pcap=%s", in, out))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Configure(id, 1, 1, PortConfig{Pool: pool, RxDesc: 64, TxDesc: 64})
	if err != nil {
		id.Close()
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			p.Close()
		}
	}()
	if info, err := p.Info(); err != nil || info.Driver != "net_pcap" {
		t.Errorf("Info: got %+v, %v; want driver net_pcap", info, err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	got := rxN(t, p, len(frames))
	for i, pk := range got {
		if !bytes.Equal(pk.Data(), frames[i]) {
			t.Errorf("rx packet %d: got %x, want %x", i, pk.Data(), frames[i])
		}
	}
	if n := p.TxBurst(0, got); n != len(got) {
		t.Errorf("TxBurst: took %d, want %d", n, len(got))
		p.Free(got[n:])
	}
	st, err := p.Stats()
	if err != nil || st.IPackets != uint64(len(frames)) || st.OPackets != uint64(len(frames)) {
		t.Errorf("Stats: got %+v, %v; want %d in and out", st, err, len(frames))
	}
	closed = true
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	written, err := readPcap(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != len(frames) {
		t.Fatalf("tx_pcap: got %d frames, want %d", len(written), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(written[i], frames[i]) {
			t.Errorf("tx_pcap frame %d: got %x, want %x", i, written[i], frames[i])
		}
	}
	if _, err := PortByName("net_pcap0"); err == nil {
		t.Error("PortByName after Close: port still exists")
	}
	checkNoLeak(t)
}

func TestRSSAndReattach(t *testing.T) {
	for round := range 2 { // Close detaches, so the same devargs attach again
		id, err := AttachPort("net_null2,size=100")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		p, err := Configure(id, 2, 2, PortConfig{Pool: pool, RxDesc: 128, TxDesc: 128})
		if err != nil {
			id.Close()
			t.Fatalf("round %d: %v", round, err)
		}
		if p.NbRx() != 2 || p.NbTx() != 2 {
			t.Errorf("queues: got %d rx %d tx, want 2, 2", p.NbRx(), p.NbTx())
		}
		info, _ := p.Info()
		if info.RSSOffloads != 0 && p.RSSHash() == 0 {
			t.Errorf("RSSHash: got 0 on a device offering %#x", info.RSSOffloads)
		}
		if round == 0 {
			t.Logf("net_null RSS: device offers %#x, in use %#x", info.RSSOffloads, p.RSSHash())
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		pkts := make([]packet.Packet, packet.BurstSize)
		for q := range uint16(2) {
			n := p.RxBurst(q, pkts)
			if n == 0 || pkts[0].Len != 100 {
				t.Errorf("queue %d: got %d packets (len %d), want a burst of 100-byte packets", q, n, pkts[0].Len)
			}
			sent := p.TxBurst(q, pkts[:n])
			p.Free(pkts[sent:n])
		}
		if err := p.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
	}
	checkNoLeak(t)
}

// forward moves bursts from null0 to sink until stop is set and counts them.
func forward(stop *atomic.Bool, count *atomic.Uint64, lcore *atomic.Uint64) {
	lcore.Store(uint64(CurrentLcore()))
	pkts := make([]packet.Packet, packet.BurstSize)
	var total uint64
	for !stop.Load() {
		n := null0.RxBurst(0, pkts)
		sent := sink.TxBurst(0, pkts[:n])
		sink.Free(pkts[sent:n])
		total += uint64(n)
	}
	count.Store(total)
}

func TestLaunch(t *testing.T) {
	var stop atomic.Bool
	var count, lcore atomic.Uint64
	if err := Launch(1, func() { forward(&stop, &count, &lcore) }); err != nil {
		t.Fatal(err)
	}
	if err := Launch(1, func() {}); err == nil {
		t.Error("Launch on a busy lcore: got nil error")
	}
	time.Sleep(100 * time.Millisecond)
	runtime.GC() // a collection completes while an lcore busy-polls
	time.Sleep(100 * time.Millisecond)
	stop.Store(true)
	if err := WaitAll(); err != nil {
		t.Fatal(err)
	}
	if lcore.Load() != 1 {
		t.Errorf("CurrentLcore in the launched function: got %d, want 1", lcore.Load())
	}
	if count.Load() == 0 {
		t.Error("worker lcore forwarded no packets")
	}
	t.Logf("worker lcore 1 forwarded %d packets in 200ms", count.Load())
	checkNoLeak(t)

	// A panic comes back from Wait, and the lcore can be used again.
	if err := Launch(1, func() { panic("boom") }); err != nil {
		t.Fatal(err)
	}
	if err := Wait(1); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Wait after panic: got %v, want an error with the panic", err)
	}
	ran := false
	if err := Launch(1, func() { ran = true }); err != nil {
		t.Fatal(err)
	}
	if err := Wait(1); err != nil || !ran {
		t.Errorf("Launch after panic: ran %v, err %v", ran, err)
	}
}

func TestZeroAllocs(t *testing.T) {
	pkts := make([]packet.Packet, packet.BurstSize)
	one := make([]packet.Packet, 1)
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"RxBurst+Free", func() {
			n := null0.RxBurst(0, pkts)
			null0.Free(pkts[:n])
		}},
		{"RxBurst+TxBurst+Free", func() {
			n := null0.RxBurst(0, pkts)
			sent := sink.TxBurst(0, pkts[:n])
			sink.Free(pkts[sent:n])
		}},
		{"ring TxBurst+RxBurst", func() {
			n := null0.RxBurst(0, one)
			sent := ring0.TxBurst(0, one[:n])
			ring0.Free(one[sent:n])
			n = ring0.RxBurst(0, one)
			ring0.Free(one[:n])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, tc.fn); got != 0 {
				t.Errorf("allocations per burst: got %v, want 0", got)
			}
		})
	}
	checkNoLeak(t)
}

func BenchmarkNullRxTx(b *testing.B) {
	pkts := make([]packet.Packet, packet.BurstSize)
	b.ReportAllocs()
	var total int
	for b.Loop() {
		n := null0.RxBurst(0, pkts)
		sent := sink.TxBurst(0, pkts[:n])
		sink.Free(pkts[sent:n])
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds()/1e6, "Mpps")
}

func TestAllocator(t *testing.T) {
	a, err := pool.NewAllocator()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.FrameRoom() != DefaultDataRoom-Headroom {
		t.Errorf("FrameRoom %d, want %d", a.FrameRoom(), DefaultDataRoom-Headroom)
	}
	pkts := make([]packet.Packet, 40)
	if n := a.Alloc(pkts); n != packet.BurstSize {
		t.Fatalf("Alloc(40) = %d, want a burst of %d", n, packet.BurstSize)
	}
	for i, p := range pkts[:packet.BurstSize] {
		if p.Handle == 0 || p.Off != Headroom || p.Len != 0 || len(p.Buf) != DefaultDataRoom || NbSegs(p.Handle) != 1 {
			t.Errorf("packet %d: handle %#x off %d len %d buf %d segs %d", i, p.Handle, p.Off, p.Len, len(p.Buf), NbSegs(p.Handle))
		}
	}
	// Written and sent like a received packet.
	pk := &pkts[0]
	pk.Len = copy(pk.Buf[pk.Off:], udpFrame(1))
	if n := sink.TxBurst(0, pkts[:1]); n != 1 {
		t.Errorf("TxBurst of an allocated packet took %d", n)
	}
	FreePackets(pkts[1:packet.BurstSize])
	if got := testing.AllocsPerRun(100, func() {
		n := a.Alloc(pkts)
		FreePackets(pkts[:n])
	}); got != 0 {
		t.Errorf("allocations per Alloc: %v, want 0", got)
	}
	// A pool with fewer free mbufs than asked for gives none.
	small, err := NewPktMbufPool("dsrlbtest_small", 15, 0, DefaultDataRoom, SocketAny)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Free()
	sa, err := small.NewAllocator()
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	if n := sa.Alloc(pkts); n != 0 {
		t.Errorf("Alloc of 32 from a 15-mbuf pool = %d, want 0", n)
		FreePackets(pkts[:n])
	}
	checkNoLeak(t)
}

// TestPoolPerQueue: with PortConfig.Pools, rx queue q takes its mbufs from
// Pools[q % len(Pools)] and from no other pool (one pool per worker).
func TestPoolPerQueue(t *testing.T) {
	var pools []*Mempool
	for i := range 2 {
		mp, err := NewPktMbufPool(fmt.Sprintf("perq%d", i), 1023, 0, DefaultDataRoom, SocketAny)
		if err != nil {
			t.Fatal(err)
		}
		pools = append(pools, mp)
	}
	id, err := AttachPort("net_null3,size=64")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Configure(id, 2, 2, PortConfig{Pools: pools, RxDesc: 128, TxDesc: 128})
	if err != nil {
		id.Close()
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	pkts := make([]packet.Packet, packet.BurstSize)
	for q := range uint16(2) {
		before := []uint32{pools[0].Avail(), pools[1].Avail()}
		n := p.RxBurst(q, pkts)
		if n == 0 {
			t.Fatalf("queue %d: no packets", q)
		}
		after := []uint32{pools[0].Avail(), pools[1].Avail()}
		for i := range pools {
			want := before[i]
			if i == int(q) {
				want -= uint32(n)
			}
			if after[i] != want {
				t.Errorf("queue %d received %d: pool %d has %d free, want %d (was %d)", q, n, i, after[i], want, before[i])
			}
		}
		p.Free(pkts[:n])
	}
	if _, err := Configure(id, 1, 1, PortConfig{Pools: []*Mempool{nil}}); err == nil {
		t.Error("Configure with a nil pool in Pools: got nil error")
	}
}
