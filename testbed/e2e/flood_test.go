package e2e

import (
	"context"
	"encoding/json"
	"math/rand"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

const (
	floodConns    = 16   // long-lived connections through the appliance
	floodFlows    = 8192 // fake flows in the capture: eight times the table
	floodCapacity = 1024 // the smallest flow table config allows
	floodRate     = 2000 // flows.new_flows_per_second
	floodFor      = 6 * time.Second

	floodTransfers    = 16 // long downloads through the appliance
	floodTransferRate = 256 << 10
	// floodTransferSize lasts 12 s at floodTransferRate: the transfers
	// start before the flood and end after it (not a multiple of the
	// stream's 100-byte lines: the last is cut).
	floodTransferSize = 12 * floodTransferRate
)

// floodCapture writes the flood the test replays: for each of floodFlows
// flows from random sources (10.99.0.200-.250 on the client's segment,
// random ports), a SYN and then an ACK to the web VIP, as a botnet that
// completes handshakes would send them, so that the flood's entries are
// established ones that fill the table (a SYN-only flood's entries replace
// one another). Frames go to the appliance's MAC from a locally
// administered one; the backends' answers go to addresses nobody on the
// segment has.
func floodCapture(t *testing.T, applMAC string) string {
	t.Helper()
	hw, err := net.ParseMAC(applMAC)
	if err != nil {
		t.Fatal(err)
	}
	dst := [6]byte(hw)
	rng := rand.New(rand.NewSource(18))
	var frames [][]byte
	for i := 0; i < floodFlows; i++ {
		src := netip.AddrFrom4([4]byte{10, 99, 0, byte(200 + rng.Intn(51))})
		p := testpkt.Packet{SrcMAC: [6]byte{0x02, 0xf1, 0x00, 0, byte(i >> 8), byte(i)}, DstMAC: dst, Src: src, Dst: nsbed.L2VIP,
			Proto: pipeline.ProtoTCP, SrcPort: uint16(1024 + rng.Intn(60000)), DstPort: nsbed.HTTPPort, TCPFlags: pipeline.TCPFlagSYN}
		frames = append(frames, p.Build())
		p.TCPFlags = pipeline.TCPFlagACK
		frames = append(frames, p.Build())
	}
	path := filepath.Join(t.TempDir(), "flood.pcap")
	if err := pcap.WriteFile(path, frames); err != nil {
		t.Fatal(err)
	}
	checkFloodCapture(t, path, applMAC)
	return path
}

// checkFloodCapture has tshark read the capture: every frame a TCP segment
// to the web VIP's port at the appliance's MAC, from 10.99.0.200-.250, a
// SYN and an ACK for each flow.
func checkFloodCapture(t *testing.T, path, applMAC string) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark not installed: it checks the flood capture")
	}
	out, err := exec.Command("tshark", "-n", "-r", path, "-T", "fields", "-E", "separator=|",
		"-e", "eth.dst", "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.dstport", "-e", "tcp.flags.syn", "-e", "tcp.flags.ack").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	syn, ack := 0, 0
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 6 {
			t.Fatalf("tshark line %d: %q", i, line)
		}
		src, err := netip.ParseAddr(f[1])
		if err != nil || !strings.EqualFold(f[0], applMAC) || f[2] != nsbed.L2VIP.String() || f[3] != strconv.Itoa(nsbed.HTTPPort) ||
			!src.Is4() || src.As4()[3] < 200 || src.As4()[3] > 250 || netip.PrefixFrom(src, 24).Masked() != nsbed.L2Subnet {
			t.Fatalf("tshark frame %d: %q, want a segment %s -> %s:%d from 10.99.0.200-250", i, line, applMAC, nsbed.L2VIP, nsbed.HTTPPort)
		}
		switch f[4] + f[5] {
		case "10", "TrueFalse":
			syn++
		case "01", "FalseTrue":
			ack++
		default:
			t.Fatalf("tshark frame %d: flags syn %s ack %s", i, f[4], f[5])
		}
	}
	if syn != floodFlows || ack != floodFlows {
		t.Errorf("tshark: %d SYNs, %d ACKs in the capture, want %d each", syn, ack, floodFlows)
	}
}

