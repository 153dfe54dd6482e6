//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/dsrlb/dsrlb/cmd/dsrctl/decap"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// backendLink is what setup needs to know about one interface.
type backendLink struct {
	Name     string
	Index    int
	Kind     string // netlink kind: "veth", "device", "ipip", "gre", ...
	Up       bool   // administratively up
	Loopback bool
	Ether    bool // Ethernet framing: the decapsulator parses a 14-byte header
	Enslaved bool // a bridge or bond port: its master receives the traffic
}

// errBackendNoTunnel says the kernel cannot create a tunnel device of a kind.
var errBackendNoTunnel = errors.New("kernel has no support for this tunnel kind")

// backendHost is the part of the host that setup and teardown change: the
// current network namespace's links, addresses and IPv4 sysctls, and the eBPF
// decapsulators on its interfaces. Tests replace it with a fake.
type backendHost interface {
	Links() ([]backendLink, error)
	// Addrs returns the IPv4 and IPv6 addresses of dev.
	Addrs(dev string) ([]netip.Prefix, error)
	// AddAddr adds p to dev; an IPv6 address without duplicate address
	// detection (nodad), so that it is usable at once and never probed
	// for on the network.
	AddAddr(dev string, p netip.Prefix) error
	DelAddr(dev string, p netip.Prefix) error
	SetUp(dev string, up bool) error
	// CreateTunnel creates the catch-all tunnel device dev of kind ("ipip"
	// or "gre"); errBackendNoTunnel when the kernel lacks the kind.
	CreateTunnel(dev, kind string) error
	// SetSysctl sets net.ipv4.conf.<dev>.<key> and returns the old value.
	SetSysctl(dev, key, value string) (old string, err error)
	// IPv6Disabled reports net.ipv6.conf.<dev>.disable_ipv6.
	IPv6Disabled(dev string) (bool, error)
	// NDProxies returns the interfaces with a proxy neighbour entry for
	// addr (`ip -6 neigh show proxy`): the kernel answers neighbour
	// solicitations for addr there when proxy_ndp is on.
	NDProxies(addr netip.Addr) ([]string, error)
	// DecapCheck loads the decapsulator without attaching it and checks
	// the hook, so that setup fails before it changes anything when this
	// kernel cannot run it.
	DecapCheck(hook decap.Hook) error
	// DecapChangesFamily reports whether the kernel lets the
	// decapsulator strip an envelope of the other family than the packet
	// inside (decap.ChangesFamily).
	DecapChangesFamily() (bool, error)
	DecapAttach(l backendLink, vip netip.Addr, mode decap.Mode, hook decap.Hook) (decap.AttachResult, error)
	DecapDetach(ifname string, vip netip.Addr, mode decap.Mode) (decap.DetachResult, error)
	// DecapList returns the attached decapsulators.
	DecapList() ([]decap.Attachment, error)
}

func backendDecapMode(mode string) decap.Mode {
	switch mode {
	case backendModeIPIP:
		return decap.IPIP
	case backendModeGRE:
		return decap.GRE
	}
	return 0
}

func backendSetup(cfg backendConfig, w io.Writer) error {
	return backendApply(&backendNetlinkHost{bpffs: cfg.BPFFS}, cfg, w)
}

func backendTeardown(cfg backendConfig, w io.Writer) error {
	return backendUndo(&backendNetlinkHost{bpffs: cfg.BPFFS}, cfg, w)
}

func backendStatus(cfg backendConfig, w io.Writer) error {
	return backendShowStatus(&backendNetlinkHost{bpffs: cfg.BPFFS}, cfg, w)
}

