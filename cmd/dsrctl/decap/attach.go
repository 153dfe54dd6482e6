//go:build linux

package decap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Hook is where the decapsulator runs on an interface's ingress path. Either
// way the interface holds the program: no BPF filesystem is needed, the
// decapsulator outlives the dsrctl process that attached it, and it goes
// away with the interface (or its network namespace).
type Hook string

const (
	// HookAuto keeps the hook the interface already uses and otherwise
	// takes TCX where the kernel has it, tc where it does not.
	HookAuto Hook = "auto"
	// HookTCX attaches to TCX ingress with BPF_PROG_ATTACH (Linux 6.6 or
	// later), after any TCX program already there. Shown by
	// `bpftool net show dev IFACE`.
	HookTCX Hook = "tcx"
	// HookTC adds a cls_bpf filter in direct-action mode to the ingress
	// side of a clsact qdisc, creating the qdisc if there is none. Shown by
	// `tc filter show dev IFACE ingress`.
	HookTC Hook = "tc"
)

// ParseHook returns the hook named s ("" is HookAuto).
func ParseHook(s string) (Hook, error) {
	switch h := Hook(s); h {
	case "":
		return HookAuto, nil
	case HookAuto, HookTCX, HookTC:
		return h, nil
	}
	return "", fmt.Errorf("unknown hook %q (want auto, tcx or tc)", s)
}

// The tc filter of HookTC. The priority is high, so filters that other tools
// add (with small explicit priorities, or automatic ones counting down from
// 0xc000) run first, as TCX programs attached before ours do; tc never picks
// it by itself. They MUST NOT change: teardown and upgrades of older
// attachments find the filter by its program, but a new dsrctl adds its
// filter where an old one may still sit.
const (
	tcPriority = 0xfff0
	tcHandle   = 1
)

// ErrNoTCX says the kernel has no TCX hook (Linux before 6.6).
var ErrNoTCX = errors.New("this kernel has no TCX hook (it needs Linux 6.6 or later): use --hook tc, or --hook auto to choose by itself")

// Manager attaches, lists and removes the decapsulators of the calling
// thread's network namespace. Its methods serialise with every other dsrctl
// in the namespace through a lock on the namespace itself.
type Manager struct {
	// BPFFS is the BPF filesystem where dsrctl up to December 2026 pinned
	// TCX links ("" = DefaultBPFFS). The Manager pins nothing there; it
	// only finds and removes those older pins.
	BPFFS string
}

// AttachResult says what Attach changed.
type AttachResult struct {
	Hook     Hook   // where the decapsulator runs now
	ProgID   uint32 // kernel ID of the program it runs
	Attached bool   // a new attachment was made
	Upgraded bool   // the interface now runs a newer program
	Moved    string // the attachment it replaced: "tc ingress", "TCX ingress", "a pinned TCX link"
	Added    bool   // the VIP map gained the mode for this VIP
}

// DetachResult says what Detach changed.
type DetachResult struct {
	Removed  bool // the VIP map lost the mode for this VIP
	Detached bool // no VIP was left: the program and its maps are gone
}

// Check loads the decapsulator without attaching it, and for HookTCX checks
// that the kernel has TCX, so that a caller learns before it changes
// anything whether this kernel can run it. Its errors say what is missing.
func Check(hook Hook) error {
	coll, err := newCollection(nil)
	if err != nil {
		return err
	}
	coll.Close()
	if hook == HookTCX && !tcxSupported(1) { // lo is 1 in every namespace
		return ErrNoTCX
	}
	return nil
}

