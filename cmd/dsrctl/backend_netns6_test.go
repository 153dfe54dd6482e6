//go:build linux

package main

// Real-kernel tests of `dsrctl backend` for IPv6 VIPs, in the topology of
// backend_netns_test.go with IPv6 addresses from the documentation prefix
// (RFC 3849) that exist only inside the test namespaces. Envelopes are whole
// Ethernet frames built here and sent from the load balancer's namespace
// with a packet socket; neighbour solicitations likewise.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

var (
	tLB6     = netip.MustParseAddr("2001:db8:250::1") // lb0
	tBE6     = netip.MustParseAddr("2001:db8:250::2") // be0
	tVIP6    = netip.MustParseAddr("2001:db8:251::10")
	tOther6  = netip.MustParseAddr("2001:db8:251::99") // not a VIP
	tClient6 = netip.MustParseAddr("2001:db8:7::7")
	tClient4 = netip.MustParseAddr("192.0.2.7")
)

// addIPv6 gives lb0 and be0 their IPv6 addresses (nodad: usable at once).
func (topo *dsrTopology) addIPv6(t *testing.T) {
	t.Helper()
	topo.lb.ip(t, "-6", "addr", "add", tLB6.String()+"/64", "dev", "lb0", "nodad")
	topo.be.ip(t, "-6", "addr", "add", tBE6.String()+"/64", "dev", "be0", "nodad")
}

// linkMAC returns the MAC address of dev in n.
func linkMAC(t *testing.T, n *testNetns, dev string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := n.do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// tIPv6 returns an IPv6 header (no extension headers) and payload.
func tIPv6(src, dst netip.Addr, next byte, hopLimit byte, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = next
	h[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

// tUpperChecksum sets the checksum at off of an upper-layer segment over the
// IPv6 pseudo-header (RFC 8200 section 8.1): mandatory for UDP and ICMPv6.
func tUpperChecksum(src, dst netip.Addr, next byte, seg []byte, off int) {
	seg[off], seg[off+1] = 0, 0
	pseudo := make([]byte, 40)
	s, d := src.As16(), dst.As16()
	copy(pseudo, s[:])
	copy(pseudo[16:], d[:])
	binary.BigEndian.PutUint32(pseudo[32:], uint32(len(seg)))
	pseudo[39] = next
	sum := ^tSum(uint32(tSum(0, pseudo)), seg)
	if sum == 0 && next == 17 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(seg[off:], sum)
}

// tUDP6 returns the client's UDP datagram to dst in an IPv6 packet, with its
// checksum.
func tUDP6(src, dst netip.Addr, sport, dport uint16, msg string) []byte {
	seg := tUDP(sport, dport, []byte(msg))
	tUpperChecksum(src, dst, 17, seg, 6)
	return tIPv6(src, dst, 17, 64, seg)
}

// tGRE6 is tGRE for an IPv6 payload (protocol 0x86DD).
func tGRE6(payload []byte) []byte {
	return append([]byte{0, 0, 0x86, 0xdd}, payload...)
}

// tEther returns an Ethernet frame.
func tEther(dst, src net.HardwareAddr, ethType uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f, dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], ethType)
	return append(f, payload...)
}

// frameSender sends whole Ethernet frames out of dev in n.
func frameSender(t *testing.T, n *testNetns, dev string) func(frame []byte) {
	t.Helper()
	var fd, idx int
	if err := n.do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		idx = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func(frame []byte) {
		t.Helper()
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: idx, Halen: 6}); err != nil {
			t.Fatalf("send frame: %v", err)
		}
	}
}

// envelope6 is one way the load balancer wraps a client's packet: the
// outer family follows the backend's address, the inner the VIP's.
type envelope6 struct {
	name  string
	mode  string // the dsrctl mode that strips it
	outer int    // 4 or 6
	vip   netip.Addr
}

// frame returns the Ethernet frame of the envelope around inner.
func (e envelope6) frame(lbMAC, beMAC net.HardwareAddr, inner []byte) []byte {
	innerIs6 := inner[0]>>4 == 6
	var payload []byte
	var proto byte
	switch {
	case e.mode == "gre" && innerIs6:
		payload, proto = tGRE6(inner), 47
	case e.mode == "gre":
		payload, proto = tGRE(inner), 47
	case innerIs6:
		payload, proto = inner, 41
	default:
		payload, proto = inner, 4
	}
	if e.outer == 6 {
		return tEther(beMAC, lbMAC, 0x86dd, tIPv6(tLB6, tBE6, proto, 64, payload))
	}
	return tEther(beMAC, lbMAC, 0x0800, tIPv4(tLB, tBE, proto, 1, payload))
}

