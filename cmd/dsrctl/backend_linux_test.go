//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/dsrlb/dsrlb/cmd/dsrctl/decap"
	"golang.org/x/sys/unix"
)

// fakeHost is an in-memory backendHost that logs every change.
type fakeHost struct {
	links     []backendLink
	addrs     map[string][]netip.Prefix
	sysctls   map[string]string // "dev.key"
	tunnels   map[string]bool   // kinds the kernel supports
	decaps    map[string]map[netip.Addr]decap.Mode
	hooks     map[string]decap.Hook // hook of each decapsulator
	ipv6Off   map[string]bool       // interfaces with disable_ipv6=1
	oldKernel bool                  // cannot change the family (before Linux 6.3)
	ndProxies map[netip.Addr][]string
	openErr   error
	changes   []string
	nextIndex int
}

func newFakeHost(kernelTunnels bool) *fakeHost {
	return &fakeHost{
		links: []backendLink{
			{Name: "lo", Index: 1, Kind: "device", Up: true, Loopback: true},
			{Name: "eth0", Index: 2, Kind: "device", Up: true, Ether: true},
			{Name: "eth1", Index: 3, Kind: "veth", Up: true, Ether: true},
			{Name: "eth2", Index: 4, Kind: "device", Up: false, Ether: true},
			{Name: "swp1", Index: 5, Kind: "veth", Up: true, Ether: true, Enslaved: true},
			{Name: "wg0", Index: 6, Kind: "wireguard", Up: true},
		},
		addrs:     map[string][]netip.Prefix{"eth0": {netip.MustParsePrefix("10.250.0.2/24")}},
		sysctls:   map[string]string{},
		tunnels:   map[string]bool{"ipip": kernelTunnels, "gre": kernelTunnels},
		decaps:    map[string]map[netip.Addr]decap.Mode{},
		hooks:     map[string]decap.Hook{},
		nextIndex: 100,
	}
}

func (f *fakeHost) change(format string, a ...any) {
	f.changes = append(f.changes, fmt.Sprintf(format, a...))
}

func (f *fakeHost) Links() ([]backendLink, error) { return slices.Clone(f.links), nil }

func (f *fakeHost) Addrs(dev string) ([]netip.Prefix, error) {
	return slices.Clone(f.addrs[dev]), nil
}

func (f *fakeHost) AddAddr(dev string, p netip.Prefix) error {
	if slices.Contains(f.addrs[dev], p) {
		return unix.EEXIST
	}
	f.addrs[dev] = append(f.addrs[dev], p)
	f.change("addr add %s dev %s", p, dev)
	return nil
}

func (f *fakeHost) DelAddr(dev string, p netip.Prefix) error {
	i := slices.Index(f.addrs[dev], p)
	if i < 0 {
		return unix.EADDRNOTAVAIL
	}
	f.addrs[dev] = slices.Delete(f.addrs[dev], i, i+1)
	f.change("addr del %s dev %s", p, dev)
	return nil
}

func (f *fakeHost) SetUp(dev string, up bool) error {
	for i := range f.links {
		if f.links[i].Name == dev {
			if f.links[i].Up != up {
				f.links[i].Up = up
				f.change("link %s up=%v", dev, up)
			}
			return nil
		}
	}
	return fmt.Errorf("no link %s", dev)
}

func (f *fakeHost) CreateTunnel(dev, kind string) error {
	if !f.tunnels[kind] {
		return fmt.Errorf("%w: operation not supported", errBackendNoTunnel)
	}
	f.links = append(f.links, backendLink{Name: dev, Index: f.nextIndex, Kind: kind})
	f.nextIndex++
	f.change("tunnel add %s type %s", dev, kind)
	return nil
}

func (f *fakeHost) SetSysctl(dev, key, value string) (string, error) {
	k := dev + "." + key
	old, ok := f.sysctls[k]
	switch {
	case ok:
	case key == "rp_filter":
		old = "1" // strict, as many distributions default to
	default:
		old = "0"
	}
	if old != value {
		f.sysctls[k] = value
		f.change("sysctl %s=%s", k, value)
	}
	return old, nil
}

func (f *fakeHost) IPv6Disabled(dev string) (bool, error) { return f.ipv6Off[dev], nil }

