package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsrlb/dsrlb/pipeline"
)

// This file is the kernel side of the exception path (DESIGN.md, "Process
// model"): the kernel owns the appliance's own addresses and its VIPs on one
// tap per dataplane port, answers ARP and ICMP echo for them, and its
// neighbour table is where next-hop MACs come from.

// DefaultProbeInterval is how often Kernel.Run asks the kernel to resolve or
// re-confirm the wanted neighbours.
const DefaultProbeInterval = time.Second

// KernelOptions are the dependencies of a Kernel.
type KernelOptions struct {
	Log zerolog.Logger
	// OnChange is called (from Run's goroutine, with no Kernel lock held)
	// when the MAC of a wanted neighbour appears, changes or disappears;
	// typically Store.Recompile. Bursts of changes are coalesced into one
	// call. It may call back into the Kernel.
	OnChange func()
	// NetNS is the network namespace the taps live in. Zero (or -1, i.e.
	// netns.None()) means the namespace of the process. The Kernel does not
	// close it.
	NetNS netns.NsHandle
	// ProbeInterval overrides DefaultProbeInterval.
	ProbeInterval time.Duration
}

// Kernel manages the kernel's side of the taps: their addresses, sysctls and
// VIPs, and it mirrors the kernel's neighbour table for the Neighbors
// interface. All methods are safe for concurrent use; Lookup never makes a
// syscall.
//
// Neighbour resolution is the kernel's own ARP/ND state machine. For every
// wanted address Run sends, once per ProbeInterval, an RTM_NEWNEIGH with
// NTF_USE (what `ip neigh replace ADDR dev TAP use` does): the kernel creates
// the entry if needed and treats it as used, exactly as if a packet were
// queued to it. An unknown or FAILED entry goes INCOMPLETE and is resolved
// by broadcast; a REACHABLE entry that is used when its reachable time ends
// goes to DELAY and PROBE (unicast re-confirmation) instead of STALE, so
// wanted entries stay verified. STALE, DELAY and PROBE entries still carry a
// usable MAC; INCOMPLETE and FAILED ones do not. PERMANENT and NOARP entries
// are left alone (NTF_USE would clear PERMANENT).
type Kernel struct {
	log      zerolog.Logger
	onChange func()
	ns       netns.NsHandle // valid only when useNS
	useNS    bool
	every    time.Duration
	h        *netlink.Handle
	herr     error
	kick     chan struct{}

	// tapMu serialises ConfigureTap and SetVIPs and guards taps.
	tapMu sync.Mutex
	taps  map[string]*tapState

	// mu guards the neighbour mirror and what depends on it. It is never
	// held across a syscall or a callback.
	mu      sync.RWMutex
	table   map[netip.Addr]map[int]neighEntry // ip → ifindex → usable entry
	wanted  map[netip.Addr]bool
	tapIdx  map[int]bool // ifindexes of configured taps
	tapNets []tapNet
	pending bool // a wanted neighbour changed since the last OnChange

	// Owned by Run's goroutine.
	routeLink map[netip.Addr]int
	probeErr  map[netip.Addr]bool
}

type tapState struct {
	index  int
	addr   netip.Prefix
	v6Off  bool // ConfigureTap disabled IPv6 on it
	ifname string
}

type tapNet struct {
	index  int
	prefix netip.Prefix
}

// neighEntry is a neighbour with a usable MAC.
type neighEntry struct {
	mac   pipeline.MAC
	state int
}

// neighHop is the result of picking a neighbour; it is comparable, so changes
// are easy to spot.
type neighHop struct {
	mac pipeline.MAC
	ok  bool
}