// inner returns the client's datagram msg to dst:5353.
// Its hop limit (TTL) and IPv6 traffic class differ from the envelope's
// (64, 0), so that what the VIP's socket sees shows whose header it got.
func (e envelope6) inner(dst netip.Addr, msg string) []byte {
	if dst.Is6() {
		p := tUDP6(tClient6, dst, 40000, 5353, msg)
		p[0], p[1] = 0x60|innerTClass>>4, innerTClass&0x0f<<4
		p[7] = innerHopLimit
		return p
	}
	p := tIPv4(tClient4, dst, 17, 1, tUDP(40000, 5353, []byte(msg)))
	p[8] = innerHopLimit
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], ^tSum(0, p[:20]))
	return p
}

// The inner packets' hop limit (TTL) and IPv6 traffic class.
const (
	innerHopLimit = 33
	innerTClass   = 0x28 // DSCP AF11
)

// vipSocket is a UDP socket on a VIP that reads each datagram with the
// fields of the IP header it came in.
type vipSocket struct {
	conn *net.UDPConn
	p4   *ipv4.PacketConn
	p6   *ipv6.PacketConn
}

func listenVIP(t *testing.T, n *testNetns, addr netip.AddrPort) *vipSocket {
	t.Helper()
	s := &vipSocket{conn: listenUDP(t, n, addr)}
	var err error
	if addr.Addr().Is6() {
		s.p6 = ipv6.NewPacketConn(s.conn)
		err = s.p6.SetControlMessage(ipv6.FlagTrafficClass|ipv6.FlagHopLimit|ipv6.FlagDst, true)
	} else {
		s.p4 = ipv4.NewPacketConn(s.conn)
		err = s.p4.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst, true)
	}
	if err != nil {
		t.Fatalf("control messages on %s: %v", addr, err)
	}
	return s
}

// received is one datagram and the header fields it came with.
type received struct {
	msg      string
	from     netip.AddrPort
	dst      netip.Addr
	hopLimit int
	tclass   int // IPv6 only
}

// read returns the next datagram, or msg "" after timeout.
func (s *vipSocket) read(t *testing.T, timeout time.Duration) received {
	t.Helper()
	buf := make([]byte, 2048)
	s.conn.SetReadDeadline(time.Now().Add(timeout))
	var r received
	var n int
	var src net.Addr
	var err error
	if s.p6 != nil {
		var cm *ipv6.ControlMessage
		n, cm, src, err = s.p6.ReadFrom(buf)
		if cm != nil {
			r.dst, _ = netip.AddrFromSlice(cm.Dst)
			r.hopLimit, r.tclass = cm.HopLimit, cm.TrafficClass
		}
	} else {
		var cm *ipv4.ControlMessage
		n, cm, src, err = s.p4.ReadFrom(buf)
		if cm != nil {
			r.dst, _ = netip.AddrFromSlice(cm.Dst.To4())
			r.hopLimit = cm.TTL
		}
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return received{}
		}
		t.Fatalf("read: %v", err)
	}
	r.msg = string(buf[:n])
	r.from = src.(*net.UDPAddr).AddrPort()
	r.from = netip.AddrPortFrom(r.from.Addr().Unmap(), r.from.Port())
	return r
}

// Every envelope with an IPv6 side, and plain IPIP/GRE for the dual-stack
// backend's IPv4 VIP.
var envelopes6 = []envelope6{
	{"v6-in-v6", "ipip", 6, tVIP6},
	{"v6-in-v4", "ipip", 4, tVIP6},
	{"gre-v6-over-v6", "gre", 6, tVIP6},
	{"gre-v6-over-v4", "gre", 4, tVIP6},
	{"v4-in-v6", "ipip", 6, tVIP},
	{"gre-v4-over-v6", "gre", 6, tVIP},
	{"v4-in-v4", "ipip", 4, tVIP},
	{"gre-v4-over-v4", "gre", 4, tVIP},
}

