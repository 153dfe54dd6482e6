//go:build linux

package decap

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inFreshNetns runs fn on a locked OS thread moved into a new, empty network
// namespace. The thread is never unlocked, so it dies with the goroutine and
// the namespace with it, taking every attachment along.
func inFreshNetns(t *testing.T, fn func() error) {
	t.Helper()
	requireBPF(t)
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

// hookState is what the kernel shows on an interface's ingress.
type hookState struct {
	TCX       int  // TCX ingress programs
	TCXLinks  int  // of which attached through a link
	TCFilters int  // tc ingress filters named dsr_decap
	Clsact    bool // a clsact qdisc
}

func ingressState(ifindex int) (hookState, error) {
	var st hookState
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return st, err
	}
	st.TCX = len(res.Programs)
	for _, p := range res.Programs {
		if _, ok := p.LinkID(); ok {
			st.TCXLinks++
		}
	}
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	qs, err := netlink.QdiscList(dev)
	if err != nil {
		return st, err
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			st.Clsact = true
		}
	}
	if st.Clsact {
		fs, err := netlink.FilterList(dev, netlink.HANDLE_MIN_INGRESS)
		if err != nil {
			return st, err
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == ProgramName {
				st.TCFilters++
			}
		}
	}
	return st, nil
}

func wantIngress(ifindex int, want hookState) error {
	got, err := ingressState(ifindex)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("got ingress %+v, want %+v", got, want)
	}
	return nil
}

// onHook is the ingress state of one decapsulator on hook.
func onHook(h Hook) hookState {
	if h == HookTC {
		return hookState{TCFilters: 1, Clsact: true}
	}
	return hookState{TCX: 1}
}

func TestManagerAttachDetach(t *testing.T) {
	vip1, vip2 := netip.MustParseAddr("10.251.0.10"), netip.MustParseAddr("10.251.0.11")
	vip6 := netip.MustParseAddr("2001:db8:100::10")
	for _, hook := range []Hook{HookTCX, HookTC} {
		t.Run(string(hook), func(t *testing.T) {
			inFreshNetns(t, func() error {
				idx, err := addVeth("dsrveth0")
				if err != nil {
					return err
				}
				var m Manager
				steps := []struct {
					desc string
					vip  netip.Addr
					mode Mode
					hook Hook
					want AttachResult
				}{
					{"first vip attaches", vip1, IPIP, hook, AttachResult{Hook: hook, Attached: true, Added: true}},
					{"same again is a no-op", vip1, IPIP, hook, AttachResult{Hook: hook}},
					{"auto keeps the hook", vip1, GRE, HookAuto, AttachResult{Hook: hook, Added: true}},
					{"second vip shares the program", vip2, IPIP, hook, AttachResult{Hook: hook, Added: true}},
					{"an IPv6 vip shares the program", vip6, GRE, hook, AttachResult{Hook: hook, Added: true}},
					{"the IPv6 vip again is a no-op", vip6, GRE, hook, AttachResult{Hook: hook}},
				}
				var prog uint32
				for _, st := range steps {
					got, err := m.Attach("dsrveth0", idx, st.vip, st.mode, st.hook)
					if err != nil {
						return fmt.Errorf("%s: %w", st.desc, err)
					}
					if prog == 0 {
						prog = got.ProgID
					}
					if got.ProgID != prog || prog == 0 {
						return fmt.Errorf("%s: got program %d, want %d throughout", st.desc, got.ProgID, prog)
					}
					got.ProgID = 0
					if got != st.want {
						return fmt.Errorf("%s: got %+v, want %+v", st.desc, got, st.want)
					}
				}
				if err := wantIngress(idx, onHook(hook)); err != nil {
					return err
				}
				list, err := m.List()
				if err != nil {
					return err
				}
				if len(list) != 1 || list[0].Ifname != "dsrveth0" || list[0].Ifindex != idx || list[0].Hook != hook ||
					list[0].ProgID != prog || list[0].LinkID != 0 || list[0].Stale() ||
					list[0].VIPs[vip1] != IPIP|GRE || list[0].VIPs[vip2] != IPIP || list[0].VIPs[vip6] != GRE || len(list[0].VIPs) != 3 {
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
					{"last IPv4 vip, an IPv6 one is left", vip2, IPIP, DetachResult{Removed: true}},
					{"IPv6 vip in another mode", vip6, IPIP, DetachResult{}},
					{"last vip detaches", vip6, GRE, DetachResult{Removed: true, Detached: true}},
					{"nothing left", vip6, GRE, DetachResult{}},
				}
				for _, st := range detach {
					got, err := m.Detach("dsrveth0", st.vip, st.mode)
					if err != nil {
						return fmt.Errorf("%s: %w", st.desc, err)
					}
					if got != st.want {
						return fmt.Errorf("%s: got %+v, want %+v", st.desc, got, st.want)
					}
				}
				// The clsact qdisc that attach created goes too.
				if err := wantIngress(idx, hookState{}); err != nil {
					return fmt.Errorf("after detach: %w", err)
				}
				if list, err := m.List(); err != nil || len(list) != 0 {
					return fmt.Errorf("after detach got list %+v (err %v), want none", list, err)
				}
				return nil
			})
		})
	}
}

