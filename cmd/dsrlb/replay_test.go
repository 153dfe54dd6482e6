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
	"testing"

	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

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

// replayInput is many TCP and UDP flows to the VIP (two packets each), plus
// malformed and unrelated frames that must be dropped or kept from the wire.
func replayInput() (pkts [][]byte, vipPkts int, drops map[string]uint64) {
	for round := 0; round < 2; round++ {
		for i := 0; i < 300; i++ {
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

func TestReplayGolden(t *testing.T) {
	bin := dsrlbBin(t)
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark is required (make deps installs it)")
	}
	backends := "{ip: %s, weight: 1}, {ip: %s, weight: 2}, {ip: %s, weight: 1}"
	for _, tc := range []struct {
		mode     string
		ips      []string
		overhead int
	}{
		{"l2", []string{"192.0.2.21", "192.0.2.22", "192.0.2.23"}, 0},
		{"ipip", []string{"10.1.0.1", "10.1.0.2", "10.1.0.3"}, 20},
		{"gre", []string{"10.2.0.1", "10.2.0.2", "10.2.0.3"}, 24},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			be := fmt.Sprintf(backends, tc.ips[0], tc.ips[1], tc.ips[2])
			cfg := fmt.Sprintf(replayConfig, tc.mode, tc.mode, be, tc.mode, tc.mode, be)
			cfgPath := filepath.Join(dir, "config.yaml")
			os.WriteFile(cfgPath, []byte(cfg), 0o644)
			in, vipPkts, wantDrops := replayInput()
			inPath, outPath := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
			if err := pcap.WriteFile(inPath, in); err != nil {
				t.Fatal(err)
			}
			st := runReplay(t, bin, cfgPath, inPath, outPath)
			if st.Totals.RxPackets != uint64(len(in)) || st.Totals.TxPackets != uint64(vipPkts) || st.Totals.ToKernel != 1 {
				t.Errorf("rx %d tx %d kernel %d, want %d, %d, 1", st.Totals.RxPackets, st.Totals.TxPackets, st.Totals.ToKernel, len(in), vipPkts)
			}
			for r, n := range wantDrops {
				if st.Drops[r] != n {
					t.Errorf("drops[%s] = %d, want %d", r, st.Drops[r], n)
				}
			}
			if st.Totals.Dropped != uint64(len(wantDrops)) {
				t.Errorf("dropped %d, want %d (%v)", st.Totals.Dropped, len(wantDrops), st.Drops)
			}
			out, err := pcap.ReadFile(outPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != vipPkts {
				t.Fatalf("%d packets out, want every VIP packet exactly once: %d", len(out), vipPkts)
			}
			// Field by field with our own eyes: the inner packet is the
			// input's IP packet, byte for byte, and a flow keeps its backend.
			flowBackend := map[string]string{}
			for i, o := range out {
				inner := in[i][14:]
				if !bytes.Equal(o[14+tc.overhead:], inner) {
					t.Fatalf("packet %d: inner packet changed", i)
				}
				if !bytes.Equal(o[6:12], lbMAC[:]) {
					t.Errorf("packet %d: src MAC %x", i, o[6:12])
				}
				be := fmt.Sprintf("%x", o[0:6])
				if tc.overhead > 0 {
					be = netip.AddrFrom4([4]byte(o[30:34])).String()
				}
				key := fmt.Sprintf("%x", inner[9:10]) + fmt.Sprintf("%x", inner[12:24])
				if prev, ok := flowBackend[key]; ok && prev != be {
					t.Errorf("packet %d: flow moved from %s to %s", i, prev, be)
				}
				flowBackend[key] = be
			}
			checkTshark(t, outPath, tc.mode, in, tc.ips)
			golden := filepath.Join("testdata", "replay_"+tc.mode+".pcap")
			if *update {
				os.MkdirAll("testdata", 0o755)
				pcap.WriteFile(golden, out)
				os.WriteFile(filepath.Join("testdata", "replay_in.pcap"), mustRead(t, inPath), 0o644)
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
		})
	}
}

// runReplay runs `dsrlb replay` and returns the counters of its last
// stdout line.
func runReplay(t *testing.T, bin, cfgPath, inPath, outPath string) control.Stats {
	t.Helper()
	cmd := exec.Command(bin, "replay", "--config", cfgPath, "--in", inPath, "--out", outPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	var st control.Stats
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &st); err != nil {
		t.Fatalf("last stdout line is not JSON: %v: %q", err, lines[len(lines)-1])
	}
	return st
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkTshark dissects the output with tshark, an independent dissector:
// valid outer IPv4 (checksum verified by tshark, length, TTL 64, DSCP and
// DF copied from the inner header), GRE protocol 0x0800, the inner
// addresses and ports untouched, backends only from the configured set.
func checkTshark(t *testing.T, path, mode string, in [][]byte, backends []string) {
	t.Helper()
	fields := []string{"frame.number", "eth.src", "ip.version", "ip.proto", "ip.src", "ip.dst", "ip.ttl", "ip.dsfield",
		"ip.flags.df", "ip.len", "ip.checksum.status", "gre.proto", "tcp.srcport", "udp.srcport"}
	args := []string{"-r", path, "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	outb, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	okBackend := map[string]bool{}
	for _, b := range backends {
		okBackend[b] = true
	}
	rows := strings.Split(strings.TrimSpace(string(outb)), "\n")
	if len(rows) != 600 {
		t.Fatalf("tshark saw %d packets, want 600", len(rows))
	}
	for i, row := range rows {
		f := strings.Split(row, "|")
		get := func(name string) []string {
			for j, n := range fields {
				if n == name {
					return strings.Split(f[j], ",")
				}
			}
			return nil
		}
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
				t.Errorf("row %d: %s = %q, want %q (tshark row %q)", i, name, c[0], c[1], row)
			}
		}
		if !okBackend[dsts[0]] {
			t.Errorf("row %d: outer dst %s is not a backend", i, dsts[0])
		}
	}
}