// TestBackendNetnsIPv6Decap: a dual-stack backend (an IPv4 and an IPv6 VIP,
// ipip and gre each) set up by separate dsrctl processes, twice; every
// envelope the load balancer may send is decapsulated by the interface's
// program after dsrctl has exited and delivered to a UDP socket on its VIP,
// from the client's address and port; envelopes around other addresses pass
// untouched and are not delivered; teardown of one mode, one family, then
// all leaves exactly what is still configured, and finally nothing.
func TestBackendNetnsIPv6Decap(t *testing.T) {
	topo := newDSRTopology(t, false)
	topo.addIPv6(t)
	lb, be := topo.lb, topo.be
	bpffs := topo.bpffs
	for _, vip := range []netip.Addr{tVIP6, tVIP} {
		for _, mode := range []string{"ipip", "gre"} {
			out := be.mustDsrctl(t, "setup", "--vip", vip.String(), "--mode", mode, "--bpffs", bpffs)
			if vip.Is4() && !strings.Contains(out, "using the eBPF decapsulator") {
				t.Skip("this kernel has ipip/ip_gre: IPv4 VIPs sit on the tunnel devices, which strip IPv4 envelopes only")
			}
			again := be.mustDsrctl(t, "setup", "--vip", vip.String(), "--mode", mode, "--bpffs", bpffs)
			want := fmt.Sprintf("%s %s already present", vip, mode)
			if !strings.Contains(again, want) || !strings.Contains(again, "on lo: present") {
				t.Errorf("second setup of %s %s changed something; want %q and the address present:\n%s", vip, mode, want, again)
			}
		}
	}
	if !be.hasAddr(t, "lo", tVIP6) {
		t.Fatalf("no %s/128 on lo after setup", tVIP6)
	}
	if out, _ := exec.Command("ip", "-n", be.name, "-6", "-o", "addr", "show", "dev", "lo").CombinedOutput(); !strings.Contains(string(out), tVIP6.String()+"/128 scope global nodad") {
		t.Errorf("VIP on lo is not a /128 with nodad:\n%s", out)
	}
	st := backendStatusOf(t, be, bpffs)
	if len(st.Decapsulators) != 1 || st.Decapsulators[0].VIPs[tVIP6.String()] != "ipip+gre" || st.Decapsulators[0].VIPs[tVIP.String()] != "ipip+gre" {
		t.Fatalf("got status %+v, want be0 with both VIPs ipip+gre", st)
	}

	lbMAC, beMAC := linkMAC(t, lb, "lb0"), linkMAC(t, be, "be0")
	send := frameSender(t, lb, "lb0")
	conns := map[netip.Addr]*vipSocket{
		tVIP6:   listenVIP(t, be, netip.AddrPortFrom(tVIP6, 5353)),
		tVIP:    listenVIP(t, be, netip.AddrPortFrom(tVIP, 5353)),
		tOther6: listenVIP(t, be, netip.AddrPortFrom(netip.IPv6Unspecified(), 5354)),
	}
	clientOf := func(vip netip.Addr) netip.AddrPort {
		if vip.Is6() {
			return netip.AddrPortFrom(tClient6, 40000)
		}
		return netip.AddrPortFrom(tClient4, 40000)
	}
	// expect sends each envelope and checks what reaches the VIP socket,
	// field by field: the inner packet's payload, source, destination,
	// hop limit and traffic class, none of the envelope's.
	expect := func(envs []envelope6, wantDelivered bool) {
		t.Helper()
		for i, e := range envs {
			msg := fmt.Sprintf("%s-%d", e.name, i)
			send(e.frame(lbMAC, beMAC, e.inner(e.vip, msg)))
			got := conns[e.vip].read(t, 3*time.Second)
			if !wantDelivered {
				if got.msg != "" {
					t.Errorf("%s: got %q delivered, want nothing", e.name, got.msg)
				}
				continue
			}
			want := received{msg: msg, from: clientOf(e.vip), dst: e.vip, hopLimit: innerHopLimit}
			if e.vip.Is6() {
				want.tclass = innerTClass
			}
			if got != want {
				t.Errorf("%s: got %+v, want %+v", e.name, got, want)
			}
		}
	}
	expect(envelopes6, true)
	ipip, gre := decapCounts(backendStatusOf(t, be, bpffs), "be0")
	if ipip != 4 || gre != 4 {
		t.Errorf("got counters ipip=%d gre=%d, want 4 each", ipip, gre)
	}

	// Not a VIP: v6-in-v6 and GRE over IPv4 around a datagram to another
	// address of the backend's prefix pass untouched; the kernel, which
	// has no tunnel for them, drops them. A socket on port 5354 of every
	// address would see them if they were stripped.
	for _, e := range []envelope6{{"v6-in-v6 not a VIP", "ipip", 6, tOther6}, {"gre over v4 not a VIP", "gre", 4, tOther6}} {
		send(e.frame(lbMAC, beMAC, tUDP6(tClient6, tOther6, 40000, 5354, e.name)))
		if got := conns[tOther6].read(t, 300*time.Millisecond); got.msg != "" {
			t.Errorf("%s: got %+v delivered", e.name, got)
		}
	}
	if ipip2, gre2 := decapCounts(backendStatusOf(t, be, bpffs), "be0"); ipip2 != ipip || gre2 != gre {
		t.Errorf("packets to other addresses were decapsulated: ipip %d -> %d, gre %d -> %d", ipip, ipip2, gre, gre2)
	}

	// Teardown gre of the IPv6 VIP: its ipip envelopes still work, its GRE
	// ones do not; the IPv4 VIP keeps both.
	out := be.mustDsrctl(t, "teardown", "--vip", tVIP6.String(), "--mode", "gre", "--bpffs", bpffs)
	if want := tVIP6.String() + "/128 on lo: kept, still decapsulated on be0 (ipip)"; !strings.Contains(out, want) {
		t.Errorf("teardown gre output lacks %q:\n%s", want, out)
	}
	expect([]envelope6{envelopes6[0], envelopes6[1], envelopes6[4], envelopes6[5]}, true)
	expect([]envelope6{envelopes6[2], envelopes6[3]}, false)

	// Teardown of the IPv4 VIP leaves the IPv6 one working.
	be.mustDsrctl(t, "teardown", "--vip", tVIP.String(), "--mode", "ipip", "--bpffs", bpffs)
	be.mustDsrctl(t, "teardown", "--vip", tVIP.String(), "--mode", "gre", "--bpffs", bpffs)
	if be.hasAddr(t, "lo", tVIP) {
		t.Errorf("IPv4 VIP still on lo after its teardown")
	}
	expect([]envelope6{envelopes6[0], envelopes6[1]}, true)

	// The last VIP takes the decapsulator and the address with it.
	out = be.mustDsrctl(t, "teardown", "--vip", tVIP6.String(), "--mode", "ipip", "--bpffs", bpffs)
	if want := "last VIP: detached"; !strings.Contains(out, want) {
		t.Errorf("last teardown output lacks %q:\n%s", want, out)
	}
	if be.hasAddr(t, "lo", tVIP6) {
		t.Errorf("IPv6 VIP still on lo after teardown")
	}
	if n := be.tcxPrograms(t, "be0"); n != 0 {
		t.Errorf("got %d TCX programs on be0 after teardown, want 0", n)
	}
	if f := be.tc(t, "filter", "show", "dev", "be0", "ingress"); strings.TrimSpace(f) != "" {
		t.Errorf("tc ingress filters left after teardown:\n%s", f)
	}
	if st := backendStatusOf(t, be, bpffs); len(st.Decapsulators) != 0 {
		t.Errorf("decapsulators left after teardown: %+v", st)
	}
	if out := be.mustDsrctl(t, "teardown", "--vip", tVIP6.String(), "--mode", "ipip", "--bpffs", bpffs); !strings.Contains(out, "nothing to undo") {
		t.Errorf("second teardown: %s", out)
	}
}