// backendDataLinks returns the interfaces that face the load balancer: --dev,
// or every up, non-loopback Ethernet interface that is not a bridge or bond
// port and not a tunnel device.
func backendDataLinks(links []backendLink, dev string) ([]backendLink, error) {
	if dev != "" {
		for _, l := range links {
			if l.Name == dev {
				if l.Loopback {
					return nil, fmt.Errorf("--dev %s is the loopback device", dev)
				}
				return []backendLink{l}, nil
			}
		}
		return nil, fmt.Errorf("--dev %s: no such interface in this network namespace", dev)
	}
	var out []backendLink
	for _, l := range links {
		if l.Up && !l.Loopback && l.Ether && !l.Enslaved {
			out = append(out, l)
		}
	}
	return out, nil
}

// backendApply is `backend setup`: it brings the host to the DSR backend
// state for cfg, changing only what differs, and reports each step.
func backendApply(h backendHost, cfg backendConfig, w io.Writer) error {
	links, err := h.Links()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	data, err := backendDataLinks(links, cfg.Dev)
	if err != nil {
		return err
	}

	if cfg.VIP.Is6() {
		if err := backendCheckIPv6(h, data, cfg.VIP, w); err != nil {
			return err
		}
	}

	vipDev := "lo"
	var decapOn []backendLink // eBPF fallback: interfaces to attach to
	var rpDevs []string       // where decapsulated packets arrive
	switch {
	case cfg.Mode != backendModeL2 && cfg.VIP.Is6():
		// The kernel's IPv6 tunnel devices (ip6tnl0, sit0, ip6gre0)
		// are not used: the eBPF decapsulator strips every envelope
		// the load balancer may send for an IPv6 VIP, IPv4 and IPv6
		// outer headers alike, in one place.
		fmt.Fprintf(w, "IPv6 VIP: using the eBPF decapsulator (IPv4 and IPv6 envelopes)\n")
		if len(data) == 0 {
			return fmt.Errorf("no up Ethernet interface to attach the eBPF decapsulator to; pass --dev")
		}
		if err := h.DecapCheck(decap.Hook(cfg.Hook)); err != nil {
			return fmt.Errorf("the eBPF decapsulator cannot run here: %w", err)
		}
		decapOn = data
	case cfg.Mode != backendModeL2:
		tun, kind := backendTunnel(cfg.Mode)
		kernel, err := backendEnsureTunnel(h, links, tun, kind, w)
		if err != nil {
			return err
		}
		if kernel {
			vipDev = tun
			rpDevs = []string{tun}
			if err := h.SetUp(tun, true); err != nil {
				return fmt.Errorf("set %s up: %w", tun, err)
			}
		} else {
			if len(data) == 0 {
				return fmt.Errorf("no up Ethernet interface to attach the eBPF decapsulator to; pass --dev")
			}
			if err := h.DecapCheck(decap.Hook(cfg.Hook)); err != nil {
				return fmt.Errorf("the eBPF decapsulator cannot run here: %w", err)
			}
			decapOn = data
			for _, l := range data {
				rpDevs = append(rpDevs, l.Name)
			}
		}
	}

	if err := backendEnsureAddr(h, vipDev, cfg.VIP, w); err != nil {
		return err
	}
	// lo is down in a fresh network namespace; a VIP on it would be dead.
	for _, l := range links {
		if l.Loopback && !l.Up {
			if err := h.SetUp(l.Name, true); err != nil {
				return fmt.Errorf("set %s up: %w", l.Name, err)
			}
			fmt.Fprintf(w, "link %s: set up\n", l.Name)
		}
	}

	// ARP and IPv4 reverse path filtering concern IPv4 VIPs only. An IPv6
	// VIP on lo needs nothing in their place: the kernel answers
	// neighbour solicitations only for addresses of the interface they
	// arrive on, joins the VIP's solicited-node group on lo only, and
	// never sends a solicitation from an address of another interface
	// (see backendCheckIPv6 for the one setting that would answer).
	var arpDevs []string
	if cfg.VIP.Is4() {
		arpDevs = []string{"all", "lo"}
		for _, l := range data {
			arpDevs = append(arpDevs, l.Name)
		}
	} else {
		fmt.Fprintf(w, "neighbour discovery: the VIP is on lo, so the kernel neither answers nor sends solicitations for it on %s\n", backendLinkNames(data))
	}
	for _, d := range arpDevs {
		if err := backendSysctl(h, d, "arp_ignore", "1", w); err != nil {
			return err
		}
		if err := backendSysctl(h, d, "arp_announce", "2", w); err != nil {
			return err
		}
	}
	if cfg.Mode != backendModeL2 && cfg.VIP.Is4() {
		for _, d := range append([]string{"all"}, rpDevs...) {
			if err := backendSysctl(h, d, "rp_filter", "0", w); err != nil {
				return err
			}
		}
	}

	if len(decapOn) > 0 {
		switch ok, err := h.DecapChangesFamily(); {
		case err != nil:
			fmt.Fprintf(w, "note: could not check whether this kernel strips envelopes of the other family: %v\n", err)
		case !ok:
			fam, other := "IPv4", "IPv6"
			if cfg.VIP.Is6() {
				fam, other = "IPv6", "IPv4"
			}
			fmt.Fprintf(w, "note: this kernel (before Linux 6.3) cannot strip %s envelopes around %s packets: "+
				"the load balancer must reach this backend at an %s address\n", other, fam, fam)
		}
	}
	mode := backendDecapMode(cfg.Mode)
	for _, l := range decapOn {
		res, err := h.DecapAttach(l, cfg.VIP, mode, decap.Hook(cfg.Hook))
		if err != nil {
			return fmt.Errorf("decapsulator on %s: %w", l.Name, err)
		}
		hook := backendHookName(res.Hook)
		var what []string
		switch {
		case res.Moved != "":
			what = append(what, fmt.Sprintf("moved from %s to %s", res.Moved, hook))
		case res.Attached:
			what = append(what, "attached to "+hook)
		case res.Upgraded:
			what = append(what, "program upgraded on "+hook)
		default:
			what = append(what, "already attached")
		}
		if res.Added {
			what = append(what, fmt.Sprintf("%s %s added", cfg.VIP, cfg.Mode))
		} else {
			what = append(what, fmt.Sprintf("%s %s already present", cfg.VIP, cfg.Mode))
		}
		fmt.Fprintf(w, "decap %s: %s (program %d, held by the interface)\n", l.Name, strings.Join(what, ", "), res.ProgID)
	}
	how := "VIP on " + vipDev
	if len(decapOn) > 0 {
		how += ", eBPF decapsulator"
	}
	fmt.Fprintf(w, "backend ready: VIP %s mode %s (%s)\n", cfg.VIP, cfg.Mode, how)
	return nil
}

