package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dsrlb/dsrlb/pipeline/pcap"
)

func TestSpaceQueues(t *testing.T) {
	dir := t.TempDir()
	got, err := spaceQueues([]string{"a", "b", "c"}, 3, []byte{1, 2, 3}, dir)
	if err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(dir, "spacer.pcap")
	if want := []string{"a", sp, sp, "b", sp, sp, "c"}; !slices.Equal(got, want) {
		t.Fatalf("queues %q, want %q", got, want)
	}
	pkts, err := pcap.ReadFile(sp)
	if err != nil || len(pkts) != 1 || !slices.Equal(pkts[0], []byte{1, 2, 3}) {
		t.Fatalf("spacer capture: %v %v, want the one frame", pkts, err)
	}
}

// TestBenchQueueStrideAlternate runs `dsrlb bench` with two workers on rx
// queues 0 and 2 of the replaying port, alternating both with each alone:
// both forward, and the phases are reported.
func TestBenchQueueStrideAlternate(t *testing.T) {
	bin := dsrlbBin(t)
	cfg := filepath.Join("..", "..", "testbed", "bench", "bench.yaml")
	capPath := filepath.Join(t.TempDir(), "mix.pcap")
	if out, err := exec.Command(bin, "gen", "--config", cfg, "--out", capPath, "--flows", "4096", "--sizes", "64").CombinedOutput(); err != nil {
		t.Fatalf("gen: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "bench", "--config", cfg, "--pcap", capPath, "--workers", "2", "--queue-stride", "2",
		"--alternate", "0.25", "--seconds", "1", "--warmup", "0.3", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	var res benchResult
	if err := json.Unmarshal(lines[len(lines)-1], &res); err != nil {
		t.Fatalf("result: %v\n%s", err, out)
	}
	if res.Capture.QueueStride != 2 || len(res.Capture.QueuePackets) != 2 || res.Capture.QueuePackets[0]+res.Capture.QueuePackets[1] != 4096 {
		t.Errorf("capture %+v: want 4096 packets over 2 workers' queues, stride 2", res.Capture)
	}
	if res.PortRxNoMbuf != 0 {
		t.Errorf("rx_nombuf %d", res.PortRxNoMbuf)
	}
	for w, r := range res.MppsPerWorker {
		if r <= 0 {
			t.Errorf("worker %d forwarded nothing (%v)", w, res.MppsPerWorker)
		}
	}
	for reason, n := range res.Drops {
		if n != 0 {
			t.Errorf("%d drops %s", n, reason)
		}
	}
	a := res.Alternate
	if a == nil {
		t.Fatal("no alternate result")
	}
	if len(a.AllMpps) != 2 || len(a.AloneMpps) != 2 || len(a.AloneMpps[0]) != 1 || len(a.AloneMpps[1]) != 1 || len(a.Ratios) != 1 {
		t.Fatalf("alternate %+v: want one cycle (both, worker 0, both, worker 1)", a)
	}
	for _, x := range append(append([]float64{a.Ratio}, a.AllMpps...), a.AloneMpps[0][0], a.AloneMpps[1][0]) {
		if x <= 0 {
			t.Errorf("alternate %+v: a phase forwarded nothing", a)
			break
		}
	}
}
