package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultProbeInterval is how often Neighbors.Run asks the kernel to resolve
// or re-confirm the wanted neighbours.
const DefaultProbeInterval = time.Second

// NeighborOptions are the dependencies of a Neighbors.
type NeighborOptions struct {
	Options
	// OnChange is called (from Run's goroutine, with no lock held) when the
	// MAC of a wanted neighbour appears, changes or disappears; typically
	// Store.Recompile. Bursts of changes are coalesced into one call. It may
	// call back into the Neighbors.
	OnChange func()
	// ProbeInterval overrides DefaultProbeInterval.
	ProbeInterval time.Duration
}

// Neighbors mirrors the kernel's neighbour table for control's Neighbors
// interface and keeps the wanted next hops resolved. All methods are safe
// for concurrent use; Lookup never makes a syscall.
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
type Neighbors struct {
	log      zerolog.Logger
	onChange func()
	nl       nlHandle
	every    time.Duration
	kick     chan struct{}

	// mu guards the mirror and what depends on it. It is never held across
	// a syscall or a callback.
	mu      sync.RWMutex
	table   map[netip.Addr]map[int]neighEntry // ip → ifindex → usable entry
	wanted  map[netip.Addr]bool
	taps    map[string]Tap // registered taps by name
	tapIdx  map[int]bool   // their ifindexes
	tapNets []tapNet       // their subnets, longest prefix first
	pending bool           // a wanted neighbour changed since the last OnChange

	// Owned by Run's goroutine.
	routeLink map[netip.Addr]int
	probeErr  map[netip.Addr]bool
}

// linkLocal is the IPv6 link-local prefix (RFC 4291 2.5.6): on every tap
// with IPv6.
var linkLocal = netip.MustParsePrefix("fe80::/64")

type tapNet struct {
	index  int
	prefix netip.Prefix
}

// neighEntry is a neighbour with a usable MAC.
type neighEntry struct {
	mac   [6]byte
	state int
}

// neighHop is the result of picking a neighbour; it is comparable, so changes
// are easy to spot.
type neighHop struct {
	mac [6]byte
	ok  bool
}

// usableStates are the NUD states whose link-layer address may be used.
const usableStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// NewNeighbors returns a Neighbors for opts. It opens a netlink handle in
// opts.NetNS; if that fails, Run returns the error (and Lookup knows no
// neighbour).
func NewNeighbors(opts NeighborOptions) *Neighbors {
	nb := &Neighbors{
		log:       opts.Log,
		onChange:  opts.OnChange,
		nl:        openHandle(opts.NetNS),
		every:     opts.ProbeInterval,
		kick:      make(chan struct{}, 1),
		table:     map[netip.Addr]map[int]neighEntry{},
		wanted:    map[netip.Addr]bool{},
		taps:      map[string]Tap{},
		tapIdx:    map[int]bool{},
		routeLink: map[netip.Addr]int{},
		probeErr:  map[netip.Addr]bool{},
	}
	if nb.every <= 0 {
		nb.every = DefaultProbeInterval
	}
	return nb
}

// Close releases the netlink handle. Call it after Run has returned.
func (nb *Neighbors) Close() { nb.nl.close() }

// AddTap registers tap (replacing an earlier registration of its name):
// once any tap is registered, Lookup uses only neighbours on registered
// taps, and Run resolves a wanted address on the tap whose subnet holds it
// (IPv4 or IPv6; an IPv6 link-local next hop, such as a `gateway6` of
// fe80::1, on the lowest-numbered tap with IPv6).
func (nb *Neighbors) AddTap(tap Tap) {
	changed := nb.mutate(func() {
		nb.taps[tap.Name] = tap
		idx := map[int]bool{}
		var nets []tapNet
		for _, t := range nb.taps {
			idx[t.Index] = true
			nets = append(nets, tapNet{t.Index, t.Addr.Masked()})
			if t.Addr6.IsValid() {
				nets = append(nets, tapNet{t.Index, t.Addr6.Masked()})
			}
			if t.Addr.Addr().Is6() || t.Addr6.IsValid() {
				nets = append(nets, tapNet{t.Index, linkLocal})
			}
		}
		// Longest prefix first, so the most specific tap owns an address.
		sort.Slice(nets, func(i, j int) bool {
			if nets[i].prefix.Bits() != nets[j].prefix.Bits() {
				return nets[i].prefix.Bits() > nets[j].prefix.Bits()
			}
			return nets[i].index < nets[j].index
		})
		nb.tapIdx, nb.tapNets = idx, nets
	})
	if changed {
		nb.poke()
	}
}

// Lookup returns the MAC of neighbour ip from the mirror of the kernel's
// neighbour table: only usable entries (REACHABLE, STALE, DELAY, PROBE,
// PERMANENT, NOARP with an address), only on registered taps once any tap
// is registered, the lowest ifindex if several taps know ip. It implements
// control's Neighbors: no syscall, never waits for more than a map update.
func (nb *Neighbors) Lookup(ip netip.Addr) ([6]byte, bool) {
	nb.mu.RLock()
	defer nb.mu.RUnlock()
	h, _ := nb.pickLocked(ip.Unmap())
	return h.mac, h.ok
}