func (f *fakeHost) NDProxies(addr netip.Addr) ([]string, error) { return f.ndProxies[addr], nil }

func (f *fakeHost) DecapCheck(hook decap.Hook) error { return f.openErr }

func (f *fakeHost) DecapChangesFamily() (bool, error) { return !f.oldKernel, nil }

func (f *fakeHost) DecapAttach(l backendLink, vip netip.Addr, mode decap.Mode, hook decap.Hook) (decap.AttachResult, error) {
	if hook == decap.HookAuto || hook == "" {
		hook = decap.HookTCX
		if old, ok := f.hooks[l.Name]; ok {
			hook = old
		}
	}
	res := decap.AttachResult{Hook: hook}
	m, ok := f.decaps[l.Name]
	if !ok {
		m = map[netip.Addr]decap.Mode{}
		f.decaps[l.Name] = m
		res.Attached = true
		f.change("decap attach %s", l.Name)
	} else if old := f.hooks[l.Name]; old != hook {
		res.Attached = true
		res.Moved = map[decap.Hook]string{decap.HookTC: "tc ingress", decap.HookTCX: "TCX ingress"}[old]
		f.change("decap move %s to %s", l.Name, hook)
	}
	f.hooks[l.Name] = hook
	if m[vip]&mode != mode {
		m[vip] |= mode
		res.Added = true
		f.change("decap add %s %s %s", l.Name, vip, mode)
	}
	return res, nil
}

func (f *fakeHost) DecapDetach(ifname string, vip netip.Addr, mode decap.Mode) (decap.DetachResult, error) {
	var res decap.DetachResult
	m, ok := f.decaps[ifname]
	if !ok || m[vip]&mode == 0 {
		return res, nil
	}
	m[vip] &^= mode
	if m[vip] == 0 {
		delete(m, vip)
	}
	res.Removed = true
	f.change("decap del %s %s %s", ifname, vip, mode)
	if len(m) == 0 {
		delete(f.decaps, ifname)
		delete(f.hooks, ifname)
		res.Detached = true
		f.change("decap detach %s", ifname)
	}
	return res, nil
}

func (f *fakeHost) DecapList() ([]decap.Attachment, error) {
	var out []decap.Attachment
	for name, vips := range f.decaps {
		out = append(out, decap.Attachment{Ifname: name, Ifindex: 1, Hook: f.hooks[name], VIPs: vips})
	}
	slices.SortFunc(out, func(a, b decap.Attachment) int { return strings.Compare(a.Ifname, b.Ifname) })
	return out, nil
}

func fakeCfg(mode string) backendConfig {
	return backendConfig{VIP: netip.MustParseAddr("10.251.0.10"), Mode: mode, OS: "linux"}
}

// apply runs setup and returns the changes it made and its output.
func (f *fakeHost) apply(t *testing.T, cfg backendConfig) ([]string, string) {
	t.Helper()
	f.changes = nil
	var out bytes.Buffer
	if err := backendApply(f, cfg, &out); err != nil {
		t.Fatalf("setup: %v\n%s", err, out.String())
	}
	return f.changes, out.String()
}

func (f *fakeHost) undo(t *testing.T, cfg backendConfig) ([]string, string) {
	t.Helper()
	f.changes = nil
	var out bytes.Buffer
	if err := backendUndo(f, cfg, &out); err != nil {
		t.Fatalf("teardown: %v\n%s", err, out.String())
	}
	return f.changes, out.String()
}