// usableStates are the NUD states whose link-layer address may be used.
const usableStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// NewKernel returns a Kernel for opts. It opens a netlink handle in
// opts.NetNS; if that fails, every method that needs it (and Run) returns
// the error.
func NewKernel(opts KernelOptions) *Kernel {
	k := &Kernel{
		log:       opts.Log,
		onChange:  opts.OnChange,
		ns:        opts.NetNS,
		useNS:     opts.NetNS > 0,
		every:     opts.ProbeInterval,
		kick:      make(chan struct{}, 1),
		taps:      map[string]*tapState{},
		table:     map[netip.Addr]map[int]neighEntry{},
		wanted:    map[netip.Addr]bool{},
		tapIdx:    map[int]bool{},
		routeLink: map[netip.Addr]int{},
		probeErr:  map[netip.Addr]bool{},
	}
	if k.every <= 0 {
		k.every = DefaultProbeInterval
	}
	if k.useNS {
		k.h, k.herr = netlink.NewHandleAt(k.ns)
	} else {
		k.h, k.herr = netlink.NewHandle()
	}
	if k.herr != nil {
		k.herr = fmt.Errorf("netlink handle: %w", k.herr)
		return k
	}
	// No netlink request of ours may hang the caller (Store.Subscribe
	// callbacks hold the store lock).
	if err := k.h.SetSocketTimeout(2 * time.Second); err != nil {
		k.h.Close()
		k.h, k.herr = nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	return k
}

// Close releases the netlink handle. Call it after Run has returned.
func (k *Kernel) Close() {
	if k.h != nil {
		k.h.Close()
	}
}

// tapSysctl is one setting under /proc/sys/net; optional ones only log a
// warning when they cannot be set (IPv6 compiled out, read-only /proc/sys).
type tapSysctl struct {
	path, value string
	optional    bool
}

// ConfigureTap prepares tap ifname for the kernel's part of the exception
// path, idempotently:
//   - sysctls: arp_ignore=0 (answer ARP for every local address, VIPs
//     included), arp_announce=2 (ARP requests use the port address as
//     source, never a VIP), arp_notify=1 (gratuitous ARP when the tap comes
//     up), send_redirects=0 on the tap and on "all" (the kernel ORs the two;
//     this one is namespace-wide), accept_redirects=0, and, for an IPv4 port
//     address, disable_ipv6=1 (no link-local, DAD, router or MLD chatter on
//     the wire; SetVIPs turns IPv6 back on for IPv6 VIPs). Only arp_ignore is
//     required; failures of the others are logged;
//   - MTU mtu (when > 0), address addr (replacing its old prefix length), up;
//   - when gateway is valid and the namespace's main table has no default
//     route of gateway's family, a default route via gateway on the tap. An
//     existing default route (a container's, a management interface's) is
//     kept: the kernel's own traffic then leaves that way except to the
//     port's subnet. The route's preferred source is the port address.
//
// It also registers the tap: from now on only neighbours on registered taps
// are used by Lookup.
func (k *Kernel) ConfigureTap(ifname string, addr netip.Prefix, gateway netip.Addr, mtu int) error {
	if k.herr != nil {
		return k.herr
	}
	if !addr.IsValid() {
		return fmt.Errorf("tap %s: invalid address %v", ifname, addr)
	}
	addr = netip.PrefixFrom(addr.Addr().Unmap(), addr.Bits())
	gateway = gateway.Unmap()
	k.tapMu.Lock()
	defer k.tapMu.Unlock()

	link, err := k.h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("tap %s: %w", ifname, err)
	}
	attrs := link.Attrs()

	v4 := addr.Addr().Is4()
	sys := []tapSysctl{
		{"ipv4/conf/" + ifname + "/arp_ignore", "0", false},
		{"ipv4/conf/" + ifname + "/arp_announce", "2", true},
		{"ipv4/conf/" + ifname + "/arp_notify", "1", true},
		{"ipv4/conf/" + ifname + "/send_redirects", "0", true},
		{"ipv4/conf/all/send_redirects", "0", true},
		{"ipv4/conf/" + ifname + "/accept_redirects", "0", true},
	}
	if v4 {
		sys = append(sys, tapSysctl{"ipv6/conf/" + ifname + "/disable_ipv6", "1", true})
	} else {
		sys = append(sys, tapSysctl{"ipv6/conf/" + ifname + "/disable_ipv6", "0", false})
	}
	if err := k.setSysctls(ifname, sys); err != nil {
		return err
	}

	if mtu > 0 && attrs.MTU != mtu {
		if err := k.h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("tap %s: set mtu %d: %w", ifname, mtu, err)
		}
	}
	a := &netlink.Addr{IPNet: kernIPNet(addr)}
	if !v4 {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := k.h.AddrReplace(link, a); err != nil {
		return fmt.Errorf("tap %s: add address %s: %w", ifname, addr, err)
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := k.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("tap %s: set up: %w", ifname, err)
		}
	}
	if gateway.IsValid() {
		if err := k.ensureDefaultRoute(ifname, attrs.Index, gateway, addr.Addr()); err != nil {
			return err
		}
	}

	k.taps[ifname] = &tapState{index: attrs.Index, addr: addr, v6Off: v4, ifname: ifname}
	k.retapLocked()
	k.log.Info().Str("event", "tap_configured").Str("tap", ifname).Str("addr", addr.String()).
		Str("gateway", kernAddrString(gateway)).Int("mtu", mtu).Msg("tap configured")
	return nil
}