// pickLocked chooses the entry Lookup answers with, and its NUD state.
func (nb *Neighbors) pickLocked(ip netip.Addr) (neighHop, int) {
	best, h, state := -1, neighHop{}, 0
	for idx, e := range nb.table[ip] {
		if len(nb.tapIdx) > 0 && !nb.tapIdx[idx] {
			continue
		}
		if best < 0 || idx < best {
			best, h, state = idx, neighHop{e.mac, true}, e.state
		}
	}
	return h, state
}

// Want sets the addresses whose MACs are needed: the next hops of all
// backends (control's Typed.NextHops: the backend when on-link, else the
// port's gateway). Run triggers resolution of new ones at once and keeps
// all of them resolved; Want itself makes no syscall and never blocks, so
// it can be called from a Store.Subscribe callback. Lookup answers for addresses
// known to the kernel whether wanted or not; OnChange only fires for wanted
// ones.
func (nb *Neighbors) Want(addrs []netip.Addr) {
	w := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap(); a.IsValid() {
			w[a] = true
		}
	}
	nb.mu.Lock()
	nb.wanted = w
	nb.mu.Unlock()
	nb.poke()
}

func (nb *Neighbors) poke() {
	select {
	case nb.kick <- struct{}{}:
	default:
	}
}

// Run mirrors the kernel's neighbour table until ctx ends: it subscribes to
// neighbour notifications, then dumps the table (so nothing is missed),
// applies every update, calls OnChange when a wanted neighbour's MAC
// changed, and every ProbeInterval (and right after Want) triggers
// resolution of the wanted neighbours. If the subscription breaks (e.g. the
// socket buffer overflowed) it resubscribes and resynchronises from a fresh
// dump. It returns nil when ctx ends. Call it once per Neighbors.
func (nb *Neighbors) Run(ctx context.Context) error {
	if nb.nl.err != nil {
		return nb.nl.err
	}
	tick := time.NewTicker(nb.every)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := nb.follow(ctx, tick.C)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		nb.log.Warn().Err(err).Str("event", "neighbor_resync").Dur("backoff", backoff).Msg("neighbour subscription lost, resubscribing")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// follow runs one subscription until it fails or ctx ends.
func (nb *Neighbors) follow(ctx context.Context, tick <-chan time.Time) error {
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
	if nb.nl.useNS {
		ns := nb.nl.ns
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
	list, err := nb.nl.h.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("dump neighbours: %w", err)
	}
	nb.resync(list)
	nb.probe()
	nb.flush()

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
			nb.apply(u)
		drain: // coalesce a burst into one OnChange
			for range cap(ch) {
				select {
				case u, ok := <-ch:
					if !ok {
						break drain
					}
					nb.apply(u)
				default:
					break drain
				}
			}
			nb.flush()
		case <-tick:
			nb.probe()
			nb.flush()
		case <-nb.kick:
			nb.probe()
			nb.flush()
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
	usable = n.State&usableStates != 0 && e.mac != [6]byte{}
	return ip, e, true, usable
}

// apply folds one notification into the mirror.
func (nb *Neighbors) apply(u netlink.NeighUpdate) {
	ip, e, ok, usable := neighEntryOf(&u.Neigh)
	if !ok {
		return
	}
	if u.Type != unix.RTM_NEWNEIGH {
		usable = false
	}
	nb.mu.Lock()
	defer nb.mu.Unlock()
	wanted := nb.wanted[ip]
	var before neighHop
	if wanted {
		before, _ = nb.pickLocked(ip)
	}
	links := nb.table[ip]
	if usable {
		if links == nil {
			links = map[int]neighEntry{}
			nb.table[ip] = links
		}
		links[u.LinkIndex] = e
	} else if links != nil {
		delete(links, u.LinkIndex)
		if len(links) == 0 {
			delete(nb.table, ip)
		}
	}
	if wanted {
		if after, state := nb.pickLocked(ip); after != before {
			if !after.ok {
				state = e.state
			}
			nb.changedLocked(ip, before, after, state)
		}
	}
}

// resync replaces the mirror with a full dump.
func (nb *Neighbors) resync(list []netlink.Neigh) {
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
	nb.mutate(func() { nb.table = table })
}

// mutate runs fn under the lock and notes every wanted neighbour whose pick
// it changed; it reports whether there was one.
func (nb *Neighbors) mutate(fn func()) bool {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	before := make(map[netip.Addr]neighHop, len(nb.wanted))
	for ip := range nb.wanted {
		before[ip], _ = nb.pickLocked(ip)
	}
	fn()
	changed := false
	for ip := range nb.wanted {
		if after, state := nb.pickLocked(ip); after != before[ip] {
			nb.changedLocked(ip, before[ip], after, state)
			changed = true
		}
	}
	return changed
}

func (nb *Neighbors) changedLocked(ip netip.Addr, before, after neighHop, state int) {
	nb.pending = true
	ev := nb.log.Info().Str("event", "neighbor").Str("ip", ip.String())
	switch {
	case !after.ok:
		ev.Str("mac", "").Str("old_mac", macString(before.mac)).Str("state", nudName(state)).Msg("neighbour lost")
	case !before.ok:
		ev.Str("mac", macString(after.mac)).Str("state", nudName(state)).Msg("neighbour resolved")
	default:
		ev.Str("mac", macString(after.mac)).Str("old_mac", macString(before.mac)).Str("state", nudName(state)).Msg("neighbour changed")
	}
}

// flush calls OnChange if a wanted neighbour changed since the last call.
func (nb *Neighbors) flush() {
	nb.mu.Lock()
	p := nb.pending
	nb.pending = false
	nb.mu.Unlock()
	if p && nb.onChange != nil {
		nb.onChange()
	}
}

// probe asks the kernel to resolve (or re-confirm) every wanted neighbour
// with NTF_USE, on the tap whose subnet holds it (else the link the kernel
// routes it to), except static (PERMANENT, NOARP) ones.
func (nb *Neighbors) probe() {
	type job struct {
		ip  netip.Addr
		idx int
	}
	var jobs []job
	var unrouted []netip.Addr
	nb.mu.RLock()
	for ip := range nb.wanted {
		if nb.staticLocked(ip) {
			continue
		}
		idx := 0
		for _, n := range nb.tapNets {
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
	wanted := len(nb.wanted)
	nb.mu.RUnlock()

	for _, ip := range unrouted {
		idx, ok := nb.routeLink[ip]
		if !ok {
			idx = nb.routeIndex(ip)
			nb.routeLink[ip] = idx
		}
		if idx > 0 {
			jobs = append(jobs, job{ip, idx})
		}
	}
	if len(nb.routeLink) > 4*wanted+16 { // forget addresses no longer wanted
		clear(nb.routeLink)
	}
	var static map[netip.Addr]bool
	if len(jobs) > 0 {
		static = nb.kernelStatic()
	}
	for _, j := range jobs {
		if static[j.ip] {
			continue
		}
		err := nb.nl.h.NeighSet(&netlink.Neigh{LinkIndex: j.idx, IP: j.ip.AsSlice(), Flags: netlink.NTF_USE})
		switch {
		case err != nil && !nb.probeErr[j.ip]:
			nb.probeErr[j.ip] = true
			nb.log.Warn().Err(err).Str("event", "neighbor_probe_failed").Str("ip", j.ip.String()).Int("ifindex", j.idx).Msg("cannot trigger neighbour resolution")
			delete(nb.routeLink, j.ip) // re-route next time
		case err == nil && nb.probeErr[j.ip]:
			delete(nb.probeErr, j.ip)
		}
	}
}

// kernelStatic returns the addresses with a PERMANENT or NOARP entry in
// the kernel's table now, from a fresh dump: the mirror may not yet have
// applied the notification of a static entry added a moment ago (an
// operator's `ip neigh replace ... permanent`), and NTF_USE would turn that
// entry into a dynamic one (the kernel clears NUD_PERMANENT on use). On a
// failed dump it returns nil and the mirror's view (staticLocked) decides
// alone.
func (nb *Neighbors) kernelStatic() map[netip.Addr]bool {
	list, err := nb.nl.h.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		nb.log.Warn().Err(err).Str("event", "neighbor_dump_failed").Msg("cannot check for static neighbours before probing")
		return nil
	}
	static := map[netip.Addr]bool{}
	for i := range list {
		if list[i].State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) == 0 {
			continue
		}
		if ip, ok := netip.AddrFromSlice(list[i].IP); ok {
			static[ip.Unmap()] = true
		}
	}
	return static
}

// staticLocked reports whether every mirrored entry of ip is PERMANENT or
// NOARP, which NTF_USE must not touch.
func (nb *Neighbors) staticLocked(ip netip.Addr) bool {
	links := nb.table[ip]
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
func (nb *Neighbors) routeIndex(ip netip.Addr) int {
	routes, err := nb.nl.h.RouteGet(ip.AsSlice())
	if err != nil || len(routes) == 0 || routes[0].LinkIndex <= 0 {
		if !nb.probeErr[ip] {
			nb.probeErr[ip] = true
			nb.log.Warn().Err(err).Str("event", "neighbor_unroutable").Str("ip", ip.String()).Msg("no link to resolve neighbour on")
		}
		return -1
	}
	return routes[0].LinkIndex
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

// macString formats mac as pipeline.MAC does: lower-case hex, colons.
func macString(mac [6]byte) string { return net.HardwareAddr(mac[:]).String() }