// ndProbe sends neighbour solicitations from lb0 and watches lb0 for the
// advertisements that answer them.
type ndProbe struct {
	send  func(frame []byte)
	rx    int // packet socket on lb0 for IPv6
	lbMAC net.HardwareAddr
	beMAC net.HardwareAddr
}

func newNDProbe(t *testing.T, lb, be *testNetns) *ndProbe {
	t.Helper()
	p := &ndProbe{send: frameSender(t, lb, "lb0"), lbMAC: linkMAC(t, lb, "lb0"), beMAC: linkMAC(t, be, "be0")}
	if err := lb.do(func() error {
		ifi, err := net.InterfaceByName("lb0")
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_IPV6)
		if p.rx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto)); err != nil {
			return err
		}
		return unix.Bind(p.rx, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	}); err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(p.rx) })
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(p.rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return p
}

// solicit sends a neighbour solicitation (RFC 4861 section 4.3) for target
// from lb0's address: to the target's solicited-node multicast group, as
// for address resolution, or unicast to the backend's MAC and the target, as
// for neighbour unreachability detection.
func (p *ndProbe) solicit(t *testing.T, target netip.Addr, multicast bool) {
	t.Helper()
	tg := target.As16()
	dst, dstMAC := target, p.beMAC
	if multicast {
		dst = netip.AddrFrom16([16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: tg[13], 14: tg[14], 15: tg[15]})
		dstMAC = net.HardwareAddr{0x33, 0x33, 0xff, tg[13], tg[14], tg[15]}
	}
	icmp := make([]byte, 8, 32)
	icmp[0] = 135 // neighbour solicitation
	icmp = append(icmp, tg[:]...)
	icmp = append(icmp, 1, 1) // source link-layer address option
	icmp = append(icmp, p.lbMAC...)
	tUpperChecksum(tLB6, dst, 58, icmp, 2)
	p.send(tEther(dstMAC, p.lbMAC, 0x86dd, tIPv6(tLB6, dst, 58, 255, icmp)))
}

// advertised reports whether a neighbour advertisement for target reached
// lb0 within wait.
func (p *ndProbe) advertised(target netip.Addr, wait time.Duration) bool {
	buf := make([]byte, 2048)
	tg := target.As16()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(p.rx, buf, 0)
		if err != nil || n < 14+40+24 {
			continue
		}
		f := buf[:n]
		if f[14+6] == 58 && f[14+40] == 136 && string(f[14+40+8:14+40+24]) == string(tg[:]) {
			return true
		}
	}
	return false
}