// backendHookName names a hook in messages, as `bpftool net` and `tc` show it.
func backendHookName(h decap.Hook) string {
	if h == decap.HookTC {
		return "tc ingress (clsact, cls_bpf filter " + decap.ProgramName + ")"
	}
	return "TCX ingress"
}

// backendLinkNames lists interface names for messages.
func backendLinkNames(ls []backendLink) string {
	if len(ls) == 0 {
		return "no interface"
	}
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.Name
	}
	return strings.Join(names, ", ")
}

// backendCheckIPv6 refuses an IPv6 VIP, before anything changes, where the
// backend could not serve it or would claim it on the network: IPv6 disabled
// on lo, or on every interface the load balancer's packets may arrive on
// (the kernel drops IPv6 packets there, decapsulated ones too; with some of
// them left it notes the others), or a proxy neighbour entry for the VIP,
// with which the kernel answers solicitations for it (proxy_ndp) as if it
// owned it.
func backendCheckIPv6(h backendHost, data []backendLink, vip netip.Addr, w io.Writer) error {
	disabled := func(dev string) (bool, error) {
		off, err := h.IPv6Disabled(dev)
		if err != nil {
			return false, fmt.Errorf("read net.ipv6.conf.%s.disable_ipv6: %w", dev, err)
		}
		return off, nil
	}
	const enable = "enable it (sysctl -w net.ipv6.conf.IFACE.disable_ipv6=0) for an IPv6 VIP"
	if off, err := disabled("lo"); err != nil || off {
		if err == nil {
			err = fmt.Errorf("IPv6 is disabled on lo: %s", enable)
		}
		return err
	}
	var off []string
	for _, l := range data {
		d, err := disabled(l.Name)
		if err != nil {
			return err
		}
		if d {
			off = append(off, l.Name)
		}
	}
	switch {
	case len(off) > 0 && len(off) == len(data):
		return fmt.Errorf("IPv6 is disabled on %s: %s, or pass --dev with the interface the load balancer's packets arrive on",
			strings.Join(off, ", "), enable)
	case len(off) > 0:
		fmt.Fprintf(w, "note: IPv6 is disabled on %s: the VIP's packets cannot arrive there\n", strings.Join(off, ", "))
	}
	proxies, err := h.NDProxies(vip)
	if err != nil {
		return fmt.Errorf("list proxy neighbour entries: %w", err)
	}
	if len(proxies) > 0 {
		return fmt.Errorf("a proxy neighbour entry for %s on %s makes this host answer neighbour solicitations for the VIP; "+
			"remove it (ip -6 neigh del proxy %s dev %s): only the load balancer may claim the VIP",
			vip, strings.Join(proxies, ", "), vip, proxies[0])
	}
	return nil
}