// TestManagerMovesHooks: asking for another hook moves the decapsulator with
// its VIPs and counters, and leaves nothing on the old hook.
func TestManagerMovesHooks(t *testing.T) {
	vip1, vip2 := netip.MustParseAddr("10.251.0.10"), netip.MustParseAddr("10.251.0.11")
	inFreshNetns(t, func() error {
		idx, err := addVeth("dsrveth0")
		if err != nil {
			return err
		}
		var m Manager
		steps := []struct {
			desc string
			vip  netip.Addr
			hook Hook
			want AttachResult
		}{
			{"tc first", vip1, HookTC, AttachResult{Hook: HookTC, Attached: true, Added: true}},
			{"to tcx", vip2, HookTCX, AttachResult{Hook: HookTCX, Attached: true, Moved: "tc ingress", Added: true}},
			{"auto stays on tcx", vip2, HookAuto, AttachResult{Hook: HookTCX}},
			{"back to tc", vip1, HookTC, AttachResult{Hook: HookTC, Attached: true, Moved: "TCX ingress"}},
		}
		for _, st := range steps {
			got, err := m.Attach("dsrveth0", idx, st.vip, IPIP, st.hook)
			if err != nil {
				return fmt.Errorf("%s: %w", st.desc, err)
			}
			got.ProgID = 0
			if got != st.want {
				return fmt.Errorf("%s: got %+v, want %+v", st.desc, got, st.want)
			}
			if err := wantIngress(idx, onHook(st.want.Hook)); err != nil {
				return fmt.Errorf("%s: %w", st.desc, err)
			}
			list, err := m.List()
			if err != nil {
				return err
			}
			if len(list) != 1 || list[0].VIPs[vip1] != IPIP || (st.vip == vip2 && list[0].VIPs[vip2] != IPIP) {
				return fmt.Errorf("%s: got list %+v, want one decapsulator with the VIPs so far", st.desc, list)
			}
		}
		for _, vip := range []netip.Addr{vip1, vip2} {
			if _, err := m.Detach("dsrveth0", vip, IPIP); err != nil {
				return err
			}
		}
		return wantIngress(idx, hookState{})
	})
}

// olderSpec is the decapsulator as dsrctl had it before IPv6 VIPs: the same
// names, the IPv4 VIP map and the stats map, no dsr_vips6. Its program only
// references the maps (it decapsulates nothing); what matters is that a
// newer dsrctl recognises it and takes over its maps.
func olderSpec() *ebpf.CollectionSpec {
	spec := CollectionSpec()
	delete(spec.Maps, VIP6MapName)
	spec.Programs[ProgramName].Instructions = asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference(VIPMapName),
		asm.LoadMapPtr(asm.R1, 0).WithReference(StatsMapName),
		asm.Mov.Imm(asm.R0, TCXNext),
		asm.Return(),
	}
	return spec
}

