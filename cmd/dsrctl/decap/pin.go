//go:build linux

package decap

import (
	"bufio"
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

// Store manages the pinned decapsulators of the calling thread's network
// namespace. Its methods take an exclusive lock on the store, so concurrent
// dsrctl processes serialise.
type Store struct {
	// Dir holds one directory per interface: <bpffs>/dsrlb in the initial
	// network namespace, <bpffs>/dsrlb/netns-<inode> elsewhere.
	Dir string
	// root is <bpffs>/dsrlb, the lock.
	root string
}

// Open returns the store for the current network namespace under the BPF
// filesystem bpffs (DefaultBPFFS if empty), mounting a BPF filesystem there
// if none is mounted. Call it from the thread that is in the wanted network
// namespace.
func Open(bpffs string) (*Store, error) {
	if bpffs == "" {
		bpffs = DefaultBPFFS
	}
	if err := EnsureBPFFS(bpffs); err != nil {
		return nil, err
	}
	s, err := newStore(bpffs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	return s, nil
}

// OpenExisting is Open for readers: it returns nil, and mounts or creates
// nothing, when this network namespace has no store.
func OpenExisting(bpffs string) (*Store, error) {
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
	if _, err := os.Stat(s.Dir); errors.Is(err, os.ErrNotExist) {
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

// EnsureBPFFS makes sure dir is a mounted BPF filesystem, mounting one when
// it is not. It refuses to mount under /sys when running inside
// `ip netns exec`: that command gives the process a private /sys, and pins in
// a BPF filesystem mounted there vanish, and the decapsulator with them, when
// the process exits.
func EnsureBPFFS(dir string) error {
	if isBPFFS(dir) {
		return nil
	}
	if ns := ipNetnsExecName(); ns != "" && (dir == "/sys" || strings.HasPrefix(dir, "/sys/")) {
		return fmt.Errorf("%s is not a BPF filesystem and this process runs under `ip netns exec %s`, "+
			"whose private /sys would lose the pinned decapsulator when dsrctl exits: run "+
			"`nsenter --net=/run/netns/%s dsrctl ...` instead, or pass --bpffs DIR with a BPF filesystem mounted outside /sys",
			dir, ns, ns)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create BPF filesystem mount point: %w", err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount BPF filesystem on %s: %w", dir, err)
	}
	return nil
}

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// ipNetnsExecName returns the namespace name if this process runs under
// `ip netns exec NAME`, which mounts a sysfs with source NAME on /sys.
func ipNetnsExecName() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	return ipNetnsExecNameFrom(bufio.NewScanner(f))
}

func ipNetnsExecNameFrom(sc *bufio.Scanner) string {
	name := ""
	for sc.Scan() {
		// 48 45 0:39 / /sys rw,relatime - sysfs NAME rw
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[4] != "/sys" {
			continue
		}
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) || fields[sep+1] != "sysfs" {
			continue
		}
		name = "" // the last mount on /sys wins
		if src := fields[sep+2]; src != "sysfs" && src != "none" {
			if _, err := os.Stat(filepath.Join("/run/netns", src)); err == nil {
				name = src
			}
		}
	}
	return name
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

// AttachResult says what Attach changed.
type AttachResult struct {
	Dir      string // the interface's pin directory
	Attached bool   // a new TCX link was created
	Replaced bool   // a stale link (interface gone or recreated) was replaced
	Upgraded bool   // the link now runs a newer program
	Added    bool   // the VIP map gained the mode for this VIP
}

// Attach makes sure the decapsulator is attached to TCX ingress of the
// interface ifname (index ifindex) and strips mode for vip. It is idempotent.
func (s *Store) Attach(ifname string, ifindex int, vip netip.Addr, mode Mode) (AttachResult, error) {
	res := AttachResult{Dir: filepath.Join(s.Dir, ifname)}
	if !vip.Is4() {
		return res, fmt.Errorf("vip %s: only IPv4 VIPs can be decapsulated", vip)
	}
	if mode&^(IPIP|GRE) != 0 || mode == 0 {
		return res, fmt.Errorf("invalid decapsulation mode %d", mode)
	}
	unlock, err := s.lock()
	if err != nil {
		return res, err
	}
	defer unlock()

	// A link whose interface is gone or was recreated (other ifindex) is
	// stale: start afresh, so VIPs of a dead namespace do not leak into a
	// new one that reuses its inode.
	if l, err := link.LoadPinnedLink(filepath.Join(res.Dir, linkPin), nil); err == nil {
		idx, infoErr := tcxIfindex(l)
		l.Close()
		if infoErr != nil || idx != ifindex {
			if err := os.RemoveAll(res.Dir); err != nil {
				return res, fmt.Errorf("remove stale pins %s: %w", res.Dir, err)
			}
			res.Replaced = true
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("load pinned link: %w", err)
	}
	if err := os.MkdirAll(res.Dir, 0o700); err != nil {
		return res, fmt.Errorf("create %s: %w", res.Dir, err)
	}

	spec := CollectionSpec()
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: res.Dir},
	})
	if err != nil {
		return res, fmt.Errorf("load decapsulator: %w", err)
	}
	defer coll.Close()
	prog := coll.Programs[ProgramName]

	// The VIP first, then the link, so the first packet already matches.
	vips := coll.Maps[VIPMapName]
	key := vipKey(vip.As4())
	var cur uint32
	if err := vips.Lookup(key, &cur); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return res, fmt.Errorf("read VIP map: %w", err)
	}
	if Mode(cur)&mode != mode {
		if err := vips.Put(key, cur|uint32(mode)); err != nil {
			return res, fmt.Errorf("add %s to VIP map: %w", vip, err)
		}
		res.Added = true
	}

	linkPath := filepath.Join(res.Dir, linkPin)
	progPath := filepath.Join(res.Dir, progPin)
	l, err := link.LoadPinnedLink(linkPath, nil)
	switch {
	case err == nil:
		defer l.Close()
		same, err := sameProgram(l, prog)
		if err != nil {
			return res, err
		}
		if !same {
			if err := l.Update(prog); err != nil {
				return res, fmt.Errorf("upgrade program on %s: %w", ifname, err)
			}
			res.Upgraded = true
			if err := repin(prog, progPath); err != nil {
				return res, err
			}
		}
	case errors.Is(err, os.ErrNotExist):
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: ifindex,
			Program:   prog,
			Attach:    ebpf.AttachTCXIngress,
		})
		if err != nil {
			return res, fmt.Errorf("attach TCX ingress to %s: %w", ifname, err)
		}
		defer l.Close()
		if err := l.Pin(linkPath); err != nil {
			return res, fmt.Errorf("pin link: %w", err)
		}
		res.Attached = true
		if err := repin(prog, progPath); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("load pinned link: %w", err)
	}
	return res, nil
}