// replay sends the capture's frames from the client's interface in a loop
// as fast as the socket takes them until stop is closed, and returns how
// many it sent.
func replay(t *testing.T, ns *nsbed.NS, path string, stop <-chan struct{}) <-chan int {
	t.Helper()
	frames, err := pcap.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sock, err := ns.OpenPacketSocket("eth0", nsbed.PacketSocketOptions{IgnoreOutgoing: true})
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan int, 1)
	go func() {
		defer sock.Close()
		n := 0
		for {
			for _, f := range frames {
				select {
				case <-stop:
					sent <- n
					return
				default:
				}
				if sock.Send(f) == nil {
					n++
				}
			}
		}
	}()
	return sent
}

// TestFloodKeepsEstablished: while 16 long-lived connections and 16 long
// transfers (downloads of 3 MiB at 256 KiB/s, 12 s each) run through the
// appliance, a flood of new flows from random sources (a capture the test
// writes, replayed into the appliance's segment) fills its flow table; a
// backend is added over the API meanwhile. No connection breaks or changes
// backend, every transfer goes on to its last byte, all from one backend,
// never waiting 5 s for data, and the counters show the flood: flows forwarded
// without an entry, over the rate and with the table full.
func TestFloodKeepsEstablished(t *testing.T) {
	token := newAPIToken(t)
	l := startL2(t, nsbed.L2Options{Backends: 4,
		Config: func(c *v1.Config) {
			c.API.Token = token
			c.Flows.Capacity, c.Flows.NewFlowsPerSecond = floodCapacity, floodRate
			for i := range c.Services {
				c.Services[i].Backends = c.Services[i].Backends[:3]
				h := c.Services[i].Health
				// Health checks share the machine with the flood: slow
				// answers during it must not take backends down (the
				// test is about the flow table, not about health).
				h.Interval, h.Timeout, h.Fall = v1.Duration(time.Second), v1.Duration(time.Second), 20
			}
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := l.Appliance
	be4 := l.Backends[3].IP.String()

	capture := floodCapture(t, l.ApplianceMAC)
	web := net.JoinHostPort(nsbed.L2VIP.String(), strconv.Itoa(nsbed.HTTPPort))
	transfers := startTransfers(ctx, l.Client, web, floodTransfers, floodTransferSize, floodTransferRate)
	defer transfers.stop()
	pool := startLivePool(ctx, l.Client, web, floodConns, 100*time.Millisecond)
	defer pool.stop()
	base := pool.waitProgress(ctx, nil, 3, flowsWait)
	if p := liveStayProblems(nil, base, 3, ""); len(p) != 0 {
		t.Fatalf("long-lived connections before the flood: %s", strings.Join(p, "; "))
	}
	if !transfers.started(ctx, flowsWait) {
		t.Fatalf("transfers before the flood: %s", strings.Join(transferProblems(transfers.wait(0), floodTransferSize), "; "))
	}
	t.Logf("%d long-lived connections: %s; %d transfers: %s", floodConns, liveSpread(liveByBackend(base)),
		floodTransfers, transferSpread(transfers.states()))
	c0 := mustStatsSample(ctx, t, a)
	port0 := linkRxPackets(t, l.Host("appl"), "eth0")

	stop := make(chan struct{})
	sent := replay(t, l.Client, capture, stop)
	start := time.Now()
	time.Sleep(floodFor / 2) // the flood runs; nothing to wait for
	var added struct{ IP string }
	if err := a.Change(ctx, http.MethodPost, "/api/v1/services/web/backends", map[string]string{"ip": be4}, &added); err != nil {
		close(stop)
		t.Fatal(err)
	}
	if _, err := waitForwarding(ctx, a, "web", be4, "active", flowsWait); err != nil {
		close(stop)
		t.Fatal(err)
	}
	atAdd := transfers.states()
	t.Logf("TIMING be4 added and active %v into the flood", time.Since(start).Round(10*time.Millisecond))
	if d := floodFor - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	close(stop)
	for i, s := range transfers.states() {
		if s.Done { // an error is reported with the transfers below
			t.Errorf("transfer %d read its %d bytes before the flood ended, want it to run through", i, s.Got)
		}
	}
	n := <-sent
	t.Logf("RESULT flood: %d frames in %v (%.0f/s)", n, time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())

	_, c1 := waitLiveStay(ctx, t, pool, a, base, 10)
	port1 := linkRxPackets(t, l.Host("appl"), "eth0")
	t.Logf("RESULT appliance port from before the flood to after it: the kernel took %d frames, the data plane received %d",
		port1-port0, c1.stats.Totals.RxPackets-c0.stats.Totals.RxPackets)
	f0, f1 := c0.flows, c1.flows
	t.Logf("RESULT flows: entries %d, misses +%d, evictions +%d, stateless +%d, table full +%d",
		f1.Entries, f1.Misses-f0.Misses, f1.Evictions-f0.Evictions, f1.Stateless-f0.Stateless, f1.TableFull-f0.TableFull)
	if f1.Entries < floodCapacity*9/10 {
		t.Errorf("flows.entries %d, want the table (%d) nearly full", f1.Entries, floodCapacity)
	}
	if f1.Stateless == f0.Stateless || f1.TableFull == f0.TableFull {
		t.Errorf("flows.stateless +%d, flows.table_full +%d: want both to grow under the flood",
			f1.Stateless-f0.Stateless, f1.TableFull-f0.TableFull)
	}
	if f1.Stateless-f0.Stateless <= f1.TableFull-f0.TableFull {
		t.Errorf("flows.stateless +%d not above flows.table_full +%d: want flows over the rate too",
			f1.Stateless-f0.Stateless, f1.TableFull-f0.TableFull)
	}
	if d := f1.Remapped - f0.Remapped; d != 0 {
		t.Errorf("flows.remapped grew by %d, want 0 (no backend went away)", d)
	}

	states := transfers.wait(floodTransferSize/floodTransferRate*time.Second + flowsWait)
	for _, p := range transferProblems(states, floodTransferSize) {
		t.Error(p)
	}
	var slowest transferState
	waited := 0 // transfers that waited a second or more for data
	after := int64(floodTransferSize)
	for i, s := range states {
		if s.Stall > slowest.Stall {
			slowest = s
		}
		if s.Stall >= time.Second {
			waited++
		}
		after = min(after, s.Got-atAdd[i].Got)
		if s.Backend != atAdd[i].Backend {
			t.Errorf("transfer %d: on %s when be4 was added, now on %s", i, atAdd[i].Backend, s.Backend)
		}
	}
	if after <= 0 {
		t.Errorf("a transfer read %d bytes after be4 was added, want more", after)
	}
	t.Logf("RESULT transfers: %d of %d bytes each (%s), at least %d read after be4 was added; longest wait for data %v (%s, ended %v after the flood began), %d waited a second or more",
		floodTransfers, floodTransferSize, transferSpread(states), after,
		slowest.Stall.Round(time.Millisecond), slowest.Local, slowest.StallEnd.Sub(start).Round(10*time.Millisecond), waited)
}

// linkRxPackets returns the frames the kernel received on ifname in ns
// (ip -s link: all that reached the interface, whether or not the
// appliance's packet socket took them).
func linkRxPackets(t *testing.T, ns *nsbed.NS, ifname string) uint64 {
	t.Helper()
	out, err := ns.Run("ip", "-j", "-s", "link", "show", ifname)
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Stats64 struct {
			RX struct{ Packets uint64 } `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -s link show %s: %q (%v)", ifname, out, err)
	}
	return links[0].Stats64.RX.Packets
}

const (
	limitRate  = 20  // services[web].limits.new_flows_per_second
	limitBurst = 200 // new connections to web at once
	limitUDP   = 100 // new UDP flows to echo meanwhile
	// limitDial bounds each new connection's dial: long enough for one
	// SYN sent again (after 1 s), so that the limit lets some in late.
	limitDial = 1500 * time.Millisecond
)

// TestServiceNewFlowLimit: web limited to 20 new flows per second (one
// worker). 200 new connections to web at once get in no faster than the
// limit's token bucket allows, the SYNs over it dropped and counted
// (new_flow_limit, per reason and per service); meanwhile 100 new UDP
// flows to echo, a service without a limit on the same VIP, all get
// their answer, and 4 keep-alive connections to web opened before go on
// answering on their one connection.
func TestServiceNewFlowLimit(t *testing.T) {
	l := startL2(t, nsbed.L2Options{Backends: 3,
		Config: func(c *v1.Config) {
			for i := range c.Services {
				if c.Services[i].Name == "web" {
					c.Services[i].Limits = &v1.Limits{NewFlowsPerSecond: limitRate}
				}
			}
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a := l.Appliance
	web := net.JoinHostPort(nsbed.L2VIP.String(), strconv.Itoa(nsbed.HTTPPort))

	pool := startLivePool(ctx, l.Client, web, 4, 100*time.Millisecond)
	defer pool.stop()
	base := pool.waitProgress(ctx, nil, 3, flowsWait)
	if p := liveStayProblems(nil, base, 3, ""); len(p) != 0 {
		t.Fatalf("keep-alive connections before the burst: %s", strings.Join(p, "; "))
	}
	s0, err := a.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	udp := make(chan *nsbed.UDPTally, 1)
	go func() {
		u, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr(), limitUDP, 1)
		if err != nil {
			u = &nsbed.UDPTally{Errors: []string{err.Error()}}
		}
		udp <- u
	}()
	start := time.Now()
	connected := limitBurstDial(ctx, l.Client, web)
	took := time.Since(start)
	u := <-udp
	after := pool.waitProgress(ctx, base, 10, flowsWait)
	s1, err := a.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := s1.Sub(s0)
	drops, webDrops, echoDrops := d.Drops["new_flow_limit"], d.Services["web"].NewFlowLimited, d.Services["echo"].NewFlowLimited
	webNew, echoNew := d.NewFlows("web"), d.NewFlows("echo")
	t.Logf("RESULT burst: %d of %d connections in within %v (%v), %d new web flows; %d SYNs dropped over the limit (web %d, echo %d); echo: %d of %d UDP flows answered, %d new flows (%s)",
		connected, limitBurst, limitDial, took.Round(time.Millisecond), webNew, drops, webDrops, echoDrops, u.Received, limitUDP, echoNew, u.Spread())

	// The bucket holds one second of the rate and refills at the rate:
	// in took, at most limitRate*(1+took) new flows get in.
	most := int(float64(limitRate) * (1 + took.Seconds()))
	if connected < limitRate/2 || connected > most {
		t.Errorf("%d of %d new connections got in, want %d..%d (a second of the rate, plus the rate over %v)",
			connected, limitBurst, limitRate/2, most, took.Round(time.Millisecond))
	}
	if webNew < uint64(connected) || webNew > uint64(most) {
		t.Errorf("web's new flows +%d, want %d (connected)..%d", webNew, connected, most)
	}
	if drops == 0 || drops != webDrops || echoDrops != 0 {
		t.Errorf("drops.new_flow_limit +%d, web's new_flow_limit_drops +%d, echo's +%d: want web's, as many as the reason's and above 0, echo's 0",
			drops, webDrops, echoDrops)
	}
	if drops < uint64(limitBurst-connected) {
		t.Errorf("drops.new_flow_limit +%d, want at least the %d connections that did not get in", drops, limitBurst-connected)
	}
	if u.Received != limitUDP || len(u.Errors) != 0 || echoNew < limitUDP {
		t.Errorf("echo: %d of %d UDP flows answered, %d new flows, errors %v: want every one", u.Received, limitUDP, echoNew, u.Errors)
	}
	for _, p := range liveStayProblems(base, after, 10, "") {
		t.Errorf("keep-alive connection through the burst: %s", p)
	}
}

// limitBurstDial opens limitBurst TCP connections to addr from ns at once,
// each given limitDial, and returns how many connected.
func limitBurstDial(ctx context.Context, ns *nsbed.NS, addr string) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for i := 0; i < limitBurst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, limitDial)
			defer cancel()
			if c, err := ns.DialContext(dctx, "tcp", addr); err == nil {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}