// ChangesFamily reports whether this kernel lets the decapsulator strip an
// envelope whose family differs from the packet inside it (IPv6 in IPv4,
// IPv4 in IPv6): bpf_skb_adjust_room takes BPF_F_ADJ_ROOM_DECAP_L3_IPV4 and
// _IPV6 from Linux 6.3 on and refuses them before. It runs the program,
// loaded but not attached, on an IPv6-in-IPv4 frame with BPF_PROG_TEST_RUN
// and looks at what comes out.
func ChangesFamily() (bool, error) {
	coll, err := newCollection(nil)
	if err != nil {
		return false, err
	}
	defer coll.Close()
	// A documentation address (RFC 3849), in this private map only.
	vip := netip.MustParseAddr("2001:db8::1")
	if err := putVIP(coll.Maps[VIPMapName], coll.Maps[VIP6MapName], vip, IPIP); err != nil {
		return false, fmt.Errorf("probe the kernel: %w", err)
	}
	// Ethernet to the all-zero MAC (BPF_PROG_TEST_RUN runs on lo, whose
	// MAC that is: the frame counts as addressed to this host), an IPv4
	// header with protocol 41 and a valid checksum, an IPv6 header to vip.
	frame := make([]byte, ethLen+ipv4Len+ipv6Len)
	binary.BigEndian.PutUint16(frame[ethTypeOff:], ethTypeIPv4)
	outer := frame[outerOff : outerOff+ipv4Len]
	outer[0] = 0x45
	binary.BigEndian.PutUint16(outer[2:], ipv4Len+ipv6Len)
	outer[8], outer[9] = 64, protoIPv6
	copy(outer[12:], []byte{192, 0, 2, 1})
	copy(outer[16:], []byte{192, 0, 2, 2})
	var sum uint32
	for i := 0; i < ipv4Len; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(outer[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(outer[10:], ^uint16(sum))
	inner := frame[outerOff+ipv4Len:]
	inner[0], inner[7] = 0x60, 64
	a := vip.As16()
	copy(inner[inner6DstOff:], a[:])

	out := make([]byte, len(frame)+64)
	if _, err := coll.Programs[ProgramName].Run(&ebpf.RunOptions{Data: frame, DataOut: out}); err != nil {
		return false, fmt.Errorf("probe the kernel: %w", err)
	}
	return binary.BigEndian.Uint16(out[ethTypeOff:]) == ethTypeIPv6 && out[outerOff]>>4 == 6, nil
}

// newCollection loads the decapsulator, with the maps in repl instead of new
// ones. Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, whose usual
// 64 KiB does not hold the maps; rlimit.RemoveMemlock lifts it there and
// does nothing on newer kernels.
func newCollection(repl map[string]*ebpf.Map) (*ebpf.Collection, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, loadError(err)
	}
	coll, err := ebpf.NewCollectionWithOptions(CollectionSpec(), ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return nil, loadError(err)
	}
	return coll, nil
}

// loadError explains why the kernel refused the program.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.Is(err, unix.ENOSYS) || errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("this kernel cannot run BPF programs (no bpf system call, CONFIG_BPF_SYSCALL): "+
			"it needs the ipip/ip_gre modules to decapsulate: %w", err)
	case errors.Is(err, unix.EPERM):
		// cilium/ebpf's text adds a hint about RLIMIT_MEMLOCK, which
		// newCollection has already lifted: leave it out.
		return fmt.Errorf("not permitted to load BPF programs (%w): run dsrctl as root; in a container it needs "+
			"CAP_SYS_ADMIN and CAP_NET_ADMIN in the host's user namespace (e.g. a privileged container)", unix.EPERM)
	case errors.As(err, &ve):
		return fmt.Errorf("the kernel's verifier refused the decapsulator (it needs Linux 5.2 or later): %w", err)
	}
	return fmt.Errorf("load the decapsulator: %w", err)
}

// tcxSupported reports whether the kernel has TCX, by querying the TCX
// ingress programs of interface ifindex.
func tcxSupported(ifindex int) bool {
	_, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	return err == nil
}

// lockNetns takes an exclusive flock on the calling thread's network
// namespace (its nsfs inode is the same for every process in it); unlock
// with the returned function.
func lockNetns() (func(), error) {
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock the network namespace: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock the network namespace: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}

// attached is one decapsulator found on an interface, with its kernel
// objects open.
type attached struct {
	Attachment
	prog   *ebpf.Program
	tag    string
	vips   *ebpf.Map
	vips6  *ebpf.Map // nil for a program older than IPv6 VIPs
	stats  *ebpf.Map
	filter *netlink.BpfFilter // HookTC: the filter that holds it
}

// close closes the program and maps (Close is nil-safe).
func (a *attached) close() {
	a.prog.Close()
	a.vips.Close()
	a.vips6.Close()
	a.stats.Close()
}

func closeAll(as []*attached) {
	for _, a := range as {
		a.close()
	}
}

// where names an attachment's hook for messages.
func (a *attached) where() string {
	switch {
	case a.Hook == HookTC:
		return "tc ingress"
	case a.LinkID != 0:
		return "a pinned TCX link"
	}
	return "TCX ingress"
}