// retapLocked republishes the tap set to the neighbour mirror (tapMu held).
func (k *Kernel) retapLocked() {
	idx := map[int]bool{}
	var nets []tapNet
	for _, t := range k.taps {
		idx[t.index] = true
		nets = append(nets, tapNet{t.index, t.addr.Masked()})
	}
	// Longest prefix first, so the most specific tap owns an address.
	sort.Slice(nets, func(i, j int) bool {
		if nets[i].prefix.Bits() != nets[j].prefix.Bits() {
			return nets[i].prefix.Bits() > nets[j].prefix.Bits()
		}
		return nets[i].index < nets[j].index
	})
	changed := k.mutate(func() { k.tapIdx, k.tapNets = idx, nets })
	if changed {
		k.poke()
	}
}

func (k *Kernel) ensureDefaultRoute(ifname string, index int, gw, src netip.Addr) error {
	family := netlink.FAMILY_V4
	if gw.Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := k.h.RouteList(nil, family)
	if err != nil {
		return fmt.Errorf("tap %s: list routes: %w", ifname, err)
	}
	for _, r := range routes {
		if isDefaultRoute(r.Dst) {
			return nil
		}
	}
	r := &netlink.Route{LinkIndex: index, Gw: gw.AsSlice(), Protocol: unix.RTPROT_STATIC}
	if src.Is4() == gw.Is4() {
		r.Src = src.AsSlice() // the kernel's own traffic never leaves from a VIP
	}
	if err := k.h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("tap %s: default route via %s: %w", ifname, gw, err)
	}
	k.log.Info().Str("event", "default_route").Str("tap", ifname).Str("gateway", gw.String()).Msg("default route added")
	return nil
}

func isDefaultRoute(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}

