package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

var (
	bins      nsbed.Binaries
	skipWhy   string // set when the tests cannot run here
	buildFail error
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipWhy = "e2e tests need root (network namespaces, DPDK)"
		return m.Run()
	}
	nsbed.CloseOnSignal()
	if dir := os.Getenv("DSRLB_TESTBED_BIN"); dir != "" {
		bins, buildFail = nsbed.BinariesIn(dir)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "dsrlb-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	bins, buildFail = nsbed.BuildBinaries(dir)
	if buildFail == nil {
		fmt.Fprintf(os.Stderr, "e2e: built dsrlb, dsrctl, backendsrv in %v\n", time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// startL2 brings up the L2 DSR bed for t and tears it down when t ends.
func startL2(t *testing.T) *nsbed.L2 {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if buildFail != nil {
		t.Fatalf("binaries: %v", buildFail)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := nsbed.StartL2(ctx, nsbed.L2Options{Bins: bins, Bed: nsbed.Options{Logf: t.Logf, Keep: os.Getenv("DSRLB_TESTBED_KEEP") != ""}})
	if err != nil {
		t.Fatalf("start L2 testbed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dsrlb log (end):\n%s", l.Appliance.Proc.Tail(40))
		}
		if err := l.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	t.Logf("appliance ready in %v", l.Ready.Round(time.Millisecond))
	return l
}