// findAttached returns the decapsulators on the ingress of interface
// ifindex: TCX programs and tc filters whose program is ours (its name and
// its two maps). There is normally one; an interrupted move between hooks
// can leave two.
func findAttached(ifname string, ifindex int) ([]*attached, error) {
	var out []*attached
	fail := func(err error) ([]*attached, error) {
		closeAll(out)
		return nil, err
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		for _, p := range res.Programs {
			a, err := openAttached(ifname, ifindex, p.ID)
			if err != nil {
				return fail(err)
			}
			if a == nil {
				continue
			}
			a.Hook = HookTCX
			if id, ok := p.LinkID(); ok {
				a.LinkID = uint32(id)
			}
			out = append(out, a)
		}
	} else if !errors.Is(err, unix.EINVAL) && !errors.Is(err, ebpf.ErrNotSupported) {
		// EINVAL: a kernel without TCX.
		return fail(fmt.Errorf("query TCX ingress of %s: %w", ifname, err))
	}

	filters, err := netlink.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		// EINVAL, ENOENT: no ingress or clsact qdisc.
		return fail(fmt.Errorf("list tc ingress filters of %s: %w", ifname, err))
	}
	for _, f := range filters {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || bf.Id == 0 {
			continue
		}
		a, err := openAttached(ifname, ifindex, ebpf.ProgramID(bf.Id))
		if err != nil {
			return fail(err)
		}
		if a == nil {
			continue
		}
		a.Hook = HookTC
		a.filter = bf
		out = append(out, a)
	}
	return out, nil
}