// backendEnsureTunnel makes sure the kernel's catch-all tunnel device exists.
// It reports false, without error, when the kernel cannot create it.
func backendEnsureTunnel(h backendHost, links []backendLink, tun, kind string, w io.Writer) (bool, error) {
	for _, l := range links {
		if l.Name == tun {
			if l.Kind != kind {
				return false, fmt.Errorf("interface %s exists but is of kind %q, not %s", tun, l.Kind, kind)
			}
			fmt.Fprintf(w, "tunnel %s: present\n", tun)
			return true, nil
		}
	}
	err := h.CreateTunnel(tun, kind)
	switch {
	case err == nil:
		fmt.Fprintf(w, "tunnel %s: created\n", tun)
		return true, nil
	case errors.Is(err, errBackendNoTunnel):
		fmt.Fprintf(w, "tunnel %s: the kernel has no %s support, using the eBPF decapsulator\n", tun, kind)
		return false, nil
	case errors.Is(err, unix.EEXIST):
		// Loading the module created the fallback device first.
		fmt.Fprintf(w, "tunnel %s: present\n", tun)
		return true, nil
	}
	return false, fmt.Errorf("create tunnel %s: %w", tun, err)
}

// backendVIPPrefix is the VIP as a host address: /32 or /128.
func backendVIPPrefix(vip netip.Addr) netip.Prefix { return netip.PrefixFrom(vip, vip.BitLen()) }

func backendHasAddr(h backendHost, dev string, vip netip.Addr) (bool, error) {
	addrs, err := h.Addrs(dev)
	if err != nil {
		return false, fmt.Errorf("addresses of %s: %w", dev, err)
	}
	return slices.Contains(addrs, backendVIPPrefix(vip)), nil
}

func backendEnsureAddr(h backendHost, dev string, vip netip.Addr, w io.Writer) error {
	has, err := backendHasAddr(h, dev, vip)
	if err != nil {
		return err
	}
	p := backendVIPPrefix(vip)
	if has {
		fmt.Fprintf(w, "address %s on %s: present\n", p, dev)
		return nil
	}
	if err := h.AddAddr(dev, p); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s to %s: %w", p, dev, err)
	}
	if vip.Is6() {
		fmt.Fprintf(w, "address %s on %s: added (nodad)\n", p, dev)
	} else {
		fmt.Fprintf(w, "address %s on %s: added\n", p, dev)
	}
	return nil
}

