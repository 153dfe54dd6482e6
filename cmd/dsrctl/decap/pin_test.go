//go:build linux

package decap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
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

// pinLegacy attaches the decapsulator to ifname as dsrctl did up to December
// 2026: a TCX link pinned, with the program and maps, in
// <bpffs>/dsrlb[/netns-<inode>]/<ifname>. It returns the pin directory.
func pinLegacy(bpffs, ifname string, ifindex int, vips map[netip.Addr]Mode) (string, error) {
	s, err := newStore(bpffs)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.Dir, ifname)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	spec := olderSpec()
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}})
	if err != nil {
		return "", err
	}
	defer coll.Close()
	for v, md := range vips {
		if err := coll.Maps[VIPMapName].Put(vipKey(v.As4()), uint32(md)); err != nil {
			return "", err
		}
	}
	prog := coll.Programs[ProgramName]
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return "", err
	}
	defer l.Close()
	if err := l.Pin(filepath.Join(dir, linkPin)); err != nil {
		return "", err
	}
	return dir, prog.Pin(filepath.Join(dir, progPin))
}

// TestManagerMovesPinnedLink: setup on an interface that an older dsrctl
// decapsulates with a pinned TCX link keeps its VIPs, attaches to TCX
// ingress without a link, and removes the link and its pins.
func TestManagerMovesPinnedLink(t *testing.T) {
	bpffs := tempBPFFS(t)
	vip1, vip2 := netip.MustParseAddr("10.251.0.10"), netip.MustParseAddr("10.251.0.11")
	inFreshNetns(t, func() error {
		idx, err := addVeth("dsrveth0")
		if err != nil {
			return err
		}
		dir, err := pinLegacy(bpffs, "dsrveth0", idx, map[netip.Addr]Mode{vip1: IPIP | GRE})
		if err != nil {
			return fmt.Errorf("pin like an older dsrctl: %w", err)
		}
		m := Manager{BPFFS: bpffs}
		list, err := m.List()
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].LinkID == 0 || list[0].Dir != dir || list[0].Hook != HookTCX || list[0].VIPs[vip1] != IPIP|GRE {
			return fmt.Errorf("got list %+v, want the pinned link in %s", list, dir)
		}
		if err := wantIngress(idx, hookState{TCX: 1, TCXLinks: 1}); err != nil {
			return err
		}

		got, err := m.Attach("dsrveth0", idx, vip2, IPIP, HookAuto)
		if err != nil {
			return err
		}
		got.ProgID = 0
		if want := (AttachResult{Hook: HookTCX, Attached: true, Moved: "a pinned TCX link", Added: true}); got != want {
			return fmt.Errorf("got %+v, want %+v", got, want)
		}
		if err := wantIngress(idx, hookState{TCX: 1}); err != nil {
			return err
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pins of the moved link still there: %v", err)
		}
		list, err = m.List()
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].LinkID != 0 || list[0].VIPs[vip1] != IPIP|GRE || list[0].VIPs[vip2] != IPIP {
			return fmt.Errorf("got list %+v, want one unpinned decapsulator with both VIPs", list)
		}
		return nil
	})
}

// TestManagerDetachesPinnedLink: teardown removes the last VIP of a pinned
// link, the link and its pins.
func TestManagerDetachesPinnedLink(t *testing.T) {
	bpffs := tempBPFFS(t)
	vip := netip.MustParseAddr("10.251.0.10")
	inFreshNetns(t, func() error {
		idx, err := addVeth("dsrveth0")
		if err != nil {
			return err
		}
		dir, err := pinLegacy(bpffs, "dsrveth0", idx, map[netip.Addr]Mode{vip: GRE})
		if err != nil {
			return err
		}
		m := Manager{BPFFS: bpffs}
		got, err := m.Detach("dsrveth0", vip, GRE)
		if err != nil {
			return err
		}
		if want := (DetachResult{Removed: true, Detached: true}); got != want {
			return fmt.Errorf("got %+v, want %+v", got, want)
		}
		if err := wantIngress(idx, hookState{}); err != nil {
			return err
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pins still there: %v", err)
		}
		return nil
	})
}

// TestManagerStalePins: pins of an interface that is gone show as stale and
// teardown removes them.
func TestManagerStalePins(t *testing.T) {
	bpffs := tempBPFFS(t)
	vip := netip.MustParseAddr("10.251.0.10")
	inFreshNetns(t, func() error {
		idx, err := addVeth("dsrveth0")
		if err != nil {
			return err
		}
		dir, err := pinLegacy(bpffs, "dsrveth0", idx, map[netip.Addr]Mode{vip: IPIP})
		if err != nil {
			return err
		}
		if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dsrveth0"}}); err != nil {
			return err
		}
		m := Manager{BPFFS: bpffs}
		list, err := m.List()
		if err != nil {
			return err
		}
		if len(list) != 1 || !list[0].Stale() || list[0].Dir != dir || list[0].VIPs[vip] != IPIP {
			return fmt.Errorf("got %+v, want one stale attachment", list)
		}
		got, err := m.Detach("dsrveth0", vip, IPIP)
		if err != nil {
			return err
		}
		if want := (DetachResult{Removed: true, Detached: true}); got != want {
			return fmt.Errorf("got %+v, want %+v", got, want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stale pins still there: %v", err)
		}
		return nil
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
		dir, err := pinLegacy(bpffs, "dsrveth0", idx, map[netip.Addr]Mode{netip.MustParseAddr("10.251.0.10"): IPIP})
		deadDir = filepath.Dir(dir)
		return err
	}) // the namespace dies with its thread
	inFreshNetns(t, func() error {
		// The kernel tears a namespace down asynchronously; poll
		// briefly until the old link has lost its interface.
		for i := 0; i < 200; i++ {
			removed, err := CollectGarbage(bpffs)
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
