package kernel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsrlb/dsrlb/control/kernel/nsrun"
)

// TestKernelMirror feeds notifications straight into the mirror: which
// entries Lookup uses and when OnChange is due.
func TestKernelMirror(t *testing.T) {
	k := NewNeighbors(NeighborOptions{Options: Options{Log: zerolog.New(zerolog.NewTestWriter(t))}})
	t.Cleanup(k.Close)
	ip := netip.MustParseAddr("192.0.2.7")
	other := netip.MustParseAddr("192.0.2.8")
	macA, macB := [6]byte{2, 0, 0, 0, 0, 0xa}, [6]byte{2, 0, 0, 0, 0, 0xb}
	neigh := func(typ uint16, link int, ip netip.Addr, mac [6]byte, state, flags int) netlink.NeighUpdate {
		n := netlink.Neigh{LinkIndex: link, Family: netlink.FAMILY_V4, State: state, Flags: flags, IP: ip.AsSlice()}
		if mac != ([6]byte{}) {
			n.HardwareAddr = net.HardwareAddr(mac[:])
		}
		return netlink.NeighUpdate{Type: typ, Neigh: n}
	}
	k.Want([]netip.Addr{ip})
	k.AddTap(Tap{Name: "t5", Index: 5, Addr: netip.MustParsePrefix("192.0.2.1/24")})
	k.AddTap(Tap{Name: "t6", Index: 6, Addr: netip.MustParsePrefix("198.51.100.1/24")})

	steps := []struct {
		desc    string
		u       netlink.NeighUpdate
		want    neighHop
		changed bool
	}{
		{"incomplete has no MAC", neigh(unix.RTM_NEWNEIGH, 5, ip, [6]byte{}, netlink.NUD_INCOMPLETE, 0), neighHop{}, false},
		{"non-tap link ignored", neigh(unix.RTM_NEWNEIGH, 2, ip, macB, netlink.NUD_REACHABLE, 0), neighHop{}, false},
		{"proxy entry ignored", neigh(unix.RTM_NEWNEIGH, 5, ip, macB, netlink.NUD_PERMANENT, netlink.NTF_PROXY), neighHop{}, false},
		{"reachable on tap", neigh(unix.RTM_NEWNEIGH, 6, ip, macB, netlink.NUD_REACHABLE, 0), neighHop{macB, true}, true},
		{"stale still usable", neigh(unix.RTM_NEWNEIGH, 6, ip, macB, netlink.NUD_STALE, 0), neighHop{macB, true}, false},
		{"lower ifindex preferred", neigh(unix.RTM_NEWNEIGH, 5, ip, macA, netlink.NUD_DELAY, 0), neighHop{macA, true}, true},
		{"failed drops entry", neigh(unix.RTM_NEWNEIGH, 5, ip, [6]byte{}, netlink.NUD_FAILED, 0), neighHop{macB, true}, true},
		{"unwanted address", neigh(unix.RTM_NEWNEIGH, 5, other, macA, netlink.NUD_REACHABLE, 0), neighHop{macB, true}, false},
		{"delete", neigh(unix.RTM_DELNEIGH, 6, ip, macB, netlink.NUD_STALE, 0), neighHop{}, true},
	}
	for _, s := range steps {
		k.apply(s.u)
		mac, ok := k.Lookup(ip)
		if got := (neighHop{mac, ok}); got != s.want {
			t.Errorf("%s: Lookup = %v %v, want %v %v", s.desc, got.mac, got.ok, s.want.mac, s.want.ok)
		}
		k.mu.Lock()
		changed := k.pending
		k.pending = false
		k.mu.Unlock()
		if changed != s.changed {
			t.Errorf("%s: change noted = %v, want %v", s.desc, changed, s.changed)
		}
	}
	if mac, ok := k.Lookup(other); !ok || mac != macA {
		t.Errorf("Lookup(unwanted %s) = %v %v, want %v true", other, mac, ok, macA)
	}
}

