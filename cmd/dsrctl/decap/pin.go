//go:build linux

package decap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where a BPF filesystem is normally mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// Pin file names inside an interface directory.
const (
	linkPin = "link"
	progPin = "prog"
)

// Store holds the decapsulators that dsrctl up to December 2026 attached with
// a TCX link pinned in a BPF filesystem, for one network namespace. Nothing
// new is pinned there: Manager finds these by their interface, moves them to
// an attachment held by the interface on the next setup, and removes their
// pins; Store reads and removes pins of interfaces that are gone. Its
// methods take an exclusive lock on the store, so concurrent dsrctl
// processes serialise.
type Store struct {
	// Dir holds one directory per interface: <bpffs>/dsrlb in the initial
	// network namespace, <bpffs>/dsrlb/netns-<inode> elsewhere.
	Dir string
	// root is <bpffs>/dsrlb, the lock.
	root string
}

// OpenExisting returns the store of pins that dsrctl up to December 2026
// left for the current network namespace under the BPF filesystem bpffs
// (DefaultBPFFS if empty), or nil when there is none. It mounts and creates
// nothing. Call it from the thread that is in the wanted network namespace.
func OpenExisting(bpffs string) (*Store, error) {
	return existingStore(bpffs, true)
}

// existingStore returns the store under bpffs if that is a BPF filesystem
// holding the store's root, and with own the current namespace's directory
// too; nil otherwise.
func existingStore(bpffs string, own bool) (*Store, error) {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	if !isBPFFS(bpffs) {
		return nil, nil
	}
	s, err := newStore(bpffs)
	if err != nil {
		return nil, err
	}
	dir := s.root
	if own {
		dir = s.Dir
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return s, nil
}

func newStore(bpffs string) (*Store, error) {
	root := filepath.Join(bpffs, "dsrlb")
	sub, err := netnsSubdir()
	if err != nil {
		return nil, err
	}
	return &Store{Dir: filepath.Join(root, sub), root: root}, nil
}

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// netnsSubdir returns "" in the initial network namespace and
// "netns-<inode>" in any other one. The initial namespace is the one of
// kthreadd (pid 2); if that cannot be read, every namespace is qualified.
func netnsSubdir() (string, error) {
	var self unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return "", fmt.Errorf("identify network namespace: %w", err)
	}
	if comm, err := os.ReadFile("/proc/2/comm"); err == nil && strings.TrimSpace(string(comm)) == "kthreadd" {
		var init unix.Stat_t
		if unix.Stat("/proc/2/ns/net", &init) == nil && init.Ino == self.Ino && init.Dev == self.Dev {
			return "", nil
		}
	}
	return "netns-" + strconv.FormatUint(self.Ino, 10), nil
}

// lock takes an exclusive flock on the store root; unlock with the returned
// function.
func (s *Store) lock() (func(), error) {
	fd, err := unix.Open(s.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", s.root, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", s.root, err)
	}
	return func() { unix.Close(fd) }, nil
}

// tcxIfindex returns the interface a TCX link is attached to, 0 if its
// interface is gone.
func tcxIfindex(l link.Link) (int, error) {
	info, err := l.Info()
	if err != nil {
		return 0, err
	}
	tcx := info.TCX()
	if tcx == nil {
		return 0, fmt.Errorf("pinned link is not a TCX link")
	}
	return int(tcx.Ifindex), nil
}

// Detach stops stripping mode for vip on ifname. When no VIP is left the
// link is detached and every pin of the interface removed. Detaching what is
// not attached is not an error.
func (s *Store) Detach(ifname string, vip netip.Addr, mode Mode) (DetachResult, error) {
	var res DetachResult
	unlock, err := s.lock()
	if err != nil {
		return res, err
	}
	defer unlock()

	dir := filepath.Join(s.Dir, ifname)
	vips, err := ebpf.LoadPinnedMap(filepath.Join(dir, VIPMapName), nil)
	if errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("load VIP map of %s: %w", ifname, err)
	}
	defer vips.Close()
	removed, left, err := removeVIP(vips, nil, vip, mode)
	res.Removed = removed
	if err != nil || left {
		return res, err
	}
	if err := removeDir(dir); err != nil {
		return res, err
	}
	res.Detached = true
	return res, nil
}

// removeLinkPins removes the interface directory whose pinned link is
// linkID, if there is one.
func (s *Store) removeLinkPins(linkID uint32) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", s.Dir, err)
	}
	for _, e := range entries {
		dir := filepath.Join(s.Dir, e.Name())
		l, err := link.LoadPinnedLink(filepath.Join(dir, linkPin), nil)
		if err != nil {
			continue
		}
		info, err := l.Info()
		l.Close()
		if err == nil && uint32(info.ID) == linkID {
			return removeDir(dir)
		}
	}
	return nil
}