func wantChanges(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("got changes\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestBackendSetupL2(t *testing.T) {
	f := newFakeHost(false)
	got, _ := f.apply(t, fakeCfg("l2"))
	wantChanges(t, got, []string{
		"addr add 10.251.0.10/32 dev lo",
		"sysctl all.arp_ignore=1", "sysctl all.arp_announce=2",
		"sysctl lo.arp_ignore=1", "sysctl lo.arp_announce=2",
		"sysctl eth0.arp_ignore=1", "sysctl eth0.arp_announce=2",
		"sysctl eth1.arp_ignore=1", "sysctl eth1.arp_announce=2",
	})
	got, out := f.apply(t, fakeCfg("l2"))
	wantChanges(t, got, nil)
	if !strings.Contains(out, "address 10.251.0.10/32 on lo: present") {
		t.Errorf("second setup output lacks 'present':\n%s", out)
	}

	got, _ = f.undo(t, fakeCfg("l2"))
	wantChanges(t, got, []string{"addr del 10.251.0.10/32 dev lo"})
	got, out = f.undo(t, fakeCfg("l2"))
	wantChanges(t, got, nil)
	if !strings.Contains(out, "nothing to undo") {
		t.Errorf("second teardown output lacks 'nothing to undo':\n%s", out)
	}
}

func TestBackendSetupKernelTunnel(t *testing.T) {
	for _, tc := range []struct{ mode, dev string }{{"ipip", "tunl0"}, {"gre", "gre0"}} {
		t.Run(tc.mode, func(t *testing.T) {
			f := newFakeHost(true)
			cfg := fakeCfg(tc.mode)
			cfg.Dev = "eth1"
			got, _ := f.apply(t, cfg)
			wantChanges(t, got, []string{
				"tunnel add " + tc.dev + " type " + tc.mode,
				"link " + tc.dev + " up=true",
				"addr add 10.251.0.10/32 dev " + tc.dev,
				"sysctl all.arp_ignore=1", "sysctl all.arp_announce=2",
				"sysctl lo.arp_ignore=1", "sysctl lo.arp_announce=2",
				"sysctl eth1.arp_ignore=1", "sysctl eth1.arp_announce=2",
				"sysctl all.rp_filter=0", "sysctl " + tc.dev + ".rp_filter=0",
			})
			got, _ = f.apply(t, cfg)
			wantChanges(t, got, nil)
			got, _ = f.undo(t, cfg)
			wantChanges(t, got, []string{
				"addr del 10.251.0.10/32 dev " + tc.dev,
				"link " + tc.dev + " up=false",
			})
		})
	}
}

func TestBackendSetupEBPFFallback(t *testing.T) {
	f := newFakeHost(false)
	f.sysctls["all.rp_filter"] = "2"
	got, out := f.apply(t, fakeCfg("ipip"))
	wantChanges(t, got, []string{
		"addr add 10.251.0.10/32 dev lo",
		"sysctl all.arp_ignore=1", "sysctl all.arp_announce=2",
		"sysctl lo.arp_ignore=1", "sysctl lo.arp_announce=2",
		"sysctl eth0.arp_ignore=1", "sysctl eth0.arp_announce=2",
		"sysctl eth1.arp_ignore=1", "sysctl eth1.arp_announce=2",
		"sysctl all.rp_filter=0", "sysctl eth0.rp_filter=0", "sysctl eth1.rp_filter=0",
		"decap attach eth0", "decap add eth0 10.251.0.10 ipip",
		"decap attach eth1", "decap add eth1 10.251.0.10 ipip",
	})
	if !strings.Contains(out, "tunnel tunl0: the kernel has no ipip support") {
		t.Errorf("output does not explain the fallback:\n%s", out)
	}
	// Idempotent.
	got, _ = f.apply(t, fakeCfg("ipip"))
	wantChanges(t, got, nil)

	// GRE for the same VIP shares the decapsulators.
	got, _ = f.apply(t, fakeCfg("gre"))
	wantChanges(t, got, []string{"decap add eth0 10.251.0.10 gre", "decap add eth1 10.251.0.10 gre"})

	// Tearing down ipip keeps the VIP: GRE still needs it.
	got, out = f.undo(t, fakeCfg("ipip"))
	wantChanges(t, got, []string{"decap del eth0 10.251.0.10 ipip", "decap del eth1 10.251.0.10 ipip"})
	if !strings.Contains(out, "kept, still decapsulated on eth0 (gre), eth1 (gre)") {
		t.Errorf("output does not explain why the VIP stays:\n%s", out)
	}
	// An l2 teardown keeps it too.
	got, _ = f.undo(t, fakeCfg("l2"))
	wantChanges(t, got, nil)

	got, _ = f.undo(t, fakeCfg("gre"))
	wantChanges(t, got, []string{
		"decap del eth0 10.251.0.10 gre", "decap detach eth0",
		"decap del eth1 10.251.0.10 gre", "decap detach eth1",
		"addr del 10.251.0.10/32 dev lo",
	})
	got, _ = f.undo(t, fakeCfg("gre"))
	wantChanges(t, got, nil)
}

// TestBackendSetupHook: --hook reaches the decapsulator and the output names
// the hook, and a move between hooks.
func TestBackendSetupHook(t *testing.T) {
	f := newFakeHost(false)
	cfg := fakeCfg("ipip")
	cfg.Dev = "eth0"
	cfg.Hook = "tc"
	got, out := f.apply(t, cfg)
	if !slices.Contains(got, "decap attach eth0") || f.hooks["eth0"] != decap.HookTC {
		t.Errorf("got changes %v, hook %q; want eth0 attached on tc", got, f.hooks["eth0"])
	}
	if want := "decap eth0: attached to tc ingress (clsact, cls_bpf filter dsr_decap), 10.251.0.10 ipip added"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	cfg.Hook = "auto"
	if _, out = f.apply(t, cfg); !strings.Contains(out, "decap eth0: already attached") || f.hooks["eth0"] != decap.HookTC {
		t.Errorf("auto did not keep tc:\n%s", out)
	}
	cfg.Hook = "tcx"
	got, out = f.apply(t, cfg)
	wantChanges(t, got, []string{"decap move eth0 to tcx"})
	if want := "decap eth0: moved from tc ingress to TCX ingress, 10.251.0.10 ipip already present"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	var status bytes.Buffer
	if err := backendShowStatus(f, backendConfig{Output: "json"}, &status); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status.String(), `"hook": "tcx"`) {
		t.Errorf("status json lacks the hook:\n%s", status.String())
	}
}

