package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// replayOffload replays in through an l2 config (replayConfig) and returns
// the counters and the output frames.
func replayOffload(t *testing.T, in [][]byte) (v1.Stats, [][]byte, string) {
	t.Helper()
	be := "{ip: 192.0.2.21, weight: 1}"
	r := runReplay(t, fmt.Sprintf(replayConfig, "l2", "l2", be, "l2", "l2", be), in)
	return r.Stats, r.Out, r.OutPath
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
		status := r["tcp.checksum.status"]
		if r["ip.proto"] == "17" {
			status = r["udp.checksum.status"]
		}
		if status != "1" { // 1: good
			t.Errorf("frame %d: tshark checksum status %q (row %v), want good", i+1, status, r)
		}
	}
}
