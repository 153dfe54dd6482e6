package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// needTshark fails the test unless tshark, the independent dissector the
// replay tests check their output with, is installed.
func needTshark(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark is required (make deps installs it)")
	}
}

// dsrlbBin builds the dsrlb binary once per test run.
func dsrlbBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("dsrlb-test-%d", os.Getpid()))
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Cleanup(func() { os.Remove(bin) })
	return bin
}

const replayConfig = `
dataplane:
  eal_args: [--no-huge, --no-pci, -m, "256"]
  ports:
    - {name: eth0, device: net_null0, ip: 192.0.2.10/24, gateway: 192.0.2.1, mac: "02:00:00:00:00:10"}
neighbors:
  - {ip: 192.0.2.1, mac: "02:00:00:00:00:01"}
  - {ip: 192.0.2.21, mac: "02:00:00:00:00:21"}
  - {ip: 192.0.2.22, mac: "02:00:00:00:00:22"}
  - {ip: 192.0.2.23, mac: "02:00:00:00:00:23"}
flows: {capacity: 65536}
services:
  - {name: %s, vip: 203.0.113.10, protocol: tcp, port: 80, mode: %s, backends: [%s]}
  - {name: %s-udp, vip: 203.0.113.10, protocol: udp, port: 0, mode: %s, backends: [%s]}
`

var (
	clientMAC = [6]byte{2, 0, 0, 0, 0, 1}
	lbMAC     = [6]byte{2, 0, 0, 0, 0, 0x10}
	vip       = netip.MustParseAddr("203.0.113.10")
)

// replayInput is flows TCP and UDP flows to the VIP (two packets each),
// plus malformed and unrelated frames that must be dropped or kept from the
// wire.
func replayInput(flows int) (pkts [][]byte, vipPkts int, drops map[string]uint64) {
	for round := 0; round < 2; round++ {
		for i := 0; i < flows; i++ {
			p := testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC,
				Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)}), Dst: vip,
				SrcPort: uint16(10000 + i), DstPort: 80, TOS: byte(i%4) << 2, DF: i%3 != 0, ID: uint16(i),
				Proto: 6, Payload: []byte(fmt.Sprintf("flow %d round %d", i, round))}
			if i%2 == 1 {
				p.Proto, p.DstPort = 17, uint16(5000+i)
			}
			pkts = append(pkts, p.Build())
			vipPkts++
		}
	}
	good := pkts[0]
	bad := func(fn func([]byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	pkts = append(pkts,
		good[:20], // truncated IP
		bad(func(b []byte) []byte { b[14] = 0x43; return b }),                             // IHL 3
		bad(func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 2000); return b }), // total length beyond frame
		bad(func(b []byte) []byte { b[14] = 0x65; return b }),                             // version 6 in an IPv4 frame
		bad(func(b []byte) []byte { b[12], b[13] = 0x88, 0xb5; return b }),                // not IP
		testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC, Src: netip.MustParseAddr("198.51.100.9"), // ping to the VIP: kernel
			Dst: vip, Proto: 1, ICMPType: 8}.Build(),
	)
	return pkts, vipPkts, map[string]uint64{"truncated": 1, "bad_ihl": 1, "bad_total_length": 1, "bad_version": 1, "not_ip": 1}
}

// replayRun is one `dsrlb replay`: its counters, output and log.
type replayRun struct {
	Stats   v1.Stats
	Out     [][]byte
	InPath  string
	OutPath string
	Stderr  string
	MaxRSS  int64 // peak resident set size of the process, KB
}

