package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// replayOffload replays in through an l2 config (replayConfig) and returns
// the counters and the output frames.
func replayOffload(t *testing.T, in [][]byte) (control.Stats, [][]byte, string) {
	t.Helper()
	bin := dsrlbBin(t)
	dir := t.TempDir()
	be := "{ip: 192.0.2.21, weight: 1}"
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(replayConfig, "l2", "l2", be, "l2", "l2", be)), 0o644); err != nil {
		t.Fatal(err)
	}
	inPath, outPath := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	if err := pcap.WriteFile(inPath, in); err != nil {
		t.Fatal(err)
	}
	st := runReplay(t, bin, cfgPath, inPath, outPath)
	out, err := pcap.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	return st, out, outPath
}

// tsharkRows dissects path with checksum validation on and returns, per
// frame, the values of fields.
func tsharkRows(t *testing.T, path string, fields ...string) [][]string {
	t.Helper()
	args := []string{"-r", path, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
		"-T", "fields", "-E", "separator=|"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		rows = append(rows, strings.Split(l, "|"))
	}
	return rows
}

// TestReplayPartialChecksums: a capture taken on a host whose NIC offloads
// checksums holds TCP and UDP packets with only the pseudo-header sum in
// their checksum field (CHECKSUM_PARTIAL). Replay completes them: each
// output packet is the sender's packet with its complete checksum, byte
// for byte, and tshark validates every TCP and UDP checksum; packets with
// complete checksums pass unchanged.
func TestReplayPartialChecksums(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark is required (make deps installs it)")
	}
	var in, complete [][]byte
	partial := 0
	for i := range 40 {
		p := testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC, Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Dst: vip,
			SrcPort: uint16(20000 + i), DstPort: 80, DF: true, ID: uint16(i), Proto: 6,
			Payload: bytes.Repeat([]byte{byte(i)}, 100+31*i)}
		if i%2 == 1 {
			p.Proto, p.DstPort = 17, 5300
		}
		complete = append(complete, p.Build())
		p.PartialChecksum = i%4 < 3
		if p.PartialChecksum {
			partial++
		}
		in = append(in, p.Build())
	}
	st, out, outPath := replayOffload(t, in)
	if st.Totals.L4ChecksumsCompleted != uint64(partial) || st.Totals.TxPackets != uint64(len(in)) || st.Totals.Dropped != 0 {
		t.Errorf("l4_checksums_completed %d tx %d dropped %d, want %d, %d, 0",
			st.Totals.L4ChecksumsCompleted, st.Totals.TxPackets, st.Totals.Dropped, partial, len(in))
	}
	if len(out) != len(in) {
		t.Fatalf("%d packets out, want %d", len(out), len(in))
	}
	for i := range out {
		if !bytes.Equal(out[i][14:], complete[i][14:]) {
			t.Errorf("packet %d: IP packet is not the sender's complete one:\n got %x\nwant %x", i, out[i][14:], complete[i][14:])
		}
	}
	for i, r := range tsharkRows(t, outPath, "ip.proto", "tcp.checksum.status", "udp.checksum.status") {
		status := r[1]
		if r[0] == "17" {
			status = r[2]
		}
		if status != "1" { // 1: good
			t.Errorf("frame %d: tshark checksum status %q (row %v), want good", i+1, status, r)
		}
	}
}
