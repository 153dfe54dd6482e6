//go:build linux

package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dsrlb/dsrlb/cmd/dsrctl/decap"
)

// `dsrctl backend check` lists what this host lacks to serve a VIP by DSR,
// the things a load balancer's health check through the VIP finds missing
// (and the backend's own address does not show): the VIP on lo (or on the
// kernel tunnel device), ARP silenced for it, reverse path filtering that
// lets decapsulated packets in, the decapsulator for ipip and gre, and a
// listener on VIP:port. It changes nothing.

// backendFinding is one thing check looked at.
type backendFinding struct {
	ok   bool
	what string // what was checked, and what was found
	fix  string // when not ok: what to do
}

// backendCheckHost is what check reads besides backendHost: sysctls and the
// kernel's sockets.
type backendCheckHost interface {
	backendHost
	// Sysctl reads net.ipv4.conf.<dev>.<key>.
	Sysctl(dev, key string) (string, error)
	// Listening reports whether a socket of proto ("tcp" or "udp") is
	// bound to addr:port or to the wildcard address at port, listening
	// (tcp) or unconnected (udp).
	Listening(proto string, addr netip.Addr, port int) (bool, error)
}

func backendCheck(cfg backendConfig, w io.Writer) error {
	return backendRunCheck(&backendNetlinkHost{bpffs: cfg.BPFFS}, cfg, w)
}

// backendRunCheck prints one line per finding and returns an error when
// something is missing (exit code 1).
func backendRunCheck(h backendCheckHost, cfg backendConfig, w io.Writer) error {
	fs, err := backendFindings(h, cfg)
	if err != nil {
		return err
	}
	missing := 0
	for _, f := range fs {
		if f.ok {
			fmt.Fprintf(w, "ok       %s\n", f.what)
			continue
		}
		missing++
		fmt.Fprintf(w, "MISSING  %s\n         fix: %s\n", f.what, f.fix)
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d checks failed: this host does not serve %s by %s DSR", missing, len(fs), cfg.VIP, cfg.Mode)
	}
	fmt.Fprintf(w, "backend ready for VIP %s mode %s\n", cfg.VIP, cfg.Mode)
	return nil
}

func backendFindings(h backendCheckHost, cfg backendConfig) ([]backendFinding, error) {
	links, err := h.Links()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	data, err := backendDataLinks(links, cfg.Dev)
	if err != nil {
		return nil, err
	}
	var out []backendFinding
	add := func(ok bool, what, fix string) { out = append(out, backendFinding{ok, what, fix}) }
	setup := fmt.Sprintf("dsrctl backend setup --vip %s --mode %s", cfg.VIP, cfg.Mode)

	// The kernel tunnel device of ipip and gre, when there is one.
	var tunnel *backendLink
	if cfg.Mode != backendModeL2 {
		tun, kind := backendTunnel(cfg.Mode)
		for i := range links {
			if links[i].Name == tun && links[i].Kind == kind {
				tunnel = &links[i]
			}
		}
	}

	// The VIP as a /32 on lo (or the tunnel device), lo up.
	onLo, err := backendHasAddr(h, "lo", cfg.VIP)
	if err != nil {
		return nil, err
	}
	onTun := false
	if tunnel != nil {
		if onTun, err = backendHasAddr(h, tunnel.Name, cfg.VIP); err != nil {
			return nil, err
		}
	}
	pfx := backendVIPPrefix(cfg.VIP)
	switch {
	case onLo:
		add(true, fmt.Sprintf("VIP %s on lo", pfx), "")
	case onTun:
		add(true, fmt.Sprintf("VIP %s on %s", pfx, tunnel.Name), "")
	default:
		add(false, fmt.Sprintf("VIP %s on lo: absent, so the host drops (or forwards) what the load balancer hands it", pfx),
			fmt.Sprintf("ip addr add %s dev lo  (or %s)", pfx, setup))
	}
	for _, l := range links {
		if l.Loopback {
			add(l.Up, fmt.Sprintf("%s is up", l.Name), fmt.Sprintf("ip link set %s up", l.Name))
		}
	}

	// ARP: never answer for the VIP (arp_ignore >= 1), never announce it
	// (arp_announce = 2); the kernel uses the larger of "all" and the
	// interface's value. (IPv4 only, as rp_filter below: an IPv6 VIP on
	// lo is not answered by neighbour discovery on other interfaces.)
	v4 := cfg.VIP.Is4()
	for _, l := range data {
		if !v4 {
			break
		}
		for _, want := range []struct {
			key string
			min int
			why string
		}{{"arp_ignore", 1, "the host answers ARP for the VIP and takes the load balancer's traffic"},
			{"arp_announce", 2, "the host may announce the VIP as an ARP source"}} {
			eff, err := backendEffectiveSysctl(h, l.Name, want.key)
			if err != nil {
				return nil, err
			}
			add(eff >= want.min, fmt.Sprintf("%s on %s: %d (want >= %d)", want.key, l.Name, eff, want.min),
				fmt.Sprintf("sysctl -w net.ipv4.conf.all.%s=%d; otherwise %s", want.key, want.min, want.why))
		}
	}

	if cfg.Mode == backendModeL2 {
		return append(out, backendListener(h, cfg)...), nil
	}

	// Reverse path filtering: decapsulated packets come from the client,
	// through an interface the route to the client may not use; strict
	// filtering (1) drops them. The kernel uses the larger value.
	rpDevs := []string{}
	if tunnel != nil && onTun {
		rpDevs = append(rpDevs, tunnel.Name)
	} else {
		for _, l := range data {
			rpDevs = append(rpDevs, l.Name)
		}
	}
	for _, d := range rpDevs {
		if !v4 {
			break
		}
		eff, err := backendEffectiveSysctl(h, d, "rp_filter")
		if err != nil {
			return nil, err
		}
		add(eff != 1, fmt.Sprintf("rp_filter on %s: %d (want 0, or 2)", d, eff),
			fmt.Sprintf("sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.%s.rp_filter=0", d))
	}

	// The decapsulator: the kernel tunnel device holding the VIP, or the
	// eBPF decapsulator with the VIP in this mode on every data interface.
	switch {
	case tunnel != nil && onTun:
		add(tunnel.Up, fmt.Sprintf("decapsulator: kernel tunnel %s with the VIP, up", tunnel.Name), fmt.Sprintf("ip link set %s up", tunnel.Name))
	default:
		atts, err := h.DecapList()
		if err != nil {
			add(false, fmt.Sprintf("decapsulator: cannot list the eBPF decapsulators: %v", err), "run as root (CAP_SYS_ADMIN, CAP_BPF), or check with bpftool net")
			break
		}
		mode := backendDecapMode(cfg.Mode)
		for _, l := range data {
			has := slices.ContainsFunc(atts, func(a decap.Attachment) bool {
				return a.Ifname == l.Name && !a.Stale() && a.VIPs[cfg.VIP] == mode
			})
			add(has, fmt.Sprintf("decapsulator on %s for %s %s", l.Name, cfg.VIP, cfg.Mode),
				fmt.Sprintf("%s --dev %s: without it the %s envelope is never removed", setup, l.Name, cfg.Mode))
		}
	}
	return append(out, backendListener(h, cfg)...), nil
}