func backendSysctl(h backendHost, dev, key, value string, w io.Writer) error {
	old, err := h.SetSysctl(dev, key, value)
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", backendSysctlName(dev, key), value, err)
	}
	if old == value {
		fmt.Fprintf(w, "sysctl %s=%s: unchanged\n", backendSysctlName(dev, key), value)
	} else {
		fmt.Fprintf(w, "sysctl %s=%s: was %s\n", backendSysctlName(dev, key), value, old)
	}
	return nil
}

// backendUndo is `backend teardown`. It removes what setup added for this
// VIP and mode: the VIP address (unless the decapsulator still serves the VIP
// in another mode) and the decapsulator's map entry, and the decapsulator
// itself with its last VIP. Sysctls stay as they are: they are host-wide and
// shared by every VIP, other services may rely on them, and arp_ignore=1,
// arp_announce=2 are harmless on a backend.
func backendUndo(h backendHost, cfg backendConfig, w io.Writer) error {
	links, err := h.Links()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	if cfg.Dev != "" && !slices.ContainsFunc(links, func(l backendLink) bool { return l.Name == cfg.Dev }) {
		// The interface may be gone; pins an older dsrctl left for it can
		// still be removed.
		fmt.Fprintf(w, "note: interface %s does not exist\n", cfg.Dev)
	}
	changed := false
	removeFromLo := cfg.Mode == backendModeL2
	if cfg.Mode != backendModeL2 {
		tun, kind := backendTunnel(cfg.Mode)
		if cfg.VIP.Is4() && slices.ContainsFunc(links, func(l backendLink) bool { return l.Name == tun && l.Kind == kind }) {
			has, err := backendHasAddr(h, tun, cfg.VIP)
			if err != nil {
				return err
			}
			if has {
				if err := h.DelAddr(tun, backendVIPPrefix(cfg.VIP)); err != nil {
					return fmt.Errorf("remove %s/32 from %s: %w", cfg.VIP, tun, err)
				}
				fmt.Fprintf(w, "address %s/32 on %s: removed\n", cfg.VIP, tun)
				changed = true
				// IPv4 addresses only: the kernel gives gre0 an IPv6
				// link-local address of its own.
				if left, err := h.Addrs(tun); err == nil && !slices.ContainsFunc(left, func(p netip.Prefix) bool { return p.Addr().Is4() }) {
					if err := h.SetUp(tun, false); err != nil {
						return fmt.Errorf("set %s down: %w", tun, err)
					}
					fmt.Fprintf(w, "tunnel %s: down (no address left)\n", tun)
				}
			}
		}
		atts, err := h.DecapList()
		if err != nil {
			return err
		}
		mode := backendDecapMode(cfg.Mode)
		for _, a := range atts {
			if cfg.Dev != "" && a.Ifname != cfg.Dev {
				continue
			}
			if a.VIPs[cfg.VIP]&mode == 0 {
				continue
			}
			res, err := h.DecapDetach(a.Ifname, cfg.VIP, mode)
			if err != nil {
				return fmt.Errorf("decapsulator on %s: %w", a.Ifname, err)
			}
			if res.Removed {
				removeFromLo = true
				changed = true
				msg := fmt.Sprintf("%s %s removed", cfg.VIP, cfg.Mode)
				if res.Detached {
					msg += ", last VIP: detached"
				}
				fmt.Fprintf(w, "decap %s: %s\n", a.Ifname, msg)
			}
		}
	}

	if removeFromLo {
		atts, err := h.DecapList()
		if err != nil {
			return err
		}
		var users []string
		for _, a := range atts {
			if m := a.VIPs[cfg.VIP]; m != 0 {
				users = append(users, a.Ifname+" ("+m.String()+")")
			}
		}
		has, err := backendHasAddr(h, "lo", cfg.VIP)
		if err != nil {
			return err
		}
		p := backendVIPPrefix(cfg.VIP)
		switch {
		case !has:
		case len(users) > 0:
			fmt.Fprintf(w, "address %s on lo: kept, still decapsulated on %s\n", p, strings.Join(users, ", "))
		default:
			if err := h.DelAddr("lo", p); err != nil {
				return fmt.Errorf("remove %s from lo: %w", p, err)
			}
			fmt.Fprintf(w, "address %s on lo: removed\n", p)
			changed = true
		}
	}
	if !changed {
		fmt.Fprintf(w, "nothing to undo for VIP %s mode %s\n", cfg.VIP, cfg.Mode)
	}
	if cfg.VIP.Is4() {
		fmt.Fprintln(w, "sysctls (arp_ignore, arp_announce, rp_filter) left as they are: they are shared by every VIP")
	}
	return nil
}