// openAttached opens program id and its maps; nil if the program is not the
// decapsulator or is gone.
func openAttached(ifname string, ifindex int, id ebpf.ProgramID) (*attached, error) {
	prog, err := ebpf.NewProgramFromID(id)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open program %d on %s: %w", id, ifname, err)
	}
	a := &attached{prog: prog}
	a.Ifname, a.Ifindex, a.ProgID = ifname, ifindex, uint32(id)
	info, err := prog.Info()
	if err != nil {
		a.close()
		return nil, fmt.Errorf("program %d on %s: %w", id, ifname, err)
	}
	mapIDs, _ := info.MapIDs()
	if info.Name != ProgramName || len(mapIDs) == 0 {
		a.close()
		return nil, nil
	}
	a.tag = info.Tag
	for _, mid := range mapIDs {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			a.close()
			return nil, fmt.Errorf("open map %d of program %d on %s: %w", mid, id, ifname, err)
		}
		mi, err := m.Info()
		switch {
		case err == nil && mi.Name == VIPMapName && a.vips == nil:
			a.vips = m
		case err == nil && mi.Name == VIP6MapName && a.vips6 == nil:
			a.vips6 = m
		case err == nil && mi.Name == StatsMapName && a.stats == nil:
			a.stats = m
		default:
			m.Close()
		}
	}
	if a.vips == nil || a.stats == nil {
		a.close()
		return nil, nil
	}
	if a.VIPs, err = readVIPs(a.vips, a.vips6); err != nil {
		a.close()
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	if a.Counters, err = readCounters(a.stats); err != nil {
		a.close()
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	return a, nil
}

// readVIPs returns the VIPs of the IPv4 map and of the IPv6 map (nil: none).
func readVIPs(v4, v6 *ebpf.Map) (map[netip.Addr]Mode, error) {
	out := map[netip.Addr]Mode{}
	var k, v uint32
	it := v4.Iterate()
	for it.Next(&k, &v) {
		out[netip.AddrFrom4(keyVIP(k))] = Mode(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read VIP map: %w", err)
	}
	if v6 == nil {
		return out, nil
	}
	var k6 [16]byte
	it = v6.Iterate()
	for it.Next(&k6, &v) {
		out[netip.AddrFrom16(k6)] = Mode(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read IPv6 VIP map: %w", err)
	}
	return out, nil
}

// putVIP sets the modes of vip in the VIP map of its family.
func putVIP(v4, v6 *ebpf.Map, vip netip.Addr, mode Mode) error {
	if vip.Is4() {
		return v4.Put(vipKey(vip.As4()), uint32(mode))
	}
	return v6.Put(vip6Key(vip), uint32(mode))
}

// Attach makes sure interface ifname (index ifindex) decapsulates mode for
// vip on hook, attaching the decapsulator if it is not there. It is
// idempotent. An attachment the interface already has keeps its maps: a
// newer program takes over the VIPs and counters of the older one, and an
// attachment on another hook than the one asked for (or a TCX link pinned
// by an older dsrctl) is replaced by one on the asked hook, in that order,
// so that no packet meets an interface without a decapsulator.
func (m Manager) Attach(ifname string, ifindex int, vip netip.Addr, mode Mode, hook Hook) (AttachResult, error) {
	var res AttachResult
	if !vip.IsValid() || vip.Is4In6() || vip.Zone() != "" {
		return res, fmt.Errorf("vip %s: not an IPv4 or IPv6 VIP", vip)
	}
	if mode&^(IPIP|GRE) != 0 || mode == 0 {
		return res, fmt.Errorf("invalid decapsulation mode %d", mode)
	}
	if _, err := ParseHook(string(hook)); err != nil {
		return res, err
	}
	unlock, err := lockNetns()
	if err != nil {
		return res, err
	}
	defer unlock()

	existing, err := findAttached(ifname, ifindex)
	if err != nil {
		return res, err
	}
	defer closeAll(existing)
	tcx := tcxSupported(ifindex)
	target := chooseHook(hook, existing, tcx)
	if target == HookTCX && !tcx {
		return res, ErrNoTCX
	}
	res.Hook = target

	// keep is our attachment on the target hook, if any; every other one
	// is removed once the target runs the program. The new program uses
	// the maps of keep, or of another attachment: the VIPs and counters
	// carry over.
	var keep, base *attached
	for _, a := range existing {
		if a.Hook == target && a.LinkID == 0 {
			keep = a
			break
		}
	}
	base = keep
	if base == nil && len(existing) > 0 {
		base = existing[0]
	}
	var repl map[string]*ebpf.Map
	cur := map[netip.Addr]Mode{}
	if base != nil {
		repl = map[string]*ebpf.Map{VIPMapName: base.vips, StatsMapName: base.stats}
		if base.vips6 != nil {
			repl[VIP6MapName] = base.vips6
		}
		cur = base.VIPs
	}
	coll, err := newCollection(repl)
	if err != nil {
		return res, err
	}
	defer coll.Close()
	prog := coll.Programs[ProgramName]
	pinfo, err := prog.Info()
	if err != nil {
		return res, fmt.Errorf("decapsulator info: %w", err)
	}

	// The VIPs first, then the attachment, so the first packet already
	// matches. VIPs of another attachment with maps of its own (an
	// interrupted move) join the shared map before it goes.
	vips, vips6 := coll.Maps[VIPMapName], coll.Maps[VIP6MapName]
	want := map[netip.Addr]Mode{vip: mode}
	for _, a := range existing {
		if a == base {
			continue
		}
		for v, md := range a.VIPs {
			want[v] |= md
		}
	}
	for v, md := range want {
		if cur[v]&md == md {
			continue
		}
		if err := putVIP(vips, vips6, v, cur[v]|md); err != nil {
			return res, fmt.Errorf("add %s to the VIP map of %s: %w", v, ifname, err)
		}
		if v == vip {
			res.Added = true
		}
	}

	switch {
	case keep != nil && keep.tag == pinfo.Tag:
		res.ProgID = keep.ProgID
	case keep != nil && target == HookTC:
		// The same filter: the kernel swaps its program atomically.
		if err := attachTC(ifname, ifindex, prog, keep.filter); err != nil {
			return res, err
		}
		res.Upgraded = true
	default:
		if target == HookTC {
			err = attachTC(ifname, ifindex, prog, nil)
		} else {
			err = link.RawAttachProgram(link.RawAttachProgramOptions{
				Target: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress,
			})
			if err != nil {
				err = fmt.Errorf("attach to TCX ingress of %s: %w", ifname, err)
			}
		}
		if err != nil {
			return res, err
		}
		if keep != nil {
			res.Upgraded = true
			keep = nil // the older program goes below
		} else {
			res.Attached = true
		}
	}
	if res.ProgID == 0 {
		if id, ok := pinfo.ID(); ok {
			res.ProgID = uint32(id)
		}
	}
	for _, a := range existing {
		if a == keep {
			continue
		}
		if a.Hook != target || a.LinkID != 0 {
			res.Moved = a.where()
		}
		if err := m.detachOne(a); err != nil {
			return res, err
		}
	}
	return res, nil
}

// chooseHook returns the hook Attach uses: the one asked for, or for
// HookAuto the one the interface already uses, else TCX where the kernel
// has it, else tc.
func chooseHook(hook Hook, existing []*attached, tcx bool) Hook {
	if hook != HookAuto && hook != "" {
		return hook
	}
	if len(existing) > 0 {
		return existing[0].Hook
	}
	if tcx {
		return HookTCX
	}
	return HookTC
}

// attachTC adds the decapsulator's filter to the ingress of ifname, or swaps
// the program of the filter replace. It creates the clsact qdisc if the
// interface has no ingress qdisc.
func attachTC(ifname string, ifindex int, prog *ebpf.Program, replace *netlink.BpfFilter) error {
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("add a clsact qdisc to %s: the kernel has no clsact qdisc (CONFIG_NET_SCH_INGRESS): %w", ifname, err)
		}
		return fmt.Errorf("add a clsact qdisc to %s: %w", ifname, err)
	}
	attrs := netlink.FilterAttrs{
		LinkIndex: ifindex,
		Parent:    netlink.HANDLE_MIN_INGRESS,
		Handle:    tcHandle,
		Priority:  tcPriority,
		Protocol:  unix.ETH_P_ALL,
	}
	if replace != nil {
		attrs = replace.FilterAttrs
	}
	f := &netlink.BpfFilter{
		FilterAttrs:  attrs,
		Fd:           prog.FD(),
		Name:         ProgramName,
		DirectAction: true,
	}
	var err error
	if replace != nil {
		err = netlink.FilterReplace(f)
	} else {
		err = netlink.FilterAdd(f)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("add a tc ingress filter to %s: priority %d handle %d is taken by a filter that is not dsrctl's", ifname, tcPriority, tcHandle)
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("add a tc ingress filter to %s: the kernel has no cls_bpf classifier (CONFIG_NET_CLS_BPF): %w", ifname, err)
	}
	return fmt.Errorf("add a tc ingress filter to %s: %w", ifname, err)
}

// detachOne removes one attachment: a TCX program, a pinned TCX link (and
// its pins when they can be reached), or a tc filter (and the clsact qdisc
// when no filter is left on it). Gone already is not an error.
func (m Manager) detachOne(a *attached) error {
	switch {
	case a.Hook == HookTC:
		if err := netlink.FilterDel(a.filter); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove the tc ingress filter of %s: %w", a.Ifname, err)
		}
		return removeEmptyClsact(a.Ifname, a.Ifindex)
	case a.LinkID != 0:
		l, err := link.NewFromID(link.ID(a.LinkID))
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open TCX link %d of %s: %w", a.LinkID, a.Ifname, err)
		}
		if err == nil {
			derr := linkDetach(l)
			l.Close()
			if derr != nil {
				return fmt.Errorf("detach TCX link %d of %s: %w", a.LinkID, a.Ifname, derr)
			}
		}
		if s, err := OpenExisting(m.BPFFS); err == nil && s != nil {
			return s.removeLinkPins(a.LinkID)
		}
		return nil
	}
	err := link.RawDetachProgram(link.RawDetachProgramOptions{
		Target: a.Ifindex, Program: a.prog, Attach: ebpf.AttachTCXIngress,
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detach from TCX ingress of %s: %w", a.Ifname, err)
	}
	return nil
}