// olderProgram attaches, on hook, a program that differs from the current
// one (an older dsrctl's, without IPv6 VIPs) with VIP map entries vips, as a
// standalone attachment with maps of its own.
func olderProgram(ifindex int, hook Hook, vips map[netip.Addr]Mode) error {
	coll, err := ebpf.NewCollection(olderSpec())
	if err != nil {
		return err
	}
	defer coll.Close()
	for v, md := range vips {
		if err := coll.Maps[VIPMapName].Put(vipKey(v.As4()), uint32(md)); err != nil {
			return err
		}
	}
	prog := coll.Programs[ProgramName]
	if hook == HookTC {
		return attachTC("dsrveth0", ifindex, prog, nil)
	}
	return link.RawAttachProgram(link.RawAttachProgramOptions{Target: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
}

// TestManagerUpgrades: a newer program takes over the VIPs of an older one
// (without an IPv6 VIP map) on the same hook, the older one goes, and an
// IPv6 VIP joins.
func TestManagerUpgrades(t *testing.T) {
	vip1, vip2 := netip.MustParseAddr("10.251.0.10"), netip.MustParseAddr("2001:db8:100::10")
	for _, hook := range []Hook{HookTCX, HookTC} {
		t.Run(string(hook), func(t *testing.T) {
			inFreshNetns(t, func() error {
				idx, err := addVeth("dsrveth0")
				if err != nil {
					return err
				}
				if err := olderProgram(idx, hook, map[netip.Addr]Mode{vip1: GRE}); err != nil {
					return fmt.Errorf("older program: %w", err)
				}
				var m Manager
				got, err := m.Attach("dsrveth0", idx, vip2, IPIP, HookAuto)
				if err != nil {
					return err
				}
				got.ProgID = 0
				if want := (AttachResult{Hook: hook, Upgraded: true, Added: true}); got != want {
					return fmt.Errorf("got %+v, want %+v", got, want)
				}
				if err := wantIngress(idx, onHook(hook)); err != nil {
					return err
				}
				list, err := m.List()
				if err != nil {
					return err
				}
				if len(list) != 1 || len(list[0].VIPs) != 2 || list[0].VIPs[vip1] != GRE || list[0].VIPs[vip2] != IPIP {
					return fmt.Errorf("got list %+v, want the older VIP kept and the new one added", list)
				}
				again, err := m.Attach("dsrveth0", idx, vip2, IPIP, HookAuto)
				if err != nil || again.Upgraded || again.Attached {
					return fmt.Errorf("second attach: got %+v (err %v), want no change", again, err)
				}
				return nil
			})
		})
	}
}

func TestChooseHook(t *testing.T) {
	tc := []*attached{{Attachment: Attachment{Hook: HookTC}}}
	tcx := []*attached{{Attachment: Attachment{Hook: HookTCX}}}
	tests := []struct {
		desc     string
		hook     Hook
		existing []*attached
		haveTCX  bool
		want     Hook
	}{
		{"auto, new, kernel with TCX", HookAuto, nil, true, HookTCX},
		{"auto, new, kernel before 6.6", HookAuto, nil, false, HookTC},
		{"auto keeps tc", HookAuto, tc, true, HookTC},
		{"auto keeps tcx", HookAuto, tcx, true, HookTCX},
		{"empty is auto", "", nil, false, HookTC},
		{"tc asked", HookTC, tcx, true, HookTC},
		{"tcx asked", HookTCX, tc, false, HookTCX}, // Attach then refuses: ErrNoTCX
	}
	for _, tc := range tests {
		if got := chooseHook(tc.hook, tc.existing, tc.haveTCX); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.desc, got, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	requireBPF(t)
	for _, h := range []Hook{HookAuto, HookTC} {
		if err := Check(h); err != nil {
			t.Errorf("Check(%s): %v", h, err)
		}
	}
	if err := Check(HookTCX); err != nil && !errors.Is(err, ErrNoTCX) {
		t.Errorf("Check(tcx): %v", err)
	}
}

// TestChangesFamily: the probe says what the kernel's version says: Linux
// 6.3 or later changes the family.
func TestChangesFamily(t *testing.T) {
	requireBPF(t)
	ok, err := ChangesFamily()
	if err != nil {
		t.Fatal(err)
	}
	var u unix.Utsname
	unix.Uname(&u)
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("kernel release %q: %v", release, err)
	}
	want := major > 6 || major == 6 && minor >= 3
	t.Logf("kernel %s: changes family: %v", release, ok)
	if ok != want {
		t.Errorf("got %v on Linux %s, want %v", ok, release, want)
	}
}

func TestLoadErrorExplains(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{unix.EPERM, "run dsrctl as root"},
		{unix.ENOSYS, "cannot run BPF programs"},
		{fmt.Errorf("map create: %w", ebpf.ErrNotSupported), "cannot run BPF programs"},
		{unix.E2BIG, "load the decapsulator"},
	}
	for _, tc := range tests {
		got := loadError(tc.err)
		if !errors.Is(got, tc.err) || !strings.Contains(got.Error(), tc.want) {
			t.Errorf("loadError(%v) = %q, want it to wrap the error and say %q", tc.err, got, tc.want)
		}
	}
}
