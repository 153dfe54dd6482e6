package pcap

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testPackets(n int) [][]byte {
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = bytes.Repeat([]byte{byte(i)}, 60+i%1400)
	}
	return pkts
}

func TestReaderStreamsWhatWriteFileWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.pcap")
	want := testPackets(3000)
	if err := WriteFile(path, want); err != nil {
		t.Fatal(err)
	}
	n, err := Count(path)
	if err != nil || n != len(want) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(want))
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range want {
		p, err := r.Next()
		if err != nil {
			t.Fatalf("Next %d: %v", i, err)
		}
		if !bytes.Equal(p, want[i]) {
			t.Fatalf("packet %d: got %d bytes, want %d", i, len(p), len(want[i]))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next after the last packet: %v, want io.EOF", err)
	}
	got, err := ReadFile(path)
	if err != nil || len(got) != len(want) || !bytes.Equal(got[2999], want[2999]) || !bytes.Equal(got[0], want[0]) {
		t.Fatalf("ReadFile: %d packets, %v", len(got), err)
	}
}

func TestCountRejectsBrokenFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pcap")
	if err := WriteFile(good, testPackets(10)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"cut-record", "record 9", b[:len(b)-5]},
		{"cut-header", "header", b[:10]},
		{"bad-magic", "bad magic", append([]byte{1, 2, 3, 4}, b[4:]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".pcap")
			os.WriteFile(p, tc.data, 0o644)
			n, err := Count(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Count = %d, %v; want an error about %q", n, err, tc.want)
			}
		})
	}
}