// runReplay replays in with config cfg and fails the test unless dsrlb
// exits 0 with a JSON last line.
func runReplay(t *testing.T, cfg string, in [][]byte) replayRun {
	t.Helper()
	bin := dsrlbBin(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	inPath, outPath := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	if err := pcap.WriteFile(inPath, in); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "replay", "--config", cfgPath, "--in", inPath, "--out", outPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	r := replayRun{InPath: inPath, OutPath: outPath, Stderr: stderr.String()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.MaxRSS = ru.Maxrss
	}
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r.Stats); err != nil {
		t.Fatalf("last stdout line is not JSON: %v: %q", err, lines[len(lines)-1])
	}
	if r.Out, err = pcap.ReadFile(outPath); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkReplayed checks a replay of replayInput: every packet received and
// accounted for (rx = tx + kernel + drops, nothing lost at tx), the
// malformed frames dropped by reason, every VIP packet out exactly once and
// in order with the input's IP packet unchanged inside (overhead bytes of
// envelope), the appliance's source MAC, and every flow on one backend.
func checkReplayed(t *testing.T, r replayRun, in [][]byte, vipPkts int, wantDrops map[string]uint64, overhead int) {
	t.Helper()
	st := r.Stats
	if st.Totals.RxPackets != uint64(len(in)) || st.Totals.TxPackets != uint64(vipPkts) || st.Totals.ToKernel != 1 {
		t.Errorf("rx %d tx %d kernel %d, want %d, %d, 1", st.Totals.RxPackets, st.Totals.TxPackets, st.Totals.ToKernel, len(in), vipPkts)
	}
	if got := st.Totals.TxPackets + st.Totals.ToKernel + st.Totals.Dropped; got != st.Totals.RxPackets {
		t.Errorf("tx + kernel + dropped = %d, rx %d: packets unaccounted for", got, st.Totals.RxPackets)
	}
	if st.Drops["tx_full"] != 0 {
		t.Errorf("drops[tx_full] = %d, want 0", st.Drops["tx_full"])
	}
	for r, n := range wantDrops {
		if st.Drops[r] != n {
			t.Errorf("drops[%s] = %d, want %d", r, st.Drops[r], n)
		}
	}
	if st.Totals.Dropped != uint64(len(wantDrops)) {
		t.Errorf("dropped %d, want %d (%v)", st.Totals.Dropped, len(wantDrops), st.Drops)
	}
	if len(r.Out) != vipPkts {
		t.Fatalf("%d packets out, want every VIP packet exactly once: %d", len(r.Out), vipPkts)
	}
	// Field by field with our own eyes: the inner packet is the input's IP
	// packet, byte for byte, and a flow keeps its backend.
	flowBackend := map[string]string{}
	for i, o := range r.Out {
		inner := in[i][14:]
		if !bytes.Equal(o[14+overhead:], inner) {
			t.Fatalf("packet %d: inner packet changed", i)
		}
		if !bytes.Equal(o[6:12], lbMAC[:]) {
			t.Errorf("packet %d: src MAC %x", i, o[6:12])
		}
		be := fmt.Sprintf("%x", o[0:6])
		if overhead > 0 {
			be = netip.AddrFrom4([4]byte(o[30:34])).String()
		}
		key := fmt.Sprintf("%x", inner[9:10]) + fmt.Sprintf("%x", inner[12:24])
		if prev, ok := flowBackend[key]; ok && prev != be {
			t.Errorf("packet %d: flow moved from %s to %s", i, prev, be)
		}
		flowBackend[key] = be
	}
}

func TestReplayGolden(t *testing.T) {
	needTshark(t)
	for _, tc := range []struct {
		mode     string
		overhead int
	}{{"l2", 0}, {"ipip", 20}, {"gre", 24}} {
		t.Run(tc.mode, func(t *testing.T) {
			in, vipPkts, wantDrops := replayInput(300)
			r := runReplay(t, modeConfig(tc.mode, replayBackends[tc.mode]), in)
			checkReplayed(t, r, in, vipPkts, wantDrops, tc.overhead)
			checkTshark(t, r.OutPath, tc.mode, in[:vipPkts], replayBackends[tc.mode])
			compareGolden(t, "replay_"+tc.mode, "replay_in", r.InPath, r.Out)
		})
	}
}

// replayBackends are the backend addresses of the replay tests per mode:
// on-link for l2, behind the gateway for ipip and gre.
var replayBackends = map[string][]string{
	"l2":   {"192.0.2.21", "192.0.2.22", "192.0.2.23"},
	"ipip": {"10.1.0.1", "10.1.0.2", "10.1.0.3"},
	"gre":  {"10.2.0.1", "10.2.0.2", "10.2.0.3"},
}

// modeConfig is replayConfig in mode with backends ips (weights 1, 2, 1).
func modeConfig(mode string, ips []string) string {
	be := fmt.Sprintf("{ip: %s, weight: 1}, {ip: %s, weight: 2}, {ip: %s, weight: 1}", ips[0], ips[1], ips[2])
	return fmt.Sprintf(replayConfig, mode, mode, be, mode, mode, be)
}

// compareGolden holds out to testdata/<name>.pcap byte for byte. With
// -update it first writes out there and the input capture inPath to
// testdata/<inName>.pcap.
func compareGolden(t *testing.T, name, inName, inPath string, out [][]byte) {
	t.Helper()
	golden := filepath.Join("testdata", name+".pcap")
	if *update {
		os.MkdirAll("testdata", 0o755)
		pcap.WriteFile(golden, out)
		os.WriteFile(filepath.Join("testdata", inName+".pcap"), mustRead(t, inPath), 0o644)
	}
	want, err := pcap.ReadFile(golden)
	if err != nil {
		t.Fatalf("golden: %v (run go test -update)", err)
	}
	if len(want) != len(out) {
		t.Fatalf("%d packets, golden has %d", len(out), len(want))
	}
	for i := range want {
		if !bytes.Equal(want[i], out[i]) {
			t.Fatalf("packet %d differs from golden %s:\n got %x\nwant %x", i, golden, out[i], want[i])
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplayLargeCaptureBoundedMemory replays 40,006 packets with the
// README's eal_args, [--no-huge, --no-pci] and no -m. The pool used to grow
// with the capture (packets + 16384 mbufs) and already 9,000 packets did not
// fit in the EAL's default 64 MB. Now the capture is streamed, the pool
// follows the queues and the EAL gets -m for it: every VIP packet comes
// out, and the process stays far below the 156 MB that one 4 KB mbuf per
// packet alone would take.
func TestReplayLargeCaptureBoundedMemory(t *testing.T) {
	needTshark(t)
	cfg := strings.Replace(replayConfig, `eal_args: [--no-huge, --no-pci, -m, "256"]`, `eal_args: [--no-huge, --no-pci]`, 1)
	ips := replayBackends["ipip"]
	be := fmt.Sprintf("{ip: %s, weight: 1}, {ip: %s, weight: 2}, {ip: %s, weight: 1}", ips[0], ips[1], ips[2])
	cfg = fmt.Sprintf(cfg, "ipip", "ipip", be, "ipip", "ipip", be)
	in, vipPkts, wantDrops := replayInput(20000)
	if len(in) <= 25384 {
		t.Fatalf("%d packets: want more than the 25384 mbufs that failed", len(in))
	}
	r := runReplay(t, cfg, in)
	checkReplayed(t, r, in, vipPkts, wantDrops, 20)
	checkTshark(t, r.OutPath, "ipip", in[:vipPkts], ips)
	const maxRSS = 150 << 10 // KB
	if r.MaxRSS > maxRSS {
		t.Errorf("peak RSS %d KB, want at most %d KB", r.MaxRSS, maxRSS)
	}
	t.Logf("%d packets replayed, peak RSS %d KB", len(in), r.MaxRSS)
}

// TestReplayPlaceholderMAC: replay has no kernel neighbour table, so a next
// hop without a static neighbour gets the placeholder MAC 02:00 followed by
// its IPv4 address, logged once, and its packets still come out.
func TestReplayPlaceholderMAC(t *testing.T) {
	be := "{ip: 192.0.2.30, weight: 1}"
	cfg := fmt.Sprintf(replayConfig, "l2", "l2", be, "l2", "l2", be)
	in, vipPkts, wantDrops := replayInput(20)
	r := runReplay(t, cfg, in)
	checkReplayed(t, r, in, vipPkts, wantDrops, 0)
	want := []byte{0x02, 0x00, 192, 0, 2, 30}
	for i, o := range r.Out {
		if !bytes.Equal(o[0:6], want) {
			t.Fatalf("packet %d: dst MAC %x, want %x", i, o[0:6], want)
		}
	}
	if n := strings.Count(r.Stderr, `"event":"replay_placeholder_mac","next_hop":"192.0.2.30","mac":"02:00:c0:00:02:1e"`); n != 1 {
		t.Errorf("placeholder logged %d times, want once:\n%s", n, r.Stderr)
	}
	checkTshark(t, r.OutPath, "l2", in[:vipPkts], nil)
}

// checkTshark dissects the output with tshark, an independent dissector:
// valid outer IPv4 (checksum verified by tshark, length, TTL 64, DSCP and
// DF copied from the inner header), GRE protocol 0x0800, the inner
// addresses and ports untouched, backends only from the configured set.
func checkTshark(t *testing.T, path, mode string, in [][]byte, backends []string) {
	t.Helper()
	rows := tsharkRows(t, path, "frame.number", "eth.src", "ip.version", "ip.proto", "ip.src", "ip.dst", "ip.ttl", "ip.dsfield",
		"ip.flags.df", "ip.len", "ip.checksum.status", "gre.proto", "tcp.srcport", "udp.srcport")
	okBackend := map[string]bool{}
	for _, b := range backends {
		okBackend[b] = true
	}
	if len(rows) != len(in) {
		t.Fatalf("tshark saw %d packets, want %d", len(rows), len(in))
	}
	for i, row := range rows {
		get := func(name string) []string { return strings.Split(row[name], ",") }
		inIP := in[i][14:]
		innerSrc := netip.AddrFrom4([4]byte(inIP[12:16])).String()
		wantTOS := "0x" + fmt.Sprintf("%02x", inIP[1])
		wantDF := "0"
		if inIP[6]&0x40 != 0 {
			wantDF = "1"
		}
		srcs, dsts := get("ip.src"), get("ip.dst")
		if mode == "l2" {
			if len(srcs) != 1 || srcs[0] != innerSrc || dsts[0] != vip.String() {
				t.Fatalf("row %d: l2 addresses %v -> %v", i, srcs, dsts)
			}
			continue
		}
		if len(srcs) != 2 {
			t.Fatalf("row %d: want two IPv4 headers, tshark sees %v", i, srcs)
		}
		checks := map[string][2]string{
			"outer src":      {srcs[0], "192.0.2.10"},
			"inner src":      {srcs[1], innerSrc},
			"inner dst":      {dsts[1], vip.String()},
			"outer ttl":      {get("ip.ttl")[0], "64"},
			"outer checksum": {get("ip.checksum.status")[0], "1"},
			"inner checksum": {get("ip.checksum.status")[1], "1"},
			"outer dsfield":  {get("ip.dsfield")[0], wantTOS},
			"outer df":       {get("ip.flags.df")[0], wantDF},
			"outer len":      {get("ip.len")[0], strconv.Itoa(len(inIP) + map[string]int{"ipip": 20, "gre": 24}[mode])},
		}
		if mode == "ipip" {
			checks["outer proto"] = [2]string{get("ip.proto")[0], "4"}
		} else {
			checks["outer proto"] = [2]string{get("ip.proto")[0], "47"}
			checks["gre proto"] = [2]string{get("gre.proto")[0], "0x0800"}
		}
		for name, c := range checks {
			if c[0] != c[1] {
				t.Errorf("row %d: %s = %q, want %q (tshark row %v)", i, name, c[0], c[1], row)
			}
		}
		if !okBackend[dsts[0]] {
			t.Errorf("row %d: outer dst %s is not a backend", i, dsts[0])
		}
	}
}

// tsharkRows dissects the capture at path with tshark (IPv4, TCP and UDP
// checksums verified) and returns, per frame, each field's values joined by commas
// (an empty string when the frame has none).
func tsharkRows(t *testing.T, path string, fields ...string) []map[string]string {
	t.Helper()
	args := []string{"-r", path, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	outb, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var rows []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(string(outb)), "\n") {
		vals := strings.Split(line, "|")
		if len(vals) != len(fields) {
			t.Fatalf("tshark row %q has %d fields, want %d", line, len(vals), len(fields))
		}
		r := map[string]string{}
		for j, f := range fields {
			r[f] = vals[j]
		}
		rows = append(rows, r)
	}
	return rows
}
