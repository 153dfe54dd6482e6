//go:build linux

package main

import (
	"net"
	"os"
	"strings"
	"testing"
)

// TestBackendNetnsCheck runs `dsrctl backend check` in a backend namespace
// as it gets set up and broken again: it exits 1 and names each missing
// piece (VIP on lo, ARP sysctls, rp_filter, the decapsulator, a listener
// on the VIP's port), and exits 0 once nothing is missing.
func TestBackendNetnsCheck(t *testing.T) {
	topo := newDSRTopology(t, false)
	be := topo.be
	vip := tVIP.String()
	check := func(t *testing.T, mode string, wantCode int, wantMissing ...string) {
		t.Helper()
		code, out, errOut := be.dsrctl(t, "check", "--vip", vip, "--mode", mode, "--port", "80", "--dev", "be0")
		t.Logf("dsrctl backend check --mode %s: exit %d\n%s%s", mode, code, out, errOut)
		if code != wantCode {
			t.Errorf("exit code %d, want %d", code, wantCode)
		}
		var missing []string
		for _, l := range strings.Split(out, "\n") {
			if m, ok := strings.CutPrefix(l, "MISSING  "); ok {
				missing = append(missing, m)
			}
		}
		if len(missing) != len(wantMissing) {
			t.Errorf("missing %q, want %d items: %q", missing, len(wantMissing), wantMissing)
			return
		}
		for i, w := range wantMissing {
			if !strings.HasPrefix(missing[i], w) {
				t.Errorf("missing item %d: %q, want it to start %q", i, missing[i], w)
			}
		}
	}
	// A fresh namespace: nothing is in place (arp_announce defaults to
	// 0, arp_ignore to 0).
	check(t, "l2", 1, "VIP "+vip+"/32 on lo", "arp_ignore on be0", "arp_announce on be0", "tcp listener on "+vip+":80")

	var ln net.Listener
	if err := be.do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:80"); return err }); err != nil {
		t.Fatal(err)
	}
	defer func() { ln.Close() }()
	be.mustDsrctl(t, "setup", "--vip", vip, "--mode", "l2", "--dev", "be0")
	check(t, "l2", 0)

	t.Run("l2 without the VIP", func(t *testing.T) {
		be.ip(t, "addr", "del", vip+"/32", "dev", "lo")
		check(t, "l2", 1, "VIP "+vip+"/32 on lo")
		be.ip(t, "addr", "add", vip+"/32", "dev", "lo")
	})
	t.Run("l2 without the listener", func(t *testing.T) {
		ln.Close()
		check(t, "l2", 1, "tcp listener on "+vip+":80")
		if err := be.do(func() (err error) { ln, err = net.Listen("tcp4", vip+":80"); return err }); err != nil {
			t.Fatal(err)
		}
		check(t, "l2", 0) // bound to the VIP itself
	})

	t.Run("ipip", func(t *testing.T) {
		// l2's setup left no decapsulator and rp_filter as it was.
		if err := be.do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/conf/be0/rp_filter", []byte("1"), 0o644)
		}); err != nil {
			t.Fatal(err)
		}
		check(t, "ipip", 1, "rp_filter on be0", "decapsulator on be0 for "+vip+" ipip")
		be.mustDsrctl(t, "setup", "--vip", vip, "--mode", "ipip", "--dev", "be0")
		check(t, "ipip", 0)
		// The decapsulator gone (teardown), the VIP back on lo.
		be.mustDsrctl(t, "teardown", "--vip", vip, "--mode", "ipip", "--dev", "be0")
		be.ip(t, "addr", "replace", vip+"/32", "dev", "lo")
		check(t, "ipip", 1, "decapsulator on be0 for "+vip+" ipip")
		check(t, "gre", 1, "decapsulator on be0 for "+vip+" gre")
	})
}