func TestBackendSetupDev(t *testing.T) {
	f := newFakeHost(false)
	cfg := fakeCfg("gre")
	cfg.Dev = "eth2" // down, but named explicitly
	got, _ := f.apply(t, cfg)
	if !slices.Contains(got, "decap attach eth2") || slices.Contains(got, "decap attach eth0") {
		t.Errorf("got changes %v, want the decapsulator on eth2 only", got)
	}
	if !slices.Contains(got, "sysctl eth2.rp_filter=0") {
		t.Errorf("got changes %v, want rp_filter=0 on eth2", got)
	}
	// Teardown limited to another device leaves eth2 alone.
	other := cfg
	other.Dev = "eth0"
	got, _ = f.undo(t, other)
	wantChanges(t, got, nil)
	got, _ = f.undo(t, cfg)
	wantChanges(t, got, []string{
		"decap del eth2 10.251.0.10 gre", "decap detach eth2",
		"addr del 10.251.0.10/32 dev lo",
	})
}

func TestBackendSetupErrors(t *testing.T) {
	tests := []struct {
		desc    string
		host    func() *fakeHost
		cfg     backendConfig
		wantErr string
	}{
		{"no such dev", func() *fakeHost { return newFakeHost(false) },
			backendConfig{VIP: netip.MustParseAddr("10.251.0.10"), Mode: "l2", Dev: "eth9"}, "--dev eth9: no such interface"},
		{"dev is loopback", func() *fakeHost { return newFakeHost(false) },
			backendConfig{VIP: netip.MustParseAddr("10.251.0.10"), Mode: "ipip", Dev: "lo"}, "loopback"},
		{"tunl0 of the wrong kind", func() *fakeHost {
			f := newFakeHost(true)
			f.links = append(f.links, backendLink{Name: "tunl0", Kind: "veth"})
			return f
		}, fakeCfg("ipip"), `tunl0 exists but is of kind "veth"`},
		{"no interface for the decapsulator", func() *fakeHost {
			f := newFakeHost(false)
			f.links = f.links[:1]
			return f
		}, fakeCfg("gre"), "no up Ethernet interface"},
		{"BPF unusable", func() *fakeHost {
			f := newFakeHost(false)
			f.openErr = errors.New("not permitted to load BPF programs")
			return f
		}, fakeCfg("ipip"), "the eBPF decapsulator cannot run here: not permitted"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			f := tc.host()
			var out bytes.Buffer
			err := backendApply(f, tc.cfg, &out)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
			if len(f.changes) != 0 {
				t.Errorf("failed setup changed the host: %v", f.changes)
			}
		})
	}
}

