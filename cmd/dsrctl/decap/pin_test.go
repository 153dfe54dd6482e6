//go:build linux

package decap

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tempBPFFS mounts a private BPF filesystem for one test, so pins never touch
// the host's /sys/fs/bpf; unmounting it frees everything pinned there.
func tempBPFFS(t *testing.T) string {
	t.Helper()
	requireBPF(t)
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// inFreshNetns runs fn on a locked OS thread moved into a new, empty network
// namespace. The thread is never unlocked, so it dies with the goroutine and
// the namespace with it.
func inFreshNetns(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// addVeth creates a veth pair name/name+"p" (there is no dummy module here),
// sets both up and returns the index of name.
func addVeth(name string) (int, error) {
	la := netlink.LinkAttrs{Name: name}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: name + "p"}); err != nil {
		return 0, fmt.Errorf("add veth %s: %w", name, err)
	}
	for _, n := range []string{name + "p", name} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			return 0, err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return 0, err
		}
		if n == name {
			return l.Attrs().Index, nil
		}
	}
	return 0, nil
}

func tcxPrograms(ifindex int) (int, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return 0, err
	}
	return len(res.Programs), nil
}

func TestStoreAttachDetach(t *testing.T) {
	bpffs := tempBPFFS(t)
	vip1, vip2 := netip.MustParseAddr("10.251.0.10"), netip.MustParseAddr("10.251.0.11")
	inFreshNetns(t, func() error {
		idx, err := addVeth("dsrveth0")
		if err != nil {
			return err
		}
		s, err := Open(bpffs)
		if err != nil {
			return err
		}
		if !strings.Contains(s.Dir, "/dsrlb/netns-") {
			return fmt.Errorf("got store dir %s, want a netns-qualified one", s.Dir)
		}

		steps := []struct {
			desc string
			vip  netip.Addr
			mode Mode
			want AttachResult
		}{
			{"first vip attaches", vip1, IPIP, AttachResult{Attached: true, Added: true}},
			{"same again is a no-op", vip1, IPIP, AttachResult{}},
			{"second mode for same vip", vip1, GRE, AttachResult{Added: true}},
			{"second vip shares the program", vip2, IPIP, AttachResult{Added: true}},
		}
		for _, st := range steps {
			got, err := s.Attach("dsrveth0", idx, st.vip, st.mode)
			if err != nil {
				return fmt.Errorf("%s: %w", st.desc, err)
			}
			got.Dir = ""
			if got != st.want {
				return fmt.Errorf("%s: got %+v, want %+v", st.desc, got, st.want)
			}
		}
		if n, err := tcxPrograms(idx); err != nil || n != 1 {
			return fmt.Errorf("got %d TCX programs (err %v), want 1", n, err)
		}
		list, err := s.List()
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].Ifname != "dsrveth0" || list[0].Ifindex != idx ||
			list[0].VIPs[vip1] != IPIP|GRE || list[0].VIPs[vip2] != IPIP {
			return fmt.Errorf("got list %+v", list)
		}

		detach := []struct {
			desc string
			vip  netip.Addr
			mode Mode
			want DetachResult
		}{
			{"one mode of vip1", vip1, IPIP, DetachResult{Removed: true}},
			{"same again", vip1, IPIP, DetachResult{}},
			{"rest of vip1", vip1, GRE, DetachResult{Removed: true}},
			{"last vip detaches", vip2, IPIP, DetachResult{Removed: true, Detached: true}},
			{"nothing left", vip2, IPIP, DetachResult{}},
		}
		for _, st := range detach {
			got, err := s.Detach("dsrveth0", st.vip, st.mode)
			if err != nil {
				return fmt.Errorf("%s: %w", st.desc, err)
			}
			if got != st.want {
				return fmt.Errorf("%s: got %+v, want %+v", st.desc, got, st.want)
			}
		}
		if n, err := tcxPrograms(idx); err != nil || n != 0 {
			return fmt.Errorf("after detach got %d TCX programs (err %v), want 0", n, err)
		}
		if _, err := os.Stat(filepath.Join(s.Dir, "dsrveth0")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pin directory still there: %v", err)
		}
		return nil
	})
}

func TestStoreReplacesStaleLink(t *testing.T) {
	bpffs := tempBPFFS(t)
	vip := netip.MustParseAddr("10.251.0.10")
	inFreshNetns(t, func() error {
		idx, err := addVeth("dsrveth0")
		if err != nil {
			return err
		}
		s, err := Open(bpffs)
		if err != nil {
			return err
		}
		if _, err := s.Attach("dsrveth0", idx, vip, IPIP); err != nil {
			return err
		}
		// Recreate the interface: the pinned link loses its device.
		if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dsrveth0"}}); err != nil {
			return err
		}
		list, err := s.List()
		if err != nil {
			return err
		}
		if len(list) != 1 || !list[0].Stale() {
			return fmt.Errorf("got %+v, want one stale attachment", list)
		}
		idx, err = addVeth("dsrveth0")
		if err != nil {
			return err
		}
		res, err := s.Attach("dsrveth0", idx, vip, GRE)
		if err != nil {
			return err
		}
		if !res.Replaced || !res.Attached {
			return fmt.Errorf("got %+v, want a replaced, newly attached link", res)
		}
		list, err = s.List()
		if err != nil {
			return err
		}
		// The stale VIP entries went with the stale link.
		if len(list) != 1 || list[0].Ifindex != idx || len(list[0].VIPs) != 1 || list[0].VIPs[vip] != GRE {
			return fmt.Errorf("got %+v", list)
		}
		_, err = s.Detach("dsrveth0", vip, GRE)
		return err
	})
}

func TestCollectGarbage(t *testing.T) {
	bpffs := tempBPFFS(t)
	var deadDir string
	inFreshNetns(t, func() error {
		idx, err := addVeth("dsrveth0")
		if err != nil {
			return err
		}
		s, err := Open(bpffs)
		if err != nil {
			return err
		}
		deadDir = s.Dir
		_, err = s.Attach("dsrveth0", idx, netip.MustParseAddr("10.251.0.10"), IPIP)
		return err
	}) // the namespace dies with its thread
	inFreshNetns(t, func() error {
		s, err := Open(bpffs)
		if err != nil {
			return err
		}
		// The kernel tears a namespace down asynchronously; poll
		// briefly until the old link has lost its interface.
		for i := 0; i < 200; i++ {
			removed, err := s.CollectGarbage()
			if err != nil {
				return err
			}
			if len(removed) == 1 && removed[0] == deadDir {
				return nil
			}
			if len(removed) > 0 {
				return fmt.Errorf("removed %v, want only %s", removed, deadDir)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return fmt.Errorf("%s was never collected", deadDir)
	})
}

func TestIPNetnsExecDetection(t *testing.T) {
	dir := t.TempDir()
	// A sysfs on /sys whose source names no /run/netns entry is not
	// ip netns exec.
	tests := []struct {
		desc, mountinfo, want string
	}{
		{"host", "23 27 0:22 / /sys rw,relatime shared:7 - sysfs sysfs rw\n", ""},
		{"unknown source", "48 45 0:39 / /sys rw,relatime - sysfs nosuchns-" + filepath.Base(dir) + " rw\n", ""},
		{"not /sys", "48 45 0:39 / /mnt rw,relatime - sysfs x rw\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got := ipNetnsExecNameFrom(bufio.NewScanner(strings.NewReader(tc.mountinfo)))
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