// TestBackendNetnsIPv6NeighbourDiscovery: with the VIP set up on the
// backend (l2, and ipip: the same address on lo), real neighbour
// solicitations for the VIP, multicast and unicast, get no advertisement,
// with forwarding off and on, while those for the backend's own address do
// (the probe works). So the backend never claims the VIP; setup adds no rule
// for it. A proxy neighbour entry for the VIP, the one setting that makes
// the kernel answer, makes setup fail before it changes anything.
func TestBackendNetnsIPv6NeighbourDiscovery(t *testing.T) {
	topo := newDSRTopology(t, false)
	topo.addIPv6(t)
	lb, be := topo.lb, topo.be
	be.mustDsrctl(t, "setup", "--vip", tVIP6.String(), "--mode", "l2", "--bpffs", topo.bpffs)
	be.mustDsrctl(t, "setup", "--vip", tVIP6.String(), "--mode", "ipip", "--bpffs", topo.bpffs)
	p := newNDProbe(t, lb, be)
	for _, forwarding := range []string{"0", "1"} {
		if err := be.do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte(forwarding), 0o644)
		}); err != nil {
			t.Fatal(err)
		}
		for _, multicast := range []bool{true, false} {
			how := fmt.Sprintf("forwarding=%s multicast=%v", forwarding, multicast)
			p.solicit(t, tBE6, multicast)
			if !p.advertised(tBE6, 3*time.Second) {
				t.Fatalf("%s: no advertisement for the backend's own address %s: the probe does not work", how, tBE6)
			}
			p.solicit(t, tVIP6, multicast)
			if p.advertised(tVIP6, 500*time.Millisecond) {
				t.Errorf("%s: the backend advertised the VIP %s", how, tVIP6)
			}
		}
	}

	// A proxy entry answers for the VIP: setup refuses to go on.
	be.mustDsrctl(t, "teardown", "--vip", tVIP6.String(), "--mode", "ipip", "--bpffs", topo.bpffs)
	be.mustDsrctl(t, "teardown", "--vip", tVIP6.String(), "--mode", "l2", "--bpffs", topo.bpffs)
	if err := be.do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/proxy_ndp", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	be.ip(t, "-6", "neigh", "add", "proxy", tVIP6.String(), "dev", "be0")
	p.solicit(t, tVIP6, true)
	if !p.advertised(tVIP6, 3*time.Second) {
		t.Errorf("with a proxy entry the kernel did not advertise the VIP: the premise of the check fails")
	}
	code, out, errOut := be.dsrctl(t, "setup", "--vip", tVIP6.String(), "--mode", "l2", "--bpffs", topo.bpffs)
	if code != 1 || !strings.Contains(errOut, "ip -6 neigh del proxy "+tVIP6.String()+" dev be0") {
		t.Errorf("setup with a proxy entry: got exit %d, stderr %q; want 1 and how to remove it\n%s", code, errOut, out)
	}
	if be.hasAddr(t, "lo", tVIP6) {
		t.Errorf("refused setup left the VIP on lo")
	}
}

// TestBackendNetnsIPv6ScriptMatchesSetup runs the generated l2 script in one
// namespace and setup in another: the addresses on lo are the same, and a
// second run of the script changes nothing.
func TestBackendNetnsIPv6ScriptMatchesSetup(t *testing.T) {
	requireNetnsTest(t)
	bySetup, byScript := newTestNetns(t, "setup"), newTestNetns(t, "script")
	for _, n := range []*testNetns{bySetup, byScript} {
		n.ip(t, "link", "add", "be0", "type", "veth", "peer", "name", "be0p")
		n.ip(t, "link", "set", "be0", "up")
	}
	bySetup.mustDsrctl(t, "setup", "--vip", tVIP6.String(), "--mode", "l2", "--dev", "be0")
	_, script, _ := backendRun("script", "--vip", tVIP6.String(), "--mode", "l2", "--dev", "be0")
	runScript := func() {
		t.Helper()
		if out, err := byScript.command(viaIPNetnsExec, "sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("script: %v\n%s", err, out)
		}
	}
	runScript()
	loAddrs := func(n *testNetns) string {
		out, err := exec.Command("ip", "-n", n.name, "-6", "-br", "addr", "show", "dev", "lo").CombinedOutput()
		if err != nil {
			t.Fatalf("ip addr: %v\n%s", err, out)
		}
		return string(out)
	}
	flags := func(n *testNetns) string {
		out, _ := exec.Command("ip", "-n", n.name, "-6", "-o", "addr", "show", "dev", "lo", "to", tVIP6.String()+"/128").CombinedOutput()
		f := strings.Fields(string(out))
		return strings.Join(f[3:], " ")
	}
	want := loAddrs(bySetup)
	if got := loAddrs(byScript); got != want || !strings.Contains(want, tVIP6.String()+"/128") {
		t.Errorf("lo after the script:\n%s\nafter setup:\n%s", got, want)
	}
	if got, want := flags(byScript), flags(bySetup); got != want || !strings.Contains(want, "nodad") {
		t.Errorf("VIP flags after the script %q, after setup %q; want equal, with nodad", got, want)
	}
	runScript()
	if got := loAddrs(byScript); got != want {
		t.Errorf("second run of the script changed lo:\n%s", got)
	}

}