// SetVIPs makes the VIP addresses on tap ifname exactly vips: each as a host
// address (/32 or /128), so the kernel answers ARP/ND and ICMP echo for it.
// Every other host-length address on the tap counts as a stale VIP and is
// removed (the tap is dsrlb's, and this also cleans up after a previous
// run); the port address set by ConfigureTap, which must come first, is
// never touched, nor are IPv6 link-local addresses. It is idempotent and
// makes only a few netlink calls, so it can run in a Store.Subscribe
// callback. It tries every change and returns the errors joined.
func (k *Kernel) SetVIPs(ifname string, vips []netip.Addr) error {
	if k.herr != nil {
		return k.herr
	}
	k.tapMu.Lock()
	defer k.tapMu.Unlock()
	ts := k.taps[ifname]
	if ts == nil {
		return fmt.Errorf("tap %s: not configured (call ConfigureTap first)", ifname)
	}
	link, err := k.h.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("tap %s: %w", ifname, err)
	}
	port := ts.addr.Addr()
	want := map[netip.Addr]bool{}
	v6 := false
	for _, v := range vips {
		v = v.Unmap()
		if !v.IsValid() || v == port {
			continue
		}
		want[v] = true
		v6 = v6 || v.Is6()
	}
	if v6 && ts.v6Off {
		if err := k.setSysctls(ifname, []tapSysctl{{"ipv6/conf/" + ifname + "/disable_ipv6", "0", false}}); err != nil {
			return err
		}
		ts.v6Off = false
	}
	have, err := k.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("tap %s: list addresses: %w", ifname, err)
	}
	var errs []error
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, bits := a.Mask.Size()
		if ones != bits || ip == port || ip.IsLinkLocalUnicast() {
			continue
		}
		if want[ip] {
			delete(want, ip)
			continue
		}
		if err := k.h.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: remove vip %s: %w", ifname, ip, err))
			continue
		}
		k.log.Info().Str("event", "vip_removed").Str("tap", ifname).Str("vip", ip.String()).Msg("vip removed from tap")
	}
	add := make([]netip.Addr, 0, len(want))
	for ip := range want {
		add = append(add, ip)
	}
	sort.Slice(add, func(i, j int) bool { return add[i].Less(add[j]) })
	for _, ip := range add {
		a := &netlink.Addr{IPNet: kernIPNet(netip.PrefixFrom(ip, ip.BitLen()))}
		if ip.Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := k.h.AddrReplace(link, a); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: add vip %s: %w", ifname, ip, err))
			continue
		}
		k.log.Info().Str("event", "vip_added").Str("tap", ifname).Str("vip", ip.String()).Msg("vip added to tap")
	}
	return errors.Join(errs...)
}

// Lookup returns the MAC of neighbour ip from the mirror of the kernel's
// neighbour table: only usable entries (REACHABLE, STALE, DELAY, PROBE,
// PERMANENT, NOARP with an address), only on configured taps once any tap
// is configured, the lowest ifindex if several taps know ip. It implements
// Neighbors: no syscall, never waits for more than a map update.
func (k *Kernel) Lookup(ip netip.Addr) (pipeline.MAC, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	h, _ := k.pickLocked(ip.Unmap())
	return h.mac, h.ok
}

// pickLocked chooses the entry Lookup answers with, and its NUD state.
func (k *Kernel) pickLocked(ip netip.Addr) (neighHop, int) {
	best, h, state := -1, neighHop{}, 0
	for idx, e := range k.table[ip] {
		if len(k.tapIdx) > 0 && !k.tapIdx[idx] {
			continue
		}
		if best < 0 || idx < best {
			best, h, state = idx, neighHop{e.mac, true}, e.state
		}
	}
	return h, state
}

// Want sets the addresses whose MACs are needed: the next hops of all
// backends (Typed.NextHop: the backend when on-link, else the port's
// gateway). Run triggers resolution of new ones at once and keeps all of
// them resolved; Want itself makes no syscall and never blocks, so it can be
// called from a Store.Subscribe callback. Lookup answers for addresses
// known to the kernel whether wanted or not; OnChange only fires for wanted
// ones.
func (k *Kernel) Want(addrs []netip.Addr) {
	w := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap(); a.IsValid() {
			w[a] = true
		}
	}
	k.mu.Lock()
	k.wanted = w
	k.mu.Unlock()
	k.poke()
}

// WantFor is Want with the next hops of every backend of t.
func (k *Kernel) WantFor(t *Typed) {
	var addrs []netip.Addr
	for _, s := range t.Services {
		for _, b := range s.Backends {
			if nh, port := t.NextHop(b.IP); port >= 0 && nh.IsValid() {
				addrs = append(addrs, nh)
			}
		}
	}
	k.Want(addrs)
}

