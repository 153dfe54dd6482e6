package main

import (
	"bytes"
	"fmt"
	"net/netip"
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
	needTshark(t)
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

// TestReplaySuperframes: a capture taken on a host with TSO holds the TCP
// super-frames its kernel sent, whole (64 KB, partial checksum). Replay
// reads each into one buffer and the worker cuts it into MTU-sized
// segments: every byte of the payload comes out once, in order, each
// segment with a checksum tshark validates.
func TestReplaySuperframes(t *testing.T) {
	needTshark(t)
	payload := make([]byte, 44*1448)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	p := testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC, Src: netip.AddrFrom4([4]byte{198, 51, 100, 7}), Dst: vip,
		SrcPort: 40000, DstPort: 80, DF: true, Proto: 6, Seq: 5000, TCPFlags: 0x18, Payload: payload, PartialChecksum: true}
	in := [][]byte{p.Build()}
	if len(in[0]) < 60000 {
		t.Fatalf("super-frame of %d bytes", len(in[0]))
	}
	st, out, outPath := replayOffload(t, in)
	if st.Totals.GSOSegmented != 1 || st.Totals.Dropped != 0 || st.Totals.TxPackets != st.Totals.GSOSegments || len(out) == 0 ||
		uint64(len(out)) != st.Totals.GSOSegments {
		t.Fatalf("segmented %d into %d segments, tx %d, dropped %d (%v), %d frames out",
			st.Totals.GSOSegmented, st.Totals.GSOSegments, st.Totals.TxPackets, st.Totals.Dropped, st.Drops, len(out))
	}
	var got []byte
	for i, o := range out {
		ip := o[14:]
		if len(ip) > 1500 {
			t.Errorf("segment %d: %d bytes, longer than the MTU", i, len(ip))
		}
		ihl := int(ip[0]&0xf) * 4
		tcp := ip[ihl:]
		seq := uint32(tcp[4])<<24 | uint32(tcp[5])<<16 | uint32(tcp[6])<<8 | uint32(tcp[7])
		if want := 5000 + uint32(len(got)); seq != want {
			t.Errorf("segment %d: seq %d, want %d", i, seq, want)
		}
		got = append(got, tcp[int(tcp[12]>>4)*4:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("segments carry %d bytes, not the super-frame's %d", len(got), len(payload))
	}
	for i, r := range tsharkRows(t, outPath, "tcp.checksum.status", "ip.checksum.status") {
		if r["tcp.checksum.status"] != "1" || r["ip.checksum.status"] != "1" {
			t.Errorf("frame %d: tshark checksum status %v, want good", i+1, r)
		}
	}
}