// TestBackendNetnsIPv6ScriptL3 runs the generated ipip and gre scripts.
// Without dsrctl on PATH and without the kernel's IPv6 tunnel modules (as
// here) they stop before changing anything and say why; with dsrctl on PATH
// they hand over to `dsrctl backend setup`, whose result is then the same
// as setup's in another namespace, and the VIP's envelopes of both families
// reach a socket on the VIP.
func TestBackendNetnsIPv6ScriptL3(t *testing.T) {
	requireNetnsTest(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A dsrctl on PATH: this test binary as `dsrctl backend`.
	bin := t.TempDir()
	wrapper := "#!/bin/sh\n[ \"$1\" = backend ] || exit 2\nshift\n" +
		backendHelperEnv + "=1 exec " + exe + " -test.run='^TestBackendHelperProcess$' -- \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "dsrctl"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"ipip", "gre"} {
		t.Run(mode, func(t *testing.T) {
			_, script, _ := backendRun("script", "--vip", tVIP6.String(), "--mode", mode, "--dev", "be0")
			bySetup, byScript := newTestNetns(t, "setup-"+mode), newTestNetns(t, "script-"+mode)
			for _, n := range []*testNetns{bySetup, byScript} {
				n.ip(t, "link", "add", "be0", "type", "veth", "peer", "name", "lb0")
				n.ip(t, "link", "set", "be0", "up")
				n.ip(t, "link", "set", "lb0", "up")
			}

			run := func(path string) ([]byte, error) {
				cmd := byScript.command(viaIPNetnsExec, "sh", "-c", script)
				cmd.Env = append(os.Environ(), "PATH="+path)
				return cmd.CombinedOutput()
			}
			out, err := run(os.Getenv("PATH"))
			switch {
			case err == nil:
				t.Logf("this kernel has the IPv6 tunnel modules: the script used them\n%s", out)
			case !strings.Contains(string(out), "install dsrctl and run this again"):
				t.Errorf("script without dsrctl or tunnel modules: %v\n%s\nwant it to say to install dsrctl", err, out)
			case byScript.hasAddr(t, "lo", tVIP6):
				t.Errorf("script that stopped left the VIP on lo")
			}

			if out, err := run(bin + ":" + os.Getenv("PATH")); err != nil {
				t.Fatalf("script with dsrctl on PATH: %v\n%s", err, out)
			}
			bySetup.mustDsrctl(t, "setup", "--vip", tVIP6.String(), "--mode", mode, "--dev", "be0")
			decaps := func(n *testNetns) string {
				var st backendStatusJSON
				out := n.mustDsrctl(t, "status", "-o", "json")
				if err := json.Unmarshal([]byte(out), &st); err != nil {
					t.Fatal(err)
				}
				var rows []string
				for _, d := range st.Decapsulators {
					rows = append(rows, fmt.Sprintf("%s %s %v", d.Interface, d.Hook, d.VIPs))
				}
				return strings.Join(rows, "; ")
			}
			got, want := decaps(byScript), decaps(bySetup)
			if got != want || !strings.Contains(want, "be0") {
				t.Errorf("decapsulators after the script: %q, after setup: %q", got, want)
			}
			if !byScript.hasAddr(t, "lo", tVIP6) {
				t.Errorf("the script did not put the VIP on lo")
			}

			// Envelopes of both families from lb0 to be0 in the script's
			// namespace reach the VIP.
			conn := listenVIP(t, byScript, netip.AddrPortFrom(tVIP6, 5353))
			send := frameSender(t, byScript, "lb0")
			lbMAC, beMAC := linkMAC(t, byScript, "lb0"), linkMAC(t, byScript, "be0")
			for _, outer := range []int{6, 4} {
				e := envelope6{fmt.Sprintf("%s-over-v%d", mode, outer), mode, outer, tVIP6}
				send(e.frame(lbMAC, beMAC, e.inner(tVIP6, e.name)))
				if got := conn.read(t, 3*time.Second); got.msg != e.name {
					t.Errorf("%s: got %+v, want %q delivered", e.name, got, e.name)
				}
			}
		})
	}
}

// Addresses of the IPv6 client path (TestBackendNetnsIPv6DSRTCP): lbc
// 2001:db8:1::1 <-> cl0 2001:db8:1::2 for requests, bec 2001:db8:2::1 <->
// clb 2001:db8:2::2 for the direct replies.
var tClientTCP6 = netip.MustParseAddr("2001:db8:1::2")