func (k *Kernel) poke() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// Run mirrors the kernel's neighbour table until ctx ends: it subscribes to
// neighbour notifications, then dumps the table (so nothing is missed),
// applies every update, calls OnChange when a wanted neighbour's MAC
// changed, and every ProbeInterval (and right after Want) triggers
// resolution of the wanted neighbours. If the subscription breaks (e.g. the
// socket buffer overflowed) it resubscribes and resynchronises from a fresh
// dump. It returns nil when ctx ends. Call it once per Kernel.
func (k *Kernel) Run(ctx context.Context) error {
	if k.herr != nil {
		return k.herr
	}
	tick := time.NewTicker(k.every)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := k.follow(ctx, tick.C)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		k.log.Warn().Err(err).Str("event", "neighbor_resync").Dur("backoff", backoff).Msg("neighbour subscription lost, resubscribing")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// follow runs one subscription until it fails or ctx ends.
func (k *Kernel) follow(ctx context.Context, tick <-chan time.Time) error {
	ch := make(chan netlink.NeighUpdate, 1024)
	done := make(chan struct{})
	errc := make(chan error, 1)
	opts := netlink.NeighSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
		ReceiveBufferSize: 4 << 20, // capped by net.core.rmem_max
	}
	if k.useNS {
		ns := k.ns
		opts.Namespace = &ns
	}
	if err := netlink.NeighSubscribeWithOptions(ch, done, opts); err != nil {
		close(done)
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	defer func() {
		close(done)
		for range ch { // the library's reader closes ch once its socket is closed
		}
	}()

	// Subscribe first, dump second: updates queued meanwhile are applied
	// after the dump, so each entry ends in its latest state.
	list, err := k.h.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("dump neighbours: %w", err)
	}
	k.resync(list)
	k.probe()
	k.flush()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case u, ok := <-ch:
			if !ok {
				select {
				case err := <-errc:
					return err
				default:
					return errors.New("neighbour subscription closed")
				}
			}
			k.apply(u)
		drain: // coalesce a burst into one OnChange
			for range cap(ch) {
				select {
				case u, ok := <-ch:
					if !ok {
						break drain
					}
					k.apply(u)
				default:
					break drain
				}
			}
			k.flush()
		case <-tick:
			k.probe()
			k.flush()
		case <-k.kick:
			k.probe()
			k.flush()
		}
	}
}

// neighEntryOf converts a kernel neighbour into a mirror key and entry; ok is
// false for what the mirror ignores (bridge FDB, proxy entries); usable is
// false for entries without a usable MAC.
func neighEntryOf(n *netlink.Neigh) (ip netip.Addr, e neighEntry, ok, usable bool) {
	if n.Family != netlink.FAMILY_V4 && n.Family != netlink.FAMILY_V6 {
		return ip, e, false, false
	}
	if n.Flags&netlink.NTF_PROXY != 0 {
		return ip, e, false, false
	}
	ip, ok = netip.AddrFromSlice(n.IP)
	if !ok {
		return ip, e, false, false
	}
	ip = ip.Unmap()
	e.state = n.State
	if len(n.HardwareAddr) == len(e.mac) {
		copy(e.mac[:], n.HardwareAddr)
	}
	usable = n.State&usableStates != 0 && !e.mac.IsZero()
	return ip, e, true, usable
}