// backendListener checks for a socket on VIP:port when --port is given.
func backendListener(h backendCheckHost, cfg backendConfig) []backendFinding {
	if cfg.Port == 0 {
		return []backendFinding{{ok: true, what: "listener: not checked (no --port)"}}
	}
	ok, err := h.Listening(cfg.Proto, cfg.VIP, cfg.Port)
	addr := netip.AddrPortFrom(cfg.VIP, uint16(cfg.Port)) // [v6]:port
	any := "0.0.0.0"
	if cfg.VIP.Is6() {
		any = "[::]"
	}
	what := fmt.Sprintf("%s listener on %s (or on the wildcard address)", cfg.Proto, addr)
	if err != nil {
		return []backendFinding{{false, what + ": " + err.Error(), "check /proc/net/" + cfg.Proto}}
	}
	return []backendFinding{{ok, what, fmt.Sprintf("start the service on %s or %s:%d: a service bound to the host's own address only never sees the VIP's traffic", addr, any, cfg.Port)}}
}

// backendEffectiveSysctl is the larger of net.ipv4.conf.{all,dev}.key, as
// the kernel applies arp_ignore, arp_announce and rp_filter.
func backendEffectiveSysctl(h backendCheckHost, dev, key string) (int, error) {
	eff := 0
	for _, d := range []string{"all", dev} {
		v, err := h.Sysctl(d, key)
		if err != nil {
			return 0, fmt.Errorf("sysctl %s: %w", backendSysctlName(d, key), err)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("sysctl %s: %q is not a number", backendSysctlName(d, key), v)
		}
		eff = max(eff, n)
	}
	return eff, nil
}

func (h *backendNetlinkHost) Sysctl(dev, key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", dev, key))
	return strings.TrimSpace(string(b)), err
}

// Listening reads /proc/net/{tcp,udp}{,6}: sockets of this network
// namespace, local address in hex (IPv4 as a little-endian word), state
// 0A (listen) for tcp, 07 (unconnected) for udp.
func (h *backendNetlinkHost) Listening(proto string, addr netip.Addr, port int) (bool, error) {
	state := "0A"
	if proto == "udp" {
		state = "07"
	}
	for _, file := range []string{proto, proto + "6"} {
		f, err := os.Open("/proc/net/" + file)
		if os.IsNotExist(err) && file != proto {
			continue
		}
		if err != nil {
			return false, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != state {
				continue
			}
			local, ok := backendProcAddr(fields[1])
			if !ok || int(local.Port()) != port {
				continue
			}
			a := local.Addr()
			if a.Unmap() == addr || a.IsUnspecified() {
				f.Close()
				return true, nil
			}
		}
		f.Close()
	}
	return false, nil
}

// backendProcAddr parses a local address of /proc/net/tcp ("0100007F:0050")
// or tcp6 (32 hex digits, four little-endian words).
func backendProcAddr(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i+4 <= len(b); i += 4 { // each 32-bit word is in host (little-endian) order
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(port)), true
}