// backendStatusJSON is the -o json form of `backend status`.
type backendStatusJSON struct {
	Decapsulators []backendDecapJSON `json:"decapsulators"`
}

type backendDecapJSON struct {
	Interface    string            `json:"interface"`
	Ifindex      int               `json:"ifindex"`
	Hook         string            `json:"hook"` // "tcx" or "tc"
	Stale        bool              `json:"stale"`
	LinkID       uint32            `json:"link_id"` // a TCX link pinned by an older dsrctl, else 0
	ProgramID    uint32            `json:"program_id"`
	Pins         string            `json:"pins"` // that link's pin directory, else ""
	VIPs         map[string]string `json:"vips"`
	IPIPPackets  uint64            `json:"ipip_packets"`
	GREPackets   uint64            `json:"gre_packets"`
	AdjustErrors uint64            `json:"adjust_errors"`
}

func backendShowStatus(h backendHost, cfg backendConfig, w io.Writer) error {
	atts, err := h.DecapList()
	if err != nil {
		return err
	}
	if cfg.Output == "json" {
		out := backendStatusJSON{Decapsulators: []backendDecapJSON{}}
		for _, a := range atts {
			d := backendDecapJSON{
				Interface: a.Ifname, Ifindex: a.Ifindex, Hook: string(a.Hook), Stale: a.Stale(),
				LinkID: a.LinkID, ProgramID: a.ProgID, Pins: a.Dir,
				VIPs:         map[string]string{},
				IPIPPackets:  a.Counters.IPIP,
				GREPackets:   a.Counters.GRE,
				AdjustErrors: a.Counters.AdjustErrors,
			}
			for v, m := range a.VIPs {
				d.VIPs[v.String()] = m.String()
			}
			out.Decapsulators = append(out.Decapsulators, d)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(atts) == 0 {
		fmt.Fprintln(w, "no eBPF decapsulator in this network namespace")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tIFINDEX\tHOOK\tPROG\tVIPS\tIPIP PKTS\tGRE PKTS\tERRORS")
	for _, a := range atts {
		var vips []string
		for _, v := range a.SortedVIPs() {
			vips = append(vips, v.String()+"/"+a.VIPs[v].String())
		}
		idx := fmt.Sprint(a.Ifindex)
		if a.Stale() {
			idx = "gone"
		}
		hook := string(a.Hook)
		if a.LinkID != 0 {
			hook += fmt.Sprintf(" (pinned link %d)", a.LinkID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\n", a.Ifname, idx, hook, a.ProgID,
			strings.Join(vips, ","), a.Counters.IPIP, a.Counters.GRE, a.Counters.AdjustErrors)
	}
	return tw.Flush()
}

// backendNetlinkHost is the real host: netlink in the current network
// namespace, /proc/sys/net/ipv4/conf, and the decapsulators on the
// interfaces (and pins an older dsrctl left under bpffs).
type backendNetlinkHost struct {
	bpffs string
	// collected is set once pins of dead namespaces have been freed.
	collected bool
}

func (h *backendNetlinkHost) Links() ([]backendLink, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	out := make([]backendLink, 0, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		out = append(out, backendLink{
			Name:     a.Name,
			Index:    a.Index,
			Kind:     l.Type(),
			Up:       a.Flags&net.FlagUp != 0,
			Loopback: a.Flags&net.FlagLoopback != 0,
			Ether:    a.EncapType == "ether",
			Enslaved: a.MasterIndex != 0,
		})
	}
	return out, nil
}

func (h *backendNetlinkHost) Addrs(dev string) ([]netip.Prefix, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, err
	}
	as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out, nil
}

func backendNetlinkAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func (h *backendNetlinkHost) AddAddr(dev string, p netip.Prefix) error {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return err
	}
	return netlink.AddrAdd(l, backendNetlinkAddr(p))
}

func (h *backendNetlinkHost) DelAddr(dev string, p netip.Prefix) error {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return err
	}
	return netlink.AddrDel(l, backendNetlinkAddr(p))
}

func (h *backendNetlinkHost) SetUp(dev string, up bool) error {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return err
	}
	if up {
		return netlink.LinkSetUp(l)
	}
	return netlink.LinkSetDown(l)
}