// apply folds one notification into the mirror.
func (k *Kernel) apply(u netlink.NeighUpdate) {
	ip, e, ok, usable := neighEntryOf(&u.Neigh)
	if !ok {
		return
	}
	if u.Type != unix.RTM_NEWNEIGH {
		usable = false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	wanted := k.wanted[ip]
	var before neighHop
	if wanted {
		before, _ = k.pickLocked(ip)
	}
	links := k.table[ip]
	if usable {
		if links == nil {
			links = map[int]neighEntry{}
			k.table[ip] = links
		}
		links[u.LinkIndex] = e
	} else if links != nil {
		delete(links, u.LinkIndex)
		if len(links) == 0 {
			delete(k.table, ip)
		}
	}
	if wanted {
		if after, state := k.pickLocked(ip); after != before {
			if !after.ok {
				state = e.state
			}
			k.changedLocked(ip, before, after, state)
		}
	}
}

// resync replaces the mirror with a full dump.
func (k *Kernel) resync(list []netlink.Neigh) {
	table := map[netip.Addr]map[int]neighEntry{}
	for i := range list {
		ip, e, ok, usable := neighEntryOf(&list[i])
		if !ok || !usable {
			continue
		}
		if table[ip] == nil {
			table[ip] = map[int]neighEntry{}
		}
		table[ip][list[i].LinkIndex] = e
	}
	k.mutate(func() { k.table = table })
}

// mutate runs fn under the lock and notes every wanted neighbour whose pick
// it changed; it reports whether there was one.
func (k *Kernel) mutate(fn func()) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	before := make(map[netip.Addr]neighHop, len(k.wanted))
	for ip := range k.wanted {
		before[ip], _ = k.pickLocked(ip)
	}
	fn()
	changed := false
	for ip := range k.wanted {
		if after, state := k.pickLocked(ip); after != before[ip] {
			k.changedLocked(ip, before[ip], after, state)
			changed = true
		}
	}
	return changed
}

func (k *Kernel) changedLocked(ip netip.Addr, before, after neighHop, state int) {
	k.pending = true
	ev := k.log.Info().Str("event", "neighbor").Str("ip", ip.String())
	switch {
	case !after.ok:
		ev.Str("mac", "").Str("old_mac", before.mac.String()).Str("state", nudName(state)).Msg("neighbour lost")
	case !before.ok:
		ev.Str("mac", after.mac.String()).Str("state", nudName(state)).Msg("neighbour resolved")
	default:
		ev.Str("mac", after.mac.String()).Str("old_mac", before.mac.String()).Str("state", nudName(state)).Msg("neighbour changed")
	}
}

// flush calls OnChange if a wanted neighbour changed since the last call.
func (k *Kernel) flush() {
	k.mu.Lock()
	p := k.pending
	k.pending = false
	k.mu.Unlock()
	if p && k.onChange != nil {
		k.onChange()
	}
}

// probe asks the kernel to resolve (or re-confirm) every wanted neighbour
// with NTF_USE, on the tap whose subnet holds it (else the link the kernel
// routes it to).
func (k *Kernel) probe() {
	type job struct {
		ip  netip.Addr
		idx int
	}
	var jobs []job
	var unrouted []netip.Addr
	k.mu.RLock()
	for ip := range k.wanted {
		if k.staticLocked(ip) {
			continue
		}
		idx := 0
		for _, n := range k.tapNets {
			if n.prefix.Contains(ip) {
				idx = n.index
				break
			}
		}
		if idx == 0 {
			unrouted = append(unrouted, ip)
			continue
		}
		jobs = append(jobs, job{ip, idx})
	}
	wanted := len(k.wanted)
	k.mu.RUnlock()

	for _, ip := range unrouted {
		idx, ok := k.routeLink[ip]
		if !ok {
			idx = k.routeIndex(ip)
			k.routeLink[ip] = idx
		}
		if idx > 0 {
			jobs = append(jobs, job{ip, idx})
		}
	}
	if len(k.routeLink) > 4*wanted+16 { // forget addresses no longer wanted
		clear(k.routeLink)
	}
	for _, j := range jobs {
		err := k.h.NeighSet(&netlink.Neigh{LinkIndex: j.idx, IP: j.ip.AsSlice(), Flags: netlink.NTF_USE})
		switch {
		case err != nil && !k.probeErr[j.ip]:
			k.probeErr[j.ip] = true
			k.log.Warn().Err(err).Str("event", "neighbor_probe_failed").Str("ip", j.ip.String()).Int("ifindex", j.idx).Msg("cannot trigger neighbour resolution")
			delete(k.routeLink, j.ip) // re-route next time
		case err == nil && k.probeErr[j.ip]:
			delete(k.probeErr, j.ip)
		}
	}
}