// addIPv6ClientPath gives the client path of a topology with a client its
// IPv6 addresses and routes: the VIP through the load balancer, the replies
// straight to the client.
func (topo *dsrTopology) addIPv6ClientPath(t *testing.T) {
	t.Helper()
	lb, be, cl := topo.lb, topo.be, topo.cl
	lb.ip(t, "-6", "addr", "add", "2001:db8:1::1/64", "dev", "lbc", "nodad")
	cl.ip(t, "-6", "addr", "add", tClientTCP6.String()+"/64", "dev", "cl0", "nodad")
	be.ip(t, "-6", "addr", "add", "2001:db8:2::1/64", "dev", "bec", "nodad")
	cl.ip(t, "-6", "addr", "add", "2001:db8:2::2/64", "dev", "clb", "nodad")
	cl.ip(t, "-6", "route", "add", tVIP6.String()+"/128", "via", "2001:db8:1::1")
	be.ip(t, "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::2")
	// The load balancer's kernel must drop what the test LB forwards
	// silently: not route it too, and not answer "no route" (which a
	// host without a route to the VIP sends for IPv6).
	if err := lb.do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("0"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	lb.ip(t, "-6", "route", "add", "blackhole", tVIP6.String()+"/128")
}

// frameLB is testLB for envelopes of either family: it captures every
// packet to env's VIP arriving on lbc and sends it to the backend in env, as
// a whole frame out of lb0. It counts packets from the VIP seen on any
// interface of lb, which DSR replies must never cross.
type frameLB struct {
	forwarded atomic.Int64
	fromVIP   atomic.Int64
}

func startFrameLB(t *testing.T, topo *dsrTopology, env envelope6) *frameLB {
	t.Helper()
	lb := topo.lb
	l := &frameLB{}
	lbMAC, beMAC := linkMAC(t, lb, "lb0"), linkMAC(t, topo.be, "be0")
	send := frameSender(t, lb, "lb0")
	// Where the VIP sits in the inner header: destination, source.
	proto, dstOff, srcOff := htons(unix.ETH_P_IP), 16, 12
	if env.vip.Is6() {
		proto, dstOff, srcOff = htons(unix.ETH_P_IPV6), 24, 8
	}
	vip := string(env.vip.AsSlice())
	var capFD, watchFD int
	if err := lb.do(func() error {
		ifc, err := net.InterfaceByName("lbc")
		if err != nil {
			return err
		}
		if capFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto)); err != nil {
			return err
		}
		if err := unix.Bind(capFD, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index}); err != nil {
			return err
		}
		watchFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		return err
	}); err != nil {
		t.Fatalf("test LB sockets: %v", err)
	}
	packetLoop(t, capFD, func(pkt []byte, from *unix.SockaddrLinklayer) { // forward
		if from == nil || from.Pkttype == unix.PACKET_OUTGOING {
			return
		}
		if len(pkt) < dstOff+len(vip) || string(pkt[dstOff:dstOff+len(vip)]) != vip {
			return
		}
		// Complete a partial TCP checksum (checksum offload on the
		// client's veth).
		inner := append([]byte(nil), pkt...)
		if env.vip.Is4() {
			tFixL4Checksum(inner)
		} else if inner[6] == 6 {
			src, _ := netip.AddrFromSlice(inner[8:24])
			tUpperChecksum(src, env.vip, 6, inner[40:], 16)
		}
		send(env.frame(lbMAC, beMAC, inner))
		l.forwarded.Add(1)
	})
	packetLoop(t, watchFD, func(pkt []byte, _ *unix.SockaddrLinklayer) { // replies crossing the load balancer
		if len(pkt) >= srcOff+len(vip) && string(pkt[srcOff:srcOff+len(vip)]) == vip {
			l.fromVIP.Add(1)
		}
	})
	return l
}

// ndWatch counts neighbour discovery messages (ICMPv6 types 133 to 137) on
// every interface of n, sent or received, whose source or target is addr.
func ndWatch(t *testing.T, n *testNetns, addr netip.Addr) *atomic.Int64 {
	t.Helper()
	var fd int
	proto := htons(unix.ETH_P_IPV6)
	if err := n.do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		return err
	}); err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	a := addr.As16()
	var count atomic.Int64
	packetLoop(t, fd, func(pkt []byte, _ *unix.SockaddrLinklayer) {
		if len(pkt) < 48 || pkt[6] != 58 || pkt[40] < 133 || pkt[40] > 137 {
			return
		}
		target := len(pkt) >= 64 && (pkt[40] == 135 || pkt[40] == 136) && string(pkt[48:64]) == string(a[:])
		if string(pkt[8:24]) == string(a[:]) || target {
			count.Add(1)
		}
	})
	return &count
}

