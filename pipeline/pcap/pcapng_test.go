package pcap

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestNGWriterTshark: tshark reads what NGWriter writes: interfaces,
// timestamps, lengths, directions and comments.
func TestNGWriterTshark(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	var buf bytes.Buffer
	w, err := NewNGWriter(&buf, 128, "in", "out")
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 60)
	copy(frame, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x06}) // ARP, enough for tshark
	ts := time.Date(2026, 12, 3, 18, 0, 0, 123456789, time.UTC)
	if err := w.Write(0, ts, frame[:59], 1500, Inbound, "pair 1 in"); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(1, ts.Add(time.Microsecond), frame, 60, Outbound, ""); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "x.pcapng")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.interface_id", "-e", "frame.interface_name",
		"-e", "frame.time_epoch", "-e", "frame.cap_len", "-e", "frame.len", "-e", "frame.packet_flags_direction", "-e", "frame.comment").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	want := "0\tin\t1796320800.123456789\t59\t1500\t0x00000001\tpair 1 in\n" +
		"1\tout\t1796320800.123457789\t60\t60\t0x00000002\t\n"
	if got := string(out); got != want {
		t.Errorf("tshark read\n%s\nwant\n%s", got, want)
	}
}