// linkDetach detaches a BPF link from its hook (BPF_LINK_DETACH) while pins
// may still hold it; cilium/ebpf offers only closing the last reference.
func linkDetach(l link.Link) error {
	fd, ok := l.(interface{ FD() int })
	if !ok {
		return fmt.Errorf("link has no file descriptor")
	}
	attr := struct{ linkFD uint32 }{uint32(fd.FD())}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_LINK_DETACH, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr)); errno != 0 {
		return errno
	}
	return nil
}

// removeEmptyClsact deletes the clsact qdisc of an interface when it holds
// no filter on either side. An empty clsact does nothing, and the tc hook
// creates it when it is missing, so dsrctl leaves no empty one behind
// whoever created it; an "ingress" qdisc is never touched.
func removeEmptyClsact(ifname string, ifindex int) error {
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	qs, err := netlink.QdiscList(dev)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", ifname, err)
	}
	for _, q := range qs {
		if _, ok := q.(*netlink.Clsact); !ok {
			continue
		}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := netlink.FilterList(dev, parent)
			if err != nil || len(fs) > 0 {
				return nil
			}
		}
		if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("remove the empty clsact qdisc of %s: %w", ifname, err)
		}
	}
	return nil
}

// Detach stops decapsulating mode for vip on interface ifname. When no VIP is
// left the decapsulator is removed from the interface (the program and maps
// go with it). Pins an older dsrctl left in the BPF filesystem for ifname are
// updated and removed likewise, even when the interface is gone. Detaching
// what is not attached is not an error.
func (m Manager) Detach(ifname string, vip netip.Addr, mode Mode) (DetachResult, error) {
	var res DetachResult
	unlock, err := lockNetns()
	if err != nil {
		return res, err
	}
	defer unlock()

	var existing []*attached
	if l, err := netlink.LinkByName(ifname); err == nil {
		if existing, err = findAttached(ifname, l.Attrs().Index); err != nil {
			return res, err
		}
		defer closeAll(existing)
	}
	empty := true
	done := map[ebpf.MapID]bool{}
	for _, a := range existing {
		info, err := a.vips.Info()
		if err != nil {
			return res, fmt.Errorf("VIP map of %s: %w", ifname, err)
		}
		id, _ := info.ID()
		if done[id] {
			continue
		}
		done[id] = true
		removed, left, err := removeVIP(a.vips, a.vips6, vip, mode)
		if err != nil {
			return res, fmt.Errorf("VIP map of %s: %w", ifname, err)
		}
		res.Removed = res.Removed || removed
		empty = empty && !left
	}
	if len(existing) > 0 && empty {
		for _, a := range existing {
			if err := m.detachOne(a); err != nil {
				return res, err
			}
		}
		res.Detached = true
	}

	// Pins of an older dsrctl: those of a live link were handled above
	// through the program; this removes the VIP from stale ones and the
	// pins of any that are now empty.
	s, err := OpenExisting(m.BPFFS)
	if err != nil {
		return res, err
	}
	if s != nil {
		r, err := s.Detach(ifname, vip, mode)
		if err != nil {
			return res, err
		}
		res.Removed = res.Removed || r.Removed
		res.Detached = res.Detached || r.Detached
	}
	return res, nil
}