// TestBackendNetnsIPv6DSRTCP runs real TCP connections through the whole DSR
// path in each envelope with an IPv6 side: to an IPv6 VIP in IPv6 and IPv4
// envelopes, to an IPv4 VIP in IPv6 envelopes. Client -> load balancer
// (encapsulates) -> backend (decapsulates, the VIP on lo accepts) ->
// replies from the VIP straight to the client. A 1 MiB upload arrives
// whole; no reply crosses the load balancer; the backend never sends or
// answers neighbour discovery for an IPv6 VIP.
func TestBackendNetnsIPv6DSRTCP(t *testing.T) {
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Skip("needs ethtool: the test LB forwards frames as the client sends them, so the client must not send TSO/GSO super-frames")
	}
	for _, env := range envelopes6[:6] {
		t.Run(env.name, func(t *testing.T) {
			topo := newDSRTopology(t, true)
			topo.addIPv6(t)
			topo.addIPv6ClientPath(t)
			lb, be, cl := topo.lb, topo.be, topo.cl
			// The envelope adds up to 44 bytes: the load balancer's path
			// to the backend has room for it (or the LB sends PMTU
			// errors, which this stand-in does not).
			lb.ip(t, "link", "set", "lb0", "mtu", "1600")
			be.ip(t, "link", "set", "be0", "mtu", "1600")
			if out, err := cl.command(viaIPNetnsExec, "ethtool", "-K", "cl0", "tso", "off", "gso", "off").CombinedOutput(); err != nil {
				t.Fatalf("ethtool: %v\n%s", err, out)
			}
			out := be.mustDsrctl(t, "setup", "--vip", env.vip.String(), "--mode", env.mode, "--bpffs", topo.bpffs)
			if env.vip.Is4() && !strings.Contains(out, "using the eBPF decapsulator") {
				t.Skip("this kernel has ipip/ip_gre: IPv4 VIPs sit on the tunnel devices, which strip IPv4 envelopes only")
			}
			client := tClientTCP6
			if env.vip.Is4() {
				client = tClient
			}
			fake := startFrameLB(t, topo, env)
			nd := ndWatch(t, be, tVIP6)
			// The watch works: the backend resolves the client's
			// address on the reply path.
			ndClient := ndWatch(t, be, netip.MustParseAddr("2001:db8:2::2"))

			ln := listenTCP(t, be, netip.AddrPortFrom(env.vip, 8080))
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				h := sha256.New()
				n, _ := io.Copy(h, c)
				fmt.Fprintf(c, "%d %x", n, h.Sum(nil))
			}()

			conn, err := dialTCP(cl, netip.AddrPortFrom(env.vip, 8080))
			if err != nil {
				t.Fatalf("connect to the VIP: %v (forwarded %d)", err, fake.forwarded.Load())
			}
			defer conn.Close()
			if got := conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != client {
				t.Errorf("client address %s, want %s", got, client)
			}
			payload := make([]byte, 1<<20)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := conn.Write(payload); err != nil {
				t.Fatalf("upload: %v (forwarded %d)", err, fake.forwarded.Load())
			}
			conn.CloseWrite()
			reply, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read reply: %v", err)
			}
			sum := sha256.Sum256(payload)
			if want := fmt.Sprintf("%d %x", len(payload), sum[:]); string(reply) != want {
				t.Errorf("backend got %q, want %q", reply, want)
			}
			conn.Close()

			st := backendStatusOf(t, be, topo.bpffs)
			ipip, gre := decapCounts(st, "be0")
			got := map[string]uint64{"ipip": ipip, "gre": gre}[env.mode]
			t.Logf("%s: load balancer forwarded %d packets, backend decapsulated %d, replies seen by the load balancer: %d, ND messages about the VIP on the backend: %d",
				env.name, fake.forwarded.Load(), got, fake.fromVIP.Load(), nd.Load())
			if min := int64(len(payload) / 1500); fake.forwarded.Load() < min || got < uint64(min) {
				t.Errorf("forwarded %d, decapsulated %d packets; want at least %d each", fake.forwarded.Load(), got, min)
			}
			if n := fake.fromVIP.Load(); n != 0 {
				t.Errorf("%d packets from the VIP crossed the load balancer; DSR replies must not", n)
			}
			if n := nd.Load(); n != 0 {
				t.Errorf("the backend sent or received %d neighbour discovery messages about the VIP", n)
			}
			if env.vip.Is6() && ndClient.Load() == 0 {
				t.Errorf("saw no neighbour discovery about the client's reply address: the watch does not work")
			}
			be.mustDsrctl(t, "teardown", "--vip", env.vip.String(), "--mode", env.mode, "--bpffs", topo.bpffs)
		})
	}
}