// removeDir detaches the pinned link of an interface directory and removes
// its pins. Closing the last reference to a TCX link detaches it.
func removeDir(dir string) error {
	if l, err := link.LoadPinnedLink(filepath.Join(dir, linkPin), nil); err == nil {
		uerr := l.Unpin()
		l.Close()
		if uerr != nil {
			return fmt.Errorf("unpin link: %w", uerr)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove pins %s: %w", dir, err)
	}
	return nil
}

// Attachment describes one decapsulator.
type Attachment struct {
	Ifname   string              // interface name
	Ifindex  int                 // interface index; 0 if gone (stale pins)
	Hook     Hook                // HookTCX or HookTC
	LinkID   uint32              // kernel ID of a TCX link an older dsrctl pinned; 0 otherwise
	Dir      string              // that link's pin directory, if it can be reached
	ProgID   uint32              // kernel ID of the program
	VIPs     map[netip.Addr]Mode // VIP map contents
	Counters Counters            // packets decapsulated
}

// Stale reports whether the attachment no longer has an interface: pins an
// older dsrctl left for an interface that is gone.
func (a Attachment) Stale() bool { return a.Ifindex == 0 }

// SortedVIPs returns the VIPs in address order.
func (a Attachment) SortedVIPs() []netip.Addr {
	out := make([]netip.Addr, 0, len(a.VIPs))
	for v := range a.VIPs {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// List returns the decapsulators pinned for this network namespace, by
// interface name.
func (s *Store) List() ([]Attachment, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", s.Dir, err)
	}
	var out []Attachment
	for _, e := range entries {
		dir := filepath.Join(s.Dir, e.Name())
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, VIPMapName)); err != nil {
			continue // another namespace's directory
		}
		a, err := readAttachment(e.Name(), dir)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func readAttachment(ifname, dir string) (Attachment, error) {
	a := Attachment{Ifname: ifname, Dir: dir, Hook: HookTCX}
	if l, err := link.LoadPinnedLink(filepath.Join(dir, linkPin), nil); err == nil {
		if info, err := l.Info(); err == nil {
			a.LinkID = uint32(info.ID)
			a.ProgID = uint32(info.Program)
			if tcx := info.TCX(); tcx != nil {
				a.Ifindex = int(tcx.Ifindex)
			}
		}
		l.Close()
	}
	vips, err := ebpf.LoadPinnedMap(filepath.Join(dir, VIPMapName), nil)
	if err != nil {
		return a, fmt.Errorf("load VIP map of %s: %w", ifname, err)
	}
	defer vips.Close()
	if a.VIPs, err = readVIPs(vips, nil); err != nil {
		return a, fmt.Errorf("%s: %w", ifname, err)
	}
	stats, err := ebpf.LoadPinnedMap(filepath.Join(dir, StatsMapName), nil)
	if err != nil {
		return a, fmt.Errorf("load stats map of %s: %w", ifname, err)
	}
	defer stats.Close()
	if a.Counters, err = readCounters(stats); err != nil {
		return a, err
	}
	return a, nil
}

// CollectGarbage frees the pins an older dsrctl left under bpffs
// (DefaultBPFFS if empty) for network namespaces that are gone. It mounts
// and creates nothing, and returns the directories removed.
func CollectGarbage(bpffs string) ([]string, error) {
	s, err := existingStore(bpffs, false)
	if err != nil || s == nil {
		return nil, err
	}
	return s.CollectGarbage()
}

// CollectGarbage removes the pins of other network namespaces whose links
// all lost their interface (the namespace is gone), freeing their programs
// and maps. It returns the directories removed.
func (s *Store) CollectGarbage() ([]string, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		nsDir := filepath.Join(s.root, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "netns-") || nsDir == s.Dir {
			continue
		}
		ifaces, err := os.ReadDir(nsDir)
		if err != nil {
			continue
		}
		dead := true
		for _, ifc := range ifaces {
			l, err := link.LoadPinnedLink(filepath.Join(nsDir, ifc.Name(), linkPin), nil)
			if err != nil {
				continue // no link: nothing attached
			}
			idx, err := tcxIfindex(l)
			l.Close()
			if err != nil || idx != 0 {
				dead = false
				break
			}
		}
		if !dead {
			continue
		}
		for _, ifc := range ifaces {
			if err := removeDir(filepath.Join(nsDir, ifc.Name())); err != nil {
				return removed, err
			}
		}
		if err := os.Remove(nsDir); err != nil {
			return removed, err
		}
		removed = append(removed, nsDir)
	}
	return removed, nil
}