// removeVIP clears mode for vip in the VIP maps (v6 nil: an older program
// without one). It reports whether it removed anything and whether any VIP
// of either family is left.
func removeVIP(v4, v6 *ebpf.Map, vip netip.Addr, mode Mode) (removed, left bool, err error) {
	var m *ebpf.Map
	var key any
	if vip.Is4() {
		m, key = v4, vipKey(vip.As4())
	} else {
		m, key = v6, vip6Key(vip)
	}
	if m != nil {
		var cur uint32
		err := m.Lookup(key, &cur)
		switch {
		case err == nil && Mode(cur)&mode != 0:
			if rest := cur &^ uint32(mode); rest == 0 {
				err = m.Delete(key)
			} else {
				err = m.Put(key, rest)
			}
			if err != nil {
				return false, true, fmt.Errorf("remove %s: %w", vip, err)
			}
			removed = true
		case err != nil && !errors.Is(err, ebpf.ErrKeyNotExist):
			return false, true, err
		}
	}
	for _, m := range []*ebpf.Map{v4, v6} {
		if m == nil {
			continue
		}
		err = m.NextKey(nil, make([]byte, m.KeySize()))
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		return removed, true, err
	}
	return removed, false, nil
}

// List returns the decapsulators of this network namespace: those on its
// interfaces, and pins an older dsrctl left for interfaces that are gone
// (stale), by interface name.
func (m Manager) List() ([]Attachment, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []Attachment
	for _, l := range links {
		as, err := findAttached(l.Attrs().Name, l.Attrs().Index)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			out = append(out, a.Attachment)
		}
		closeAll(as)
	}
	s, err := OpenExisting(m.BPFFS)
	if err != nil {
		return nil, err
	}
	if s != nil {
		pinned, err := s.List()
		if err != nil {
			return nil, err
		}
		for _, p := range pinned {
			i := -1
			for j := range out {
				if out[j].LinkID != 0 && out[j].LinkID == p.LinkID {
					i = j
				}
			}
			if i >= 0 {
				out[i].Dir = p.Dir
			} else if p.Stale() {
				out = append(out, p)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Ifname < out[j].Ifname })
	return out, nil
}
