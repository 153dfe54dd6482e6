package nsbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Backend is a DSR backend host: the VIP on lo, ARP for it silenced, and
// backendsrv answering.
type Backend struct {
	Name string
	NS   *NS
	IP   netip.Addr // its own address
	// IP6 is its own IPv6 address in a bed with IPv6 (the zero Addr
	// otherwise): backendsrv then serves both families.
	IP6   netip.Addr
	Iface string // the interface facing the load balancer
	MAC   string
	Proc  *Proc
}

// SetupDSRBackend makes ns a DSR backend for vip in mode (l2, ipip, gre)
// with `dsrctl backend setup --vip V --mode M --dev IFACE` and, for every
// mode, checks what a Linux DSR backend needs: the VIP as a
// /32 on lo, arp_ignore=1 and arp_announce=2 in effect on iface (an IPv6
// VIP: a /128 on lo).
//
// For ipip and gre this kernel has no tunnel modules, so dsrctl attaches its
// eBPF decapsulator, which the interface holds. Commands run under `ip netns
// exec` (a private /sys without a BPF filesystem), as an operator's would;
// deleting the namespace removes the interface and the program with it.
func SetupDSRBackend(ns *NS, dsrctl string, vip netip.Addr, mode, iface string) error {
	argv := []string{dsrctl, "backend", "setup", "--vip", vip.String(), "--mode", mode, "--dev", iface}
	out, err := ns.Run(argv...)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ns.bed.Logf("%s: dsrctl backend setup --vip %s --mode %s --dev %s: %s", ns.Short, vip, mode, iface, lines[len(lines)-1])
	return CheckDSRBackend(ns, vip, iface)
}

// CheckDSRBackend verifies that ns holds vip as a host address on lo (/32,
// /128) and, for an IPv4 VIP, neither answers nor announces it by ARP on
// iface (the kernel uses the larger of the "all" and per-interface values).
// An IPv6 VIP must be on lo only, and needs no more: the kernel answers a
// neighbour solicitation only for an address of the interface it arrived
// on.
func CheckDSRBackend(ns *NS, vip netip.Addr, iface string) error {
	out, err := ns.Run("ip", "-j", "addr", "show")
	if err != nil {
		return err
	}
	var links []struct {
		IfName   string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return fmt.Errorf("[%s] ip -j addr: %w", ns.Short, err)
	}
	found := false
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Local != vip.String() {
				continue
			}
			if l.IfName != "lo" {
				if vip.Is6() { // it would answer neighbour solicitations there
					return fmt.Errorf("[%s] VIP %s is on %s, not only on lo", ns.Short, vip, l.IfName)
				}
				continue
			}
			found = found || a.PrefixLen == vip.BitLen()
		}
	}
	if !found {
		return fmt.Errorf("[%s] VIP %s/%d is not on lo", ns.Short, vip, vip.BitLen())
	}
	if vip.Is6() {
		return nil
	}
	for _, want := range []struct {
		key string
		min int
	}{{"arp_ignore", 1}, {"arp_announce", 2}} {
		eff := 0
		for _, dev := range []string{"all", iface} {
			v, err := ns.SysctlValue("net.ipv4.conf." + dev + "." + want.key)
			if err != nil {
				return err
			}
			n, _ := strconv.Atoi(v)
			eff = max(eff, n)
		}
		if eff != want.min {
			return fmt.Errorf("[%s] %s in effect on %s is %d, want %d", ns.Short, want.key, iface, eff, want.min)
		}
	}
	return nil
}

// StartBackendsrv starts backendsrv in ns and waits until its HTTP port
// accepts connections.
// Further flags of backendsrv (--udp6 ADDR) follow in extra.
func StartBackendsrv(ctx context.Context, ns *NS, bin, name, httpAddr, udpAddr string, extra ...string) (*Proc, error) {
	argv := append([]string{bin, "--name", name, "--http", httpAddr, "--udp", udpAddr}, extra...)
	p, err := ns.Start(ns.Short+"-backendsrv", argv...)
	if err != nil {
		return nil, err
	}
	_, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return nil, err
	}
	if err := waitListening(ctx, ns, p, net.JoinHostPort("127.0.0.1", port)); err != nil {
		return nil, err
	}
	return p, nil
}

// waitListening waits, 10 s at most, until a TCP connection to addr made
// from inside ns succeeds, and fails at once, with the end of its log, if
// p (the server meant to listen there) exits first.
func waitListening(ctx context.Context, ns *NS, p *Proc, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		c, err := ns.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.Name, p.Err(), p.Tail(10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not listening on %s: %w", p.Name, addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