func TestBackendStatusOutput(t *testing.T) {
	f := newFakeHost(false)
	var out bytes.Buffer
	if err := backendShowStatus(f, backendConfig{Output: "table"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "no eBPF decapsulator") {
		t.Errorf("got %q", out.String())
	}
	f.apply(t, fakeCfg("ipip"))
	out.Reset()
	if err := backendShowStatus(f, backendConfig{Output: "table"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"INTERFACE", "IPIP PKTS", "eth0", "10.251.0.10/ipip"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := backendShowStatus(f, backendConfig{Output: "json"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"10.251.0.10": "ipip"`) {
		t.Errorf("status json lacks the VIP:\n%s", out.String())
	}
}

func fakeCfg6(mode string) backendConfig {
	return backendConfig{VIP: netip.MustParseAddr("2001:db8:100::10"), Mode: mode, OS: "linux", Hook: "auto"}
}

// TestBackendSetupIPv6 pins what setup and teardown change for an IPv6 VIP
// in each mode: the /128 on lo, the eBPF decapsulator for ipip and gre (even
// where the kernel has IPv4 tunnels), and no ARP or rp_filter sysctl.
func TestBackendSetupIPv6(t *testing.T) {
	for _, kernelTunnels := range []bool{false, true} {
		for _, mode := range []string{"l2", "ipip", "gre"} {
			t.Run(fmt.Sprintf("%s/kernel-tunnels=%v", mode, kernelTunnels), func(t *testing.T) {
				f := newFakeHost(kernelTunnels)
				cfg := fakeCfg6(mode)
				want := []string{"addr add 2001:db8:100::10/128 dev lo"}
				if mode != "l2" {
					want = append(want,
						"decap attach eth0", "decap add eth0 2001:db8:100::10 "+mode,
						"decap attach eth1", "decap add eth1 2001:db8:100::10 "+mode)
				}
				got, out := f.apply(t, cfg)
				wantChanges(t, got, want)
				if !strings.Contains(out, "address 2001:db8:100::10/128 on lo: added (nodad)") ||
					!strings.Contains(out, "neighbour discovery: the VIP is on lo") {
					t.Errorf("setup output:\n%s", out)
				}
				got, _ = f.apply(t, cfg)
				wantChanges(t, got, nil)

				want = nil
				if mode != "l2" {
					want = []string{
						"decap del eth0 2001:db8:100::10 " + mode, "decap detach eth0",
						"decap del eth1 2001:db8:100::10 " + mode, "decap detach eth1",
					}
				}
				want = append(want, "addr del 2001:db8:100::10/128 dev lo")
				got, out = f.undo(t, cfg)
				wantChanges(t, got, want)
				if strings.Contains(out, "sysctls") {
					t.Errorf("teardown of an IPv6 VIP talks about IPv4 sysctls:\n%s", out)
				}
			})
		}
	}
}

// TestBackendSetupDualStack: an IPv4 and an IPv6 VIP share the decapsulator;
// tearing one down leaves the other.
func TestBackendSetupDualStack(t *testing.T) {
	f := newFakeHost(false)
	v4, v6 := fakeCfg("ipip"), fakeCfg6("ipip")
	f.apply(t, v4)
	got, _ := f.apply(t, v6)
	wantChanges(t, got, []string{
		"addr add 2001:db8:100::10/128 dev lo",
		"decap add eth0 2001:db8:100::10 ipip",
		"decap add eth1 2001:db8:100::10 ipip",
	})
	got, _ = f.undo(t, v4)
	wantChanges(t, got, []string{
		"decap del eth0 10.251.0.10 ipip",
		"decap del eth1 10.251.0.10 ipip",
		"addr del 10.251.0.10/32 dev lo",
	})
	if f.decaps["eth0"][v6.VIP] != decap.IPIP {
		t.Errorf("IPv6 VIP lost with the IPv4 one: %v", f.decaps)
	}
}

// TestBackendSetupIPv6Refuses: IPv6 disabled where the VIP's packets arrive,
// or a proxy neighbour entry that would answer for the VIP: setup fails
// before it changes anything and says how to fix it.
func TestBackendSetupIPv6Refuses(t *testing.T) {
	tests := []struct {
		desc  string
		setup func(f *fakeHost)
		want  string
	}{
		{"ipv6 off on lo", func(f *fakeHost) { f.ipv6Off = map[string]bool{"lo": true} }, "IPv6 is disabled on lo"},
		{"ipv6 off on every data interface", func(f *fakeHost) { f.ipv6Off = map[string]bool{"eth0": true, "eth1": true} }, "IPv6 is disabled on eth0, eth1"},
		{"proxy entry", func(f *fakeHost) {
			f.ndProxies = map[netip.Addr][]string{netip.MustParseAddr("2001:db8:100::10"): {"eth0"}}
		}, "ip -6 neigh del proxy 2001:db8:100::10 dev eth0"},
	}
	for _, tc := range tests {
		for _, mode := range []string{"l2", "gre"} {
			t.Run(tc.desc+"/"+mode, func(t *testing.T) {
				f := newFakeHost(false)
				tc.setup(f)
				var out bytes.Buffer
				err := backendApply(f, fakeCfg6(mode), &out)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got error %v, want one containing %q", err, tc.want)
				}
				wantChanges(t, f.changes, nil)
			})
		}
	}
}

// TestBackendSetupOldKernelNote: where the kernel cannot change the family
// (before Linux 6.3), setup says which envelopes will not be stripped, and
// says nothing on a newer kernel or without a decapsulator.
func TestBackendSetupOldKernelNote(t *testing.T) {
	tests := []struct {
		cfg       backendConfig
		oldKernel bool
		want      string // "" for no note
	}{
		{fakeCfg6("ipip"), true, "cannot strip IPv4 envelopes around IPv6 packets: the load balancer must reach this backend at an IPv6 address"},
		{fakeCfg("gre"), true, "cannot strip IPv6 envelopes around IPv4 packets: the load balancer must reach this backend at an IPv4 address"},
		{fakeCfg6("gre"), false, ""},
		{fakeCfg6("l2"), true, ""},
	}
	for _, tc := range tests {
		f := newFakeHost(false)
		f.oldKernel = tc.oldKernel
		_, out := f.apply(t, tc.cfg)
		if got := strings.Contains(out, "note: this kernel"); got != (tc.want != "") || !strings.Contains(out, tc.want) {
			t.Errorf("%s %s, old kernel %v: output\n%s\nwant note %q", tc.cfg.VIP, tc.cfg.Mode, tc.oldKernel, out, tc.want)
		}
	}
}

// TestBackendSetupIPv6OffOnSome: IPv6 disabled on one of the data interfaces
// is noted; setup goes on with the others.
func TestBackendSetupIPv6OffOnSome(t *testing.T) {
	f := newFakeHost(false)
	f.ipv6Off = map[string]bool{"eth1": true}
	_, out := f.apply(t, fakeCfg6("l2"))
	if want := "note: IPv6 is disabled on eth1: the VIP's packets cannot arrive there"; !strings.Contains(out, want) {
		t.Errorf("setup output lacks %q:\n%s", want, out)
	}
	if !slices.Contains(f.addrs["lo"], netip.MustParsePrefix("2001:db8:100::10/128")) {
		t.Errorf("setup did not put the VIP on lo")
	}
}

// listenHost answers Listening only: what backendListener asks.
type listenHost struct {
	backendCheckHost
	listening bool
}

func (l listenHost) Listening(string, netip.Addr, int) (bool, error) { return l.listening, nil }

// TestBackendListenerAddresses: an IPv6 VIP's listener is named as
// [addr]:port and its wildcard as [::], an IPv4 one as addr:port.
func TestBackendListenerAddresses(t *testing.T) {
	for _, c := range []struct{ vip, what, fix string }{
		{"10.96.0.10", "tcp listener on 10.96.0.10:80 ", "start the service on 10.96.0.10:80 or 0.0.0.0:80:"},
		{"2001:db8::10", "tcp listener on [2001:db8::10]:80 ", "start the service on [2001:db8::10]:80 or [::]:80:"},
	} {
		f := backendListener(listenHost{}, backendConfig{VIP: netip.MustParseAddr(c.vip), Port: 80, Proto: "tcp"})
		if len(f) != 1 || f[0].ok || !strings.Contains(f[0].what, c.what) || !strings.Contains(f[0].fix, c.fix) {
			t.Errorf("VIP %s: %+v, want %q and %q", c.vip, f, c.what, c.fix)
		}
	}
}