func repin(prog *ebpf.Program, path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpin old program: %w", err)
	}
	if err := prog.Pin(path); err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	return nil
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

// sameProgram reports whether the link runs an identical program (same tag).
func sameProgram(l link.Link, prog *ebpf.Program) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("link info: %w", err)
	}
	running, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return false, fmt.Errorf("open running program: %w", err)
	}
	defer running.Close()
	ri, err := running.Info()
	if err != nil {
		return false, err
	}
	ni, err := prog.Info()
	if err != nil {
		return false, err
	}
	return ri.Tag == ni.Tag, nil
}

// DetachResult says what Detach changed.
type DetachResult struct {
	Removed  bool // the VIP map lost the mode for this VIP
	Detached bool // the map became empty: link, program and maps are gone
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
	if vip.Is4() {
		key := vipKey(vip.As4())
		var cur uint32
		err := vips.Lookup(key, &cur)
		switch {
		case err == nil && Mode(cur)&mode != 0:
			if left := cur &^ uint32(mode); left == 0 {
				err = vips.Delete(key)
			} else {
				err = vips.Put(key, left)
			}
			if err != nil {
				return res, fmt.Errorf("remove %s from VIP map of %s: %w", vip, ifname, err)
			}
			res.Removed = true
		case err != nil && !errors.Is(err, ebpf.ErrKeyNotExist):
			return res, fmt.Errorf("read VIP map of %s: %w", ifname, err)
		}
	}
	var k uint32
	if err := vips.NextKey(nil, &k); !errors.Is(err, ebpf.ErrKeyNotExist) {
		return res, err // VIPs left (err == nil) or a real error
	}
	if err := removeDir(dir); err != nil {
		return res, err
	}
	res.Detached = true
	return res, nil
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

// Attachment describes the decapsulator pinned for one interface.
type Attachment struct {
	Ifname   string              // interface name, the directory name
	Dir      string              // pin directory
	Ifindex  int                 // interface the link is attached to; 0 if gone
	LinkID   uint32              // kernel ID of the TCX link
	ProgID   uint32              // kernel ID of the program the link runs
	VIPs     map[netip.Addr]Mode // VIP map contents
	Counters Counters            // packets decapsulated
}

// Stale reports whether the link no longer has an interface.
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

// List returns the decapsulators of this network namespace, by interface
// name.
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
	a := Attachment{Ifname: ifname, Dir: dir, VIPs: map[netip.Addr]Mode{}}
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
	var k, v uint32
	it := vips.Iterate()
	for it.Next(&k, &v) {
		a.VIPs[netip.AddrFrom4(keyVIP(k))] = Mode(v)
	}
	if err := it.Err(); err != nil {
		return a, fmt.Errorf("read VIP map of %s: %w", ifname, err)
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
