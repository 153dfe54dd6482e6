package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
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

// needBins skips t where the e2e tests cannot run (not root) and fails it
// when the binaries could not be built or found.
func needBins(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	if buildFail != nil {
		t.Fatalf("binaries: %v", buildFail)
	}
}

// bedOptions are the Bed options of t's bed: it logs to t and is kept after
// the test when DSRLB_TESTBED_KEEP is set.
func bedOptions(t *testing.T) nsbed.Options {
	return nsbed.Options{Logf: t.Logf, Keep: os.Getenv("DSRLB_TESTBED_KEEP") != ""}
}

// closeAtEnd tears a single-appliance bed down (close) when t ends, after
// logging the end of the appliance's dsrlb log if t failed, and logs how
// long the appliance took to become ready.
func closeAtEnd(t *testing.T, appl *nsbed.Appliance, ready time.Duration, close func() error) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dsrlb log (end):\n%s", appl.Proc.Tail(40))
		}
		if err := close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	t.Logf("appliance ready in %v", ready.Round(time.Millisecond))
}

// startL2 brings up the L2 DSR bed for t with o (Bins and Bed filled in)
// and tears it down when t ends.
func startL2(t *testing.T, o nsbed.L2Options) *nsbed.L2 {
	t.Helper()
	needBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	o.Bins, o.Bed = bins, bedOptions(t)
	l, err := nsbed.StartL2(ctx, o)
	if err != nil {
		t.Fatalf("start L2 testbed: %v", err)
	}
	closeAtEnd(t, l.Appliance, l.Ready, l.Close)
	return l
}

// mustStats reads appl's stats; an error ends t.
func mustStats(ctx context.Context, t *testing.T, appl *nsbed.Appliance) *nsbed.Stats {
	t.Helper()
	st, err := appl.Stats(ctx)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// checkCurlMany checks got, the tally of n requests on separate connections
// (nsbed.CurlMany), after logging it under label: every request answered,
// each on a connection and from a client address of its own, and every
// backend of bes among those answering.
func checkCurlMany(t *testing.T, label string, got *nsbed.HTTPTally, n int, bes nsbed.Backends) {
	t.Helper()
	t.Logf("%s: %d requests, %d connections: %s", label, got.Requests, got.Conns, got.Spread())
	if got.ErrorCount != 0 {
		t.Errorf("got %d failed requests, want 0: %s", got.ErrorCount, strings.Join(got.Errors, "; "))
	}
	if got.OK != n || got.Conns != n || len(got.ClientAddrs) != n {
		t.Errorf("got %d answers on %d connections from %d client addresses, want %d each", got.OK, got.Conns, len(got.ClientAddrs), n)
	}
	if miss := bes.Missing(got.PerBackend); len(miss) != 0 {
		t.Errorf("backends %v answered nothing (spread %s)", miss, got.Spread())
	}
}

// checkUDPFlows checks got, the tally of flows UDP flows of per datagrams
// each to addr (nsbed.UDPFlows), after logging it under label: every
// datagram answered, only from addr, each flow by one backend, and every
// backend of bes among those answering.
func checkUDPFlows(t *testing.T, label string, got *nsbed.UDPTally, addr string, flows, per int, bes nsbed.Backends) {
	t.Helper()
	t.Logf("%s: %d flows, %d/%d answered: %s; sources %v", label, got.Flows, got.Received, got.Sent, got.Spread(), got.Sources)
	if got.Received != flows*per || len(got.Errors) != 0 {
		t.Errorf("got %d of %d answers, errors %v", got.Received, flows*per, got.Errors)
	}
	if len(got.Sources) != 1 || got.Sources[addr] == 0 {
		t.Errorf("answers came from %v, want only %s", got.Sources, addr)
	}
	if got.Split != 0 {
		t.Errorf("%d flows were answered by more than one backend", got.Split)
	}
	if miss := bes.Missing(got.PerBackend); len(miss) != 0 {
		t.Errorf("backends %v answered no flow (spread %s)", miss, got.Spread())
	}
}

// checkDSREvidence finishes ev and, after logging what it saw under label,
// checks that no answer crossed the appliance's NIC or came from its MAC,
// that the client resolved the VIP to the appliance, and that every backend
// of bes answered the client.
func checkDSREvidence(ctx context.Context, t *testing.T, label string, ev *nsbed.Evidence, bes nsbed.Backends) {
	t.Helper()
	rep, err := ev.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: appliance NIC: %d packets from the VIP; client: %d SYN-ACK/UDP answers from the VIP by backend MAC %v",
		label, rep.ApplianceFromVIP, rep.ClientFromVIP, rep.ByBackend)
	for _, p := range rep.Problems() {
		t.Error(p)
	}
	if miss := bes.Missing(rep.ByBackend); len(miss) != 0 {
		t.Errorf("no answer from backends %v reached the client", miss)
	}
}