// staticLocked reports whether every mirrored entry of ip is PERMANENT or
// NOARP, which NTF_USE must not touch.
func (k *Kernel) staticLocked(ip netip.Addr) bool {
	links := k.table[ip]
	if len(links) == 0 {
		return false
	}
	for _, e := range links {
		if e.state&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) == 0 {
			return false
		}
	}
	return true
}

// routeIndex returns the ifindex the kernel routes ip to, or -1.
func (k *Kernel) routeIndex(ip netip.Addr) int {
	routes, err := k.h.RouteGet(ip.AsSlice())
	if err != nil || len(routes) == 0 || routes[0].LinkIndex <= 0 {
		if !k.probeErr[ip] {
			k.probeErr[ip] = true
			k.log.Warn().Err(err).Str("event", "neighbor_unroutable").Str("ip", ip.String()).Msg("no link to resolve neighbour on")
		}
		return -1
	}
	return routes[0].LinkIndex
}

// setSysctls writes settings under /proc/sys/net in the Kernel's namespace.
func (k *Kernel) setSysctls(ifname string, list []tapSysctl) error {
	return k.inNetNS(func() error {
		for _, s := range list {
			p := filepath.Join("/proc/sys/net", s.path)
			if cur, err := os.ReadFile(p); err == nil && string(bytes.TrimSpace(cur)) == s.value {
				continue
			}
			err := os.WriteFile(p, []byte(s.value), 0o644)
			if err == nil {
				continue
			}
			if !s.optional {
				return fmt.Errorf("tap %s: sysctl %s=%s: %w", ifname, s.path, s.value, err)
			}
			k.log.Warn().Err(err).Str("event", "sysctl_failed").Str("tap", ifname).Str("sysctl", s.path).Str("value", s.value).Msg("optional sysctl not set")
		}
		return nil
	})
}

// inNetNS runs fn in the Kernel's namespace. /proc/sys/net belongs to the
// namespace of the thread that opens it, so fn runs on a fresh OS thread
// that is switched into the namespace and never switched back: it stays
// locked and the runtime discards it when the goroutine ends, so no other
// goroutine can ever run in the wrong namespace.
func (k *Kernel) inNetNS(fn func() error) error {
	if !k.useNS {
		return fn()
	}
	return runInNetNS(k.ns, fn)
}

func runInNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func kernIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func kernAddrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func nudName(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "incomplete"}, {netlink.NUD_REACHABLE, "reachable"},
		{netlink.NUD_STALE, "stale"}, {netlink.NUD_DELAY, "delay"}, {netlink.NUD_PROBE, "probe"},
		{netlink.NUD_FAILED, "failed"}, {netlink.NUD_NOARP, "noarp"}, {netlink.NUD_PERMANENT, "permanent"},
	}
	for _, n := range names {
		if s&n.bit != 0 {
			return n.name
		}
	}
	return "none"
}

// QuietSharedInterface stops the kernel's own IP stack from answering on
// ifname, an interface a DPDK af_packet port reads beside the kernel: the
// kernel sees every frame too, and since the port and VIP addresses are
// local (on the tap) it would otherwise answer ARP for them and reset TCP
// connections to the VIP. It sets arp_ignore=8 (never answer ARP),
// rp_filter=1 (no address, so every IPv4 packet fails the reverse-path
// check) and disables IPv6 there. Idempotent.
func (k *Kernel) QuietSharedInterface(ifname string) error {
	return k.setSysctls(ifname, []tapSysctl{
		{path: "ipv4/conf/" + ifname + "/arp_ignore", value: "8"},
		{path: "ipv4/conf/" + ifname + "/rp_filter", value: "1"},
		{path: "ipv6/conf/" + ifname + "/disable_ipv6", value: "1", optional: true},
	})
}