// TestKernel runs Taps, VIPs and Neighbors against real kernels: a private
// namespace holds the "tap" (one end of a veth) and a peer namespace holds
// a neighbour at 10.254.0.2. No packet leaves the two namespaces.
func TestKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	name := fmt.Sprintf("dsrkern-%d", os.Getpid())
	nsA := kernNewNetNS(t, name+"-a")
	nsB := kernNewNetNS(t, name+"-b")
	hA, hB := kernHandle(t, nsA), kernHandle(t, nsB)

	const tap, peerName = "dsr-t0", "peer0"
	mac1 := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x02}
	mac2 := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x03}
	mac3 := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x04}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: tap}, PeerName: peerName,
		PeerHardwareAddr: mac1, PeerNamespace: netlink.NsFd(int(nsB))}
	if err := hA.LinkAdd(veth); err != nil {
		t.Fatalf("create veth: %v", err)
	}
	peer, err := hB.LinkByName(peerName)
	if err != nil {
		t.Fatal(err)
	}
	// The peer announces a MAC change with a gratuitous ARP, as real hosts
	// with arp_notify (or keepalived, or a failover NIC) do.
	if err := nsrun.Do(nsB, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+peerName+"/arp_notify", []byte("1"), 0o644); err != nil {
			return err
		}
		// Its IPv6 link-local address is usable at once.
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+peerName+"/accept_dad", []byte("0"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	if err := hB.AddrAdd(peer, kernMustAddr(t, "10.254.0.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := hB.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}

	var changes atomic.Int32
	opts := Options{Log: zerolog.New(zerolog.NewTestWriter(t)), NetNS: nsA}
	taps, vips := NewTaps(opts), NewVIPs(opts)
	t.Cleanup(taps.Close)
	t.Cleanup(vips.Close)
	k := NewNeighbors(NeighborOptions{Options: opts, OnChange: func() { changes.Add(1) }})
	t.Cleanup(k.Close)

	portAddr := netip.MustParsePrefix("10.254.0.1/24")
	gw := netip.MustParseAddr("10.254.0.254")
	var tapInfo Tap

	t.Run("Taps.Configure", func(t *testing.T) {
		for i := range 2 { // idempotent
			got, err := taps.Configure(tap, TapConfig{Addr: portAddr, Gateway: gw, MTU: 1400})
			if err != nil {
				t.Fatalf("Configure #%d: %v", i+1, err)
			}
			tapInfo = got
		}
		link, err := hA.LinkByName(tap)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Tap{Name: tap, Index: link.Attrs().Index, Addr: portAddr}); tapInfo != want {
			t.Errorf("Configure = %+v, want %+v", tapInfo, want)
		}
		if got := link.Attrs().MTU; got != 1400 {
			t.Errorf("MTU = %d, want 1400", got)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("tap is not up")
		}
		if got := kernIfAddrs(t, hA, tap, false); !slices.Equal(got, []string{"10.254.0.1/24"}) {
			t.Errorf("addresses = %v, want [10.254.0.1/24]", got)
		}
		defaults := kernDefaultRoutes(t, hA, netlink.FAMILY_V4)
		wantRoute := fmt.Sprintf("via %s dev %d src %s", gw, link.Attrs().Index, portAddr.Addr())
		if !slices.Equal(defaults, []string{wantRoute}) {
			t.Errorf("default routes = %q, want [%q]", defaults, wantRoute)
		}
		for _, s := range []struct{ path, want string }{
			{"ipv4/conf/" + tap + "/arp_ignore", "0"},
			{"ipv4/conf/" + tap + "/arp_announce", "2"},
			{"ipv4/conf/" + tap + "/send_redirects", "0"},
			{"ipv4/conf/all/send_redirects", "0"},
			{"ipv6/conf/" + tap + "/disable_ipv6", "1"},
		} {
			if got := kernReadSysctl(t, nsA, s.path); got != s.want {
				t.Errorf("sysctl %s = %q, want %q", s.path, got, s.want)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("VIPs.Set", func(t *testing.T) {
		if err := vips.Set(Tap{Name: "dsr-nope"}, nil); err == nil {
			t.Errorf("Set on an unconfigured tap: no error")
		}
		if err := vips.Set(Tap{Name: "dsr-nope", Addr: portAddr}, nil); err == nil {
			t.Errorf("Set on a missing tap: no error")
		}
		steps := []struct {
			desc string
			vips []string
			want []string
		}{
			{"add two", []string{"10.0.0.11", "10.0.0.10"}, []string{"10.0.0.10/32", "10.0.0.11/32"}},
			{"again", []string{"10.0.0.10", "10.0.0.11"}, []string{"10.0.0.10/32", "10.0.0.11/32"}},
			{"replace one, port address ignored", []string{"10.0.0.12", "10.0.0.11", "10.254.0.1"}, []string{"10.0.0.11/32", "10.0.0.12/32"}},
			{"ipv6 vip", []string{"10.0.0.11", "2001:db8::10"}, []string{"10.0.0.11/32", "2001:db8::10/128"}},
			{"none", nil, nil},
			{"none again", nil, nil},
		}
		for _, s := range steps {
			kernSetVIPs(t, vips, tapInfo, s.desc, s.vips)
			if got := kernIfAddrs(t, hA, tap, true); !slices.Equal(got, s.want) {
				t.Errorf("%s: VIPs on tap = %v, want %v", s.desc, got, s.want)
			}
			if got := kernIfAddrs(t, hA, tap, false); !slices.Contains(got, portAddr.String()) {
				t.Errorf("%s: port address gone: %v", s.desc, got)
			}
		}
		// An IPv6 VIP turned IPv6 on beside the IPv4 port address.
		if got := kernReadSysctl(t, nsA, "ipv6/conf/"+tap+"/disable_ipv6"); got != "0" {
			t.Errorf("after an IPv6 VIP: disable_ipv6 = %q, want \"0\"", got)
		}
	})

	t.Run("Neighbors", func(t *testing.T) {
		k.AddTap(tapInfo)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- k.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()

		backend := netip.MustParseAddr("10.254.0.2")
		if mac, ok := k.Lookup(backend); ok {
			t.Fatalf("Lookup(%s) before Want = %v, want nothing", backend, mac)
		}
		k.Want([]netip.Addr{backend})
		kernWaitFor(t, 2*time.Second, fmt.Sprintf("Lookup(%s) = %s and OnChange", backend, mac1), func() bool {
			mac, ok := k.Lookup(backend)
			return ok && net.HardwareAddr(mac[:]).String() == mac1.String() && changes.Load() > 0
		})

		before := changes.Load()
		if err := hB.LinkSetHardwareAddr(peer, mac2); err != nil {
			t.Fatal(err)
		}
		kernWaitFor(t, 2*time.Second, fmt.Sprintf("Lookup(%s) = %s after the MAC change, and OnChange", backend, mac2), func() bool {
			mac, ok := k.Lookup(backend)
			return ok && net.HardwareAddr(mac[:]).String() == mac2.String() && changes.Load() > before
		})

		// No longer wanted: the mirror follows, OnChange stays quiet.
		k.Want(nil)
		before = changes.Load()
		if err := hB.LinkSetHardwareAddr(peer, mac3); err != nil {
			t.Fatal(err)
		}
		kernWaitFor(t, 2*time.Second, fmt.Sprintf("Lookup(%s) = %s", backend, mac3), func() bool {
			mac, ok := k.Lookup(backend)
			return ok && net.HardwareAddr(mac[:]).String() == mac3.String()
		})
		time.Sleep(100 * time.Millisecond)
		if got := changes.Load(); got != before {
			t.Errorf("OnChange calls for an unwanted neighbour: %d, want 0", got-before)
		}
	})

	// The port gains an IPv6 address and gateway (`ip6`, `gateway6`); the
	// peer a global and a link-local IPv6 address.
	portAddr6 := netip.MustParsePrefix("fd00:254::1/64")
	gw6 := netip.MustParseAddr("fd00:254::fe")
	peer6 := netip.MustParseAddr("fd00:254::2")
	if err := hB.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(peer6, 64)), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}

	t.Run("Taps.Configure IPv6", func(t *testing.T) {
		for i := range 2 { // idempotent
			got, err := taps.Configure(tap, TapConfig{Addr: portAddr, Gateway: gw, Addr6: portAddr6, Gateway6: gw6, MTU: 1400})
			if err != nil {
				t.Fatalf("Configure #%d: %v", i+1, err)
			}
			tapInfo = got
		}
		link, err := hA.LinkByName(tap)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Tap{Name: tap, Index: link.Attrs().Index, Addr: portAddr, Addr6: portAddr6}); tapInfo != want {
			t.Errorf("Configure = %+v, want %+v", tapInfo, want)
		}
		if got, want := kernIfAddrs(t, hA, tap, false), []string{"10.254.0.1/24", "fd00:254::1/64"}; !slices.Equal(got, want) {
			t.Errorf("addresses = %v, want %v", got, want)
		}
		defaults := kernDefaultRoutes(t, hA, netlink.FAMILY_V6)
		wantRoute := fmt.Sprintf("via %s dev %d src %s", gw6, link.Attrs().Index, portAddr6.Addr())
		if !slices.Equal(defaults, []string{wantRoute}) {
			t.Errorf("IPv6 default routes = %q, want [%q]", defaults, wantRoute)
		}
		for _, s := range []struct{ path, want string }{
			{"ipv6/conf/" + tap + "/disable_ipv6", "0"},
			{"ipv6/conf/" + tap + "/autoconf", "0"},
			{"ipv6/conf/" + tap + "/accept_dad", "0"},
			{"ipv6/conf/" + tap + "/accept_redirects", "0"},
			{"ipv6/conf/" + tap + "/accept_ra_defrtr", "0"},
			{"ipv4/conf/" + tap + "/arp_ignore", "0"},
		} {
			if got := kernReadSysctl(t, nsA, s.path); got != s.want {
				t.Errorf("sysctl %s = %q, want %q", s.path, got, s.want)
			}
		}
		for _, bad := range []TapConfig{
			{Addr: portAddr, Addr6: netip.MustParsePrefix("10.0.0.1/24")},
			{Addr: portAddr6, Addr6: portAddr6},
			{Addr: portAddr, Gateway6: gw6},
		} {
			if _, err := taps.Configure(tap, bad); err == nil {
				t.Errorf("Configure(%+v): no error", bad)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("VIPs.Set IPv6", func(t *testing.T) {
		steps := []struct {
			desc string
			vips []string
			want []string
		}{
			{"v4 and v6, port addresses ignored", []string{"10.0.0.10", "2001:db8::10", "fd00:254::1", "10.254.0.1"}, []string{"10.0.0.10/32", "2001:db8::10/128"}},
			{"v6 only", []string{"2001:db8::11"}, []string{"2001:db8::11/128"}},
			{"none", nil, nil},
		}
		for _, s := range steps {
			kernSetVIPs(t, vips, tapInfo, s.desc, s.vips)
			if got := kernIfAddrs(t, hA, tap, true); !slices.Equal(got, s.want) {
				t.Errorf("%s: VIPs on tap = %v, want %v", s.desc, got, s.want)
			}
			if got, want := kernIfAddrs(t, hA, tap, false), []string{"10.254.0.1/24", "fd00:254::1/64"}; !slices.Equal(got, want) {
				t.Errorf("%s: port addresses = %v, want %v", s.desc, got, want)
			}
		}

		// An IPv6 VIP is deprecated, so the kernel's own packets (health
		// checks) leave from the port's ip6, never from a VIP; one left
		// preferred by an older run is made deprecated.
		vip := netip.MustParseAddr("fd00:254::100") // the closer match to the peer than fd00:254::1
		link, err := hA.LinkByName(tap)
		if err != nil {
			t.Fatal(err)
		}
		if err := hA.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(vip, 128)), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatal(err)
		}
		if err := vips.Set(tapInfo, []netip.Addr{vip}); err != nil {
			t.Fatal(err)
		}
		addrs, err := hA.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if a.IP.Equal(vip.AsSlice()) && (a.PreferedLft != 0 || a.ValidLft != infiniteLifetime) {
				t.Errorf("VIP %s: preferred lifetime %d, valid %d; want 0 and forever", vip, a.PreferedLft, a.ValidLft)
			}
		}
		routes, err := hA.RouteGet(net.ParseIP("fd00:254::2"))
		if err != nil || len(routes) != 1 {
			t.Fatalf("route get: %v %v", routes, err)
		}
		if src := routes[0].Src.String(); src != portAddr6.Addr().String() {
			t.Errorf("the kernel's source towards fd00:254::2 is %s, want the port's %s", src, portAddr6.Addr())
		}
		if err := vips.Set(tapInfo, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Neighbors IPv6", func(t *testing.T) {
		// A fresh mirror: Run is called once per Neighbors.
		var changes6 atomic.Int32
		k6 := NewNeighbors(NeighborOptions{Options: opts, OnChange: func() { changes6.Add(1) }})
		t.Cleanup(k6.Close)
		k6.AddTap(tapInfo)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- k6.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		link, err := hB.LinkByName(peerName)
		if err != nil {
			t.Fatal(err)
		}
		peerMAC := link.Attrs().HardwareAddr.String()
		var peerLL netip.Addr
		lls, err := hB.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range lls {
			if ip, _ := netip.AddrFromSlice(a.IP); ip.IsLinkLocalUnicast() {
				peerLL = ip
			}
		}
		if !peerLL.IsValid() {
			t.Fatalf("peer has no link-local address: %v", lls)
		}

		// A static (PERMANENT) neighbour is used as it is and never probed
		// (NTF_USE would turn it into a dynamic entry).
		static := netip.MustParseAddr("fd00:254::3")
		staticMAC := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x33}
		if err := hA.NeighAdd(&netlink.Neigh{LinkIndex: tapInfo.Index, Family: netlink.FAMILY_V6, State: netlink.NUD_PERMANENT,
			IP: static.AsSlice(), HardwareAddr: staticMAC}); err != nil {
			t.Fatal(err)
		}

		// The global next hop (a backend on the port's IPv6 subnet) and a
		// link-local one (a gateway6 such as fe80::1) both resolve by
		// neighbour discovery on the tap.
		k6.Want([]netip.Addr{peer6, peerLL, static})
		for _, ip := range []netip.Addr{peer6, peerLL} {
			kernWaitFor(t, 3*time.Second, fmt.Sprintf("Lookup(%s) = %s", ip, peerMAC), func() bool {
				mac, ok := k6.Lookup(ip)
				return ok && net.HardwareAddr(mac[:]).String() == peerMAC
			})
		}
		// OnChange follows the mirror's update (after the burst of
		// notifications is drained), so Lookup may answer first.
		kernWaitFor(t, time.Second, "OnChange after IPv6 neighbours resolved", func() bool { return changes6.Load() > 0 })
		if mac, ok := k6.Lookup(static); !ok || net.HardwareAddr(mac[:]).String() != staticMAC.String() {
			t.Errorf("Lookup(static %s) = %v %v, want %s", static, mac, ok, staticMAC)
		}
		time.Sleep(2 * DefaultProbeInterval) // a few probe rounds
		ns, err := hA.NeighList(tapInfo.Index, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			if n.IP.Equal(static.AsSlice()) && n.State != netlink.NUD_PERMANENT {
				t.Errorf("static neighbour %s: state %s after probes, want permanent", static, nudName(n.State))
			}
		}
	})
}

// kernNewNetNS creates a named network namespace, removed in t.Cleanup.
// NewNamed switches the calling thread into the new namespace, so it runs
// on a throwaway locked thread.
func kernNewNetNS(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	_ = netns.DeleteNamed(name) // left over by a crashed run with the same pid
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Skipf("cannot create network namespace %s: %v", name, r.err)
	}
	t.Cleanup(func() {
		r.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return r.h
}

func kernHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// kernIfAddrs lists the global addresses of ifname as prefixes, sorted: host
// routes (/32, /128) only, or all but those.
func kernIfAddrs(t *testing.T, h *netlink.Handle, ifname string, host bool) []string {
	t.Helper()
	link, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		ones, bits := a.Mask.Size()
		if a.IP.IsLinkLocalUnicast() || (ones == bits) != host {
			continue
		}
		out = append(out, a.IPNet.String())
	}
	slices.Sort(out)
	return out
}

// kernSetVIPs calls vips.Set(tap, list) and ends t if it fails (step desc).
func kernSetVIPs(t *testing.T, vips *VIPs, tap Tap, desc string, list []string) {
	t.Helper()
	var addrs []netip.Addr
	for _, v := range list {
		addrs = append(addrs, netip.MustParseAddr(v))
	}
	if err := vips.Set(tap, addrs); err != nil {
		t.Fatalf("%s: Set(%v): %v", desc, list, err)
	}
}

// kernDefaultRoutes lists the default routes of a family in h's main
// table as "via GW dev IFINDEX src SRC".
func kernDefaultRoutes(t *testing.T, h *netlink.Handle, family int) []string {
	t.Helper()
	routes, err := h.RouteList(nil, family)
	if err != nil {
		t.Fatal(err)
	}
	var defaults []string
	for _, r := range routes {
		if isDefaultRoute(r.Dst) {
			defaults = append(defaults, fmt.Sprintf("via %s dev %d src %s", r.Gw, r.LinkIndex, r.Src))
		}
	}
	return defaults
}

func kernReadSysctl(t *testing.T, ns netns.NsHandle, path string) string {
	t.Helper()
	var v []byte
	err := nsrun.Do(ns, func() (err error) {
		v, err = os.ReadFile(filepath.Join("/proc/sys/net", path))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

func kernMustAddr(t *testing.T, s string) *netlink.Addr {
	t.Helper()
	a, err := netlink.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func kernWaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: no %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