func (h *backendNetlinkHost) CreateTunnel(dev, kind string) error {
	attrs := netlink.LinkAttrs{Name: dev}
	var l netlink.Link
	switch kind {
	case "ipip":
		l = &netlink.Iptun{LinkAttrs: attrs, Local: net.IPv4zero, Remote: net.IPv4zero, PMtuDisc: 1}
	case "gre":
		// An IPv4 Local makes the library ask for "gre", not "ip6gre".
		l = &netlink.Gretun{LinkAttrs: attrs, Local: net.IPv4zero, Remote: net.IPv4zero, PMtuDisc: 1}
	default:
		return fmt.Errorf("unknown tunnel kind %q", kind)
	}
	err := netlink.LinkAdd(l)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w: %v", errBackendNoTunnel, err)
	}
	return err
}

func (h *backendNetlinkHost) SetSysctl(dev, key, value string) (string, error) {
	path := filepath.Join("/proc/sys/net/ipv4/conf", dev, key)
	old, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	o := strings.TrimSpace(string(old))
	if o == value {
		return o, nil
	}
	return o, os.WriteFile(path, []byte(value+"\n"), 0o644)
}

func (h *backendNetlinkHost) IPv6Disabled(dev string) (bool, error) {
	v, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", dev, "disable_ipv6"))
	if errors.Is(err, os.ErrNotExist) {
		return true, nil // a kernel without IPv6
	}
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(v)) != "0", nil
}

func (h *backendNetlinkHost) NDProxies(addr netip.Addr) ([]string, error) {
	ns, err := netlink.NeighProxyList(0, netlink.FAMILY_V6)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP); !ok || a != addr {
			continue
		}
		name := fmt.Sprint(n.LinkIndex)
		if l, err := netlink.LinkByIndex(n.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		out = append(out, name)
	}
	return out, nil
}

func (h *backendNetlinkHost) manager() decap.Manager { return decap.Manager{BPFFS: h.bpffs} }

func (h *backendNetlinkHost) DecapCheck(hook decap.Hook) error { return decap.Check(hook) }

func (h *backendNetlinkHost) DecapChangesFamily() (bool, error) { return decap.ChangesFamily() }

func (h *backendNetlinkHost) DecapAttach(l backendLink, vip netip.Addr, mode decap.Mode, hook decap.Hook) (decap.AttachResult, error) {
	if !h.collected {
		// Free what older dsrctl versions pinned for namespaces that
		// are gone.
		if _, err := decap.CollectGarbage(h.bpffs); err != nil {
			return decap.AttachResult{}, fmt.Errorf("collect stale pins: %w", err)
		}
		h.collected = true
	}
	return h.manager().Attach(l.Name, l.Index, vip, mode, hook)
}

func (h *backendNetlinkHost) DecapDetach(ifname string, vip netip.Addr, mode decap.Mode) (decap.DetachResult, error) {
	return h.manager().Detach(ifname, vip, mode)
}

func (h *backendNetlinkHost) DecapList() ([]decap.Attachment, error) {
	return h.manager().List()
}
