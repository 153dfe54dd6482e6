//go:build linux

package main

// Real-kernel tests of `dsrctl backend`: network namespaces joined by veth
// pairs, private 10.250.x.y/24 addresses that exist only inside them, the
// real CLI run as a separate process under `ip netns exec` (or `nsenter
// --net`) that has exited before traffic flows, and hand-built IPIP/GRE
// packets sent with raw sockets.

import (
	"bytes"
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

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsrlb/dsrlb/control/kernel/nsrun"
)

const backendHelperEnv = "DSRCTL_BACKEND_HELPER"

// TestBackendHelperProcess is not a test: the netns tests run the test binary
// as `dsrctl backend ...` with it, in a separate process, so the decapsulator
// must outlive the process that attached it.
func TestBackendHelperProcess(t *testing.T) {
	if os.Getenv(backendHelperEnv) != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(runBackend(args, os.Stdout, os.Stderr))
}

// Addresses of the test topology. 10.250.0.0/16 and the VIP exist only inside
// the test namespaces.
var (
	tLB     = netip.MustParseAddr("10.250.0.1") // lb0, the load balancer
	tBE     = netip.MustParseAddr("10.250.0.2") // be0, the backend
	tVIP    = netip.MustParseAddr("10.251.0.10")
	tOther  = netip.MustParseAddr("10.251.0.99") // not a VIP
	tClient = netip.MustParseAddr("10.250.1.2")  // cl0, the client (TCP test)
)

func requireNetnsTest(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, BPF")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
}

// testNetns is a named network namespace that lives as long as the test.
type testNetns struct {
	name string
	h    netns.NsHandle
}

func newTestNetns(t *testing.T, role string) *testNetns {
	t.Helper()
	name := fmt.Sprintf("dsrdecap-%d-%s", os.Getpid(), role)
	runCmd(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	n := &testNetns{name: name, h: h}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

func runCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (n *testNetns) ip(t *testing.T, args ...string) {
	t.Helper()
	runCmd(t, "ip", append([]string{"-n", n.name}, args...)...)
}

// do runs fn on a locked OS thread inside the namespace (nsrun.Do). Sockets
// fn opens stay in the namespace.
func (n *testNetns) do(fn func() error) error { return nsrun.Do(n.h, fn) }

// dsrctl runs `dsrctl backend args...` as a separate process in the
// namespace, under `ip netns exec`.
func (n *testNetns) dsrctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return n.dsrctlVia(t, viaIPNetnsExec, args...)
}

// How a command enters a test namespace: `ip netns exec` also gives it a
// private /sys (without a BPF filesystem); `nsenter --net` changes only the
// network namespace and keeps the host's mounts; viaNoBPFCaps is
// `ip netns exec` without CAP_SYS_ADMIN and CAP_BPF, as in a container that
// may configure the network but not load BPF programs.
const (
	viaIPNetnsExec = "ip-netns-exec"
	viaNsenter     = "nsenter"
	viaNoBPFCaps   = "ip-netns-exec-without-bpf-caps"
)

// command returns argv run in the namespace via.
func (n *testNetns) command(via string, argv ...string) *exec.Cmd {
	switch via {
	case viaNsenter:
		return exec.Command("nsenter", append([]string{"--net=/run/netns/" + n.name, "--"}, argv...)...)
	case viaNoBPFCaps:
		argv = append([]string{"setpriv", "--bounding-set=-sys_admin,-bpf", "--"}, argv...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", n.name}, argv...)...)
}

// dsrctlVia runs `dsrctl backend args...` as a separate process in the
// namespace, entered via.
func (n *testNetns) dsrctlVia(t *testing.T, via string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.command(via, append([]string{exe, "-test.run=^TestBackendHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), backendHelperEnv+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run dsrctl: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// mustDsrctl runs dsrctl and fails the test unless it exits 0.
func (n *testNetns) mustDsrctl(t *testing.T, args ...string) string {
	t.Helper()
	return n.mustDsrctlVia(t, viaIPNetnsExec, args...)
}

// mustDsrctlVia runs dsrctl entered via and fails the test unless it exits 0.
func (n *testNetns) mustDsrctlVia(t *testing.T, via string, args ...string) string {
	t.Helper()
	code, out, errOut := n.dsrctlVia(t, via, args...)
	if code != 0 {
		t.Fatalf("dsrctl backend %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	t.Logf("dsrctl backend %s (%s):\n%s", strings.Join(args, " "), via, out)
	return out
}

// tc runs `tc -n NS args...` and returns its output.
func (n *testNetns) tc(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("tc", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// haveTCX reports whether the kernel has TCX (Linux 6.6 or later).
func (n *testNetns) haveTCX() bool {
	return n.do(func() error {
		_, err := link.QueryPrograms(link.QueryOptions{Target: 1, Attach: ebpf.AttachTCXIngress})
		return err
	}) == nil
}

func (n *testNetns) sysctl(t *testing.T, dev, key string) string {
	t.Helper()
	var v []byte
	err := n.do(func() error {
		var err error
		v, err = os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", dev, key))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(v))
}

func (n *testNetns) hasAddr(t *testing.T, dev string, a netip.Addr) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", n.name, "-o", "addr", "show", "dev", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr show: %v\n%s", err, out)
	}
	return strings.Contains(string(out), " "+backendVIPPrefix(a).String()+" ")
}

// tcxPrograms counts the TCX ingress programs on an interface.
func (n *testNetns) tcxPrograms(t *testing.T, ifname string) int {
	t.Helper()
	var count int
	err := n.do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifc.Index, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		count = len(res.Programs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return count
}

// testBPFFS mounts a private BPF filesystem for one test so that nothing is
// pinned in the host's /sys/fs/bpf; it is mounted before any `ip netns exec`,
// which therefore sees it. Unmounting frees whatever is still pinned.
func testBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// dsrTopology: lb0 (lb, 10.250.0.1/24) <-veth-> be0 (be, 10.250.0.2/24) and,
// with a client, lbc (lb, 10.250.1.1/24) <-veth-> cl0 (cl, 10.250.1.2/24) for
// requests and bec (be, 10.250.2.1/24) <-veth-> clb (cl, 10.250.2.2/24) for
// the direct replies.
type dsrTopology struct {
	lb, be, cl *testNetns
	bpffs      string
}

func newDSRTopology(t *testing.T, withClient bool) *dsrTopology {
	t.Helper()
	requireNetnsTest(t)
	topo := &dsrTopology{bpffs: testBPFFS(t)}
	topo.lb = newTestNetns(t, "lb")
	topo.be = newTestNetns(t, "be")
	lb, be := topo.lb, topo.be
	lb.ip(t, "link", "add", "lb0", "type", "veth", "peer", "name", "be0", "netns", be.name)
	lb.ip(t, "addr", "add", tLB.String()+"/24", "dev", "lb0")
	be.ip(t, "addr", "add", tBE.String()+"/24", "dev", "be0")
	lb.ip(t, "link", "set", "lb0", "up")
	be.ip(t, "link", "set", "be0", "up")
	if withClient {
		topo.cl = newTestNetns(t, "cl")
		cl := topo.cl
		lb.ip(t, "link", "add", "lbc", "type", "veth", "peer", "name", "cl0", "netns", cl.name)
		lb.ip(t, "addr", "add", "10.250.1.1/24", "dev", "lbc")
		cl.ip(t, "addr", "add", tClient.String()+"/24", "dev", "cl0")
		be.ip(t, "link", "add", "bec", "type", "veth", "peer", "name", "clb", "netns", cl.name)
		be.ip(t, "addr", "add", "10.250.2.1/24", "dev", "bec")
		cl.ip(t, "addr", "add", "10.250.2.2/24", "dev", "clb")
		for _, x := range []struct {
			n   *testNetns
			dev string
		}{{lb, "lbc"}, {cl, "cl0"}, {be, "bec"}, {cl, "clb"}} {
			x.n.ip(t, "link", "set", x.dev, "up")
		}
		// Requests go to the load balancer, replies come straight from
		// the backend on another interface, so the client must not
		// filter by reverse path.
		cl.ip(t, "route", "add", tVIP.String()+"/32", "via", "10.250.1.1")
		// The load balancer's kernel must drop what the test LB
		// forwards, not route it too (a host may make new namespaces
		// inherit ip_forward=1).
		if err := lb.do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644)
		}); err != nil {
			t.Fatal(err)
		}
		be.ip(t, "route", "add", "10.250.1.0/24", "via", "10.250.2.2")
		if err := cl.do(func() error {
			for _, d := range []string{"all", "clb"} {
				if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+d+"/rp_filter", []byte("0"), 0o644); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return topo
}

// Packet builders.

func tIPv4(src, dst netip.Addr, proto byte, id uint16, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], id)
	binary.BigEndian.PutUint16(h[6:], 0x4000) // DF
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], ^tSum(0, h))
	return append(h, payload...)
}

// tSum adds b to a one's complement sum and folds it to 16 bits (RFC 1071).
func tSum(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func tUDP(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...) // checksum 0: none (IPv4)
}

func tGRE(payload []byte) []byte {
	return append([]byte{0, 0, 0x08, 0x00}, payload...) // no flags, IPv4
}

// tEncap wraps an inner IPv4 packet for mode as the load balancer does.
func tEncap(mode string, src, dst netip.Addr, id uint16, inner []byte) []byte {
	if mode == "gre" {
		return tIPv4(src, dst, 47, id, tGRE(inner))
	}
	return tIPv4(src, dst, 4, id, inner)
}

// tFixL4Checksum recomputes the TCP or UDP checksum of an IPv4 packet: a
// packet captured on a veth may carry only the partial checksum of checksum
// offload.
func tFixL4Checksum(pkt []byte) {
	ihl := int(pkt[0]&0x0f) * 4
	seg := pkt[ihl:]
	var off int
	switch pkt[9] {
	case 6:
		off = 16
	case 17:
		off = 6
	default:
		return
	}
	if len(seg) < off+2 {
		return
	}
	seg[off], seg[off+1] = 0, 0
	pseudo := make([]byte, 12)
	copy(pseudo, pkt[12:20])
	pseudo[9] = pkt[9]
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(seg)))
	sum := uint32(tSum(0, pseudo))
	binary.BigEndian.PutUint16(seg[off:], ^tSum(sum, seg))
}

// rawSender opens an IPPROTO_RAW socket in n: it sends complete IPv4
// packets, the kernel adds only the Ethernet header.
func rawSender(t *testing.T, n *testNetns) func(dst netip.Addr, pkt []byte) {
	t.Helper()
	var fd int
	if err := n.do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func(dst netip.Addr, pkt []byte) {
		t.Helper()
		if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

func listenUDP(t *testing.T, n *testNetns, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.do(func() error {
		var err error
		network := "udp4"
		if addr.Addr().Is6() {
			network = "udp6"
		}
		c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads one datagram or returns "" after the timeout.
func receive(t *testing.T, c *net.UDPConn, timeout time.Duration) (string, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", netip.AddrPort{}
		}
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n]), from
}

// udpProbe sends UDP datagrams from a client to the VIP, encapsulated as the
// load balancer does, with a raw socket in lb to the backend's own address,
// and reads them from a socket on the VIP in be.
type udpProbe struct {
	conn   *net.UDPConn
	send   func(dst netip.Addr, pkt []byte)
	client netip.Addr
	id     uint16
}

func newUDPProbe(t *testing.T, lb, be *testNetns) *udpProbe {
	t.Helper()
	return &udpProbe{
		conn:   listenUDP(t, be, netip.AddrPortFrom(tVIP, 5353)),
		send:   rawSender(t, lb),
		client: netip.MustParseAddr("192.0.2.7"), // no route back needed for UDP
		id:     100,
	}
}

// inner returns the client's datagram to dst.
func (p *udpProbe) inner(dst netip.Addr, msg string) []byte {
	return tIPv4(p.client, dst, 17, 1, tUDP(40000, 5353, []byte(msg)))
}

// expect sends n packets for mode and checks that the VIP socket receives
// each of them, from the client, or none.
func (p *udpProbe) expect(t *testing.T, mode string, n int, wantDelivered bool) {
	t.Helper()
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("%s-%d", mode, i)
		p.id++
		p.send(tBE, tEncap(mode, tLB, tBE, p.id, p.inner(tVIP, msg)))
		if !wantDelivered {
			continue
		}
		got, from := receive(t, p.conn, 3*time.Second)
		if got != msg {
			t.Fatalf("%s packet %d: got %q, want %q delivered to the VIP socket", mode, i, got, msg)
		}
		if from != netip.AddrPortFrom(p.client, 40000) {
			t.Errorf("%s packet %d: got source %s, want the client %s:40000", mode, i, from, p.client)
		}
	}
	if !wantDelivered {
		if got, _ := receive(t, p.conn, 300*time.Millisecond); got != "" {
			t.Fatalf("%s: got %q delivered, want nothing", mode, got)
		}
	}
}

func backendStatusOf(t *testing.T, n *testNetns, bpffs string) backendStatusJSON {
	t.Helper()
	out := n.mustDsrctl(t, "status", "--bpffs", bpffs, "-o", "json")
	var st backendStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	return st
}

func decapCounts(st backendStatusJSON, ifname string) (ipip, gre uint64) {
	for _, d := range st.Decapsulators {
		if d.Interface == ifname {
			return d.IPIPPackets, d.GREPackets
		}
	}
	return 0, 0
}

// TestBackendNetnsWithoutBPFFS runs setup without a BPF filesystem: under
// `ip netns exec`, whose private /sys has none, and under `nsenter --net`,
// with the host's mounts (none on this machine either), on each hook. The
// decapsulator that dsrctl attached must decapsulate real IPIP and GRE packets
// after dsrctl has exited, status must find it through the interface, and
// teardown must leave nothing: no program on TCX ingress, no tc filter, no
// clsact qdisc, no VIP.
func TestBackendNetnsWithoutBPFFS(t *testing.T) {
	for _, via := range []string{viaIPNetnsExec, viaNsenter} {
		for _, hook := range []string{"auto", "tc"} {
			t.Run(via+"/"+hook, func(t *testing.T) {
				testBackendWithoutBPFFS(t, via, hook)
			})
		}
	}
}

func testBackendWithoutBPFFS(t *testing.T, via, hook string) {
	topo := newDSRTopology(t, false)
	lb, be := topo.lb, topo.be
	vip := tVIP.String()
	if via == viaIPNetnsExec {
		out, err := be.command(via, "stat", "-f", "-c", "%T", "/sys/fs/bpf").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "bpf_fs" {
			t.Fatalf("/sys/fs/bpf under ip netns exec is a BPF filesystem: the test premise fails")
		}
	}
	tcx := be.haveTCX()
	wantHook := "tc"
	if hook == "auto" && tcx {
		wantHook = "tcx"
	}
	attachedTo := map[string]string{"tcx": "attached to TCX ingress", "tc": "attached to tc ingress (clsact, cls_bpf filter dsr_decap)"}[wantHook]

	out := be.mustDsrctlVia(t, via, "setup", "--vip", vip, "--mode", "ipip", "--hook", hook)
	if !strings.Contains(out, "using the eBPF decapsulator") {
		t.Skip("this kernel has ipip: the kernel decapsulates, not eBPF")
	}
	if want := "decap be0: " + attachedTo + ", 10.251.0.10 ipip added"; !strings.Contains(out, want) {
		t.Errorf("setup output lacks %q", want)
	}
	out = be.mustDsrctlVia(t, via, "setup", "--vip", vip, "--mode", "gre", "--hook", hook)
	if want := "decap be0: already attached, 10.251.0.10 gre added"; !strings.Contains(out, want) {
		t.Errorf("second setup output lacks %q", want)
	}

	// What the kernel shows, independently of dsrctl.
	if tcx {
		if n, want := be.tcxPrograms(t, "be0"), map[string]int{"tcx": 1, "tc": 0}[wantHook]; n != want {
			t.Errorf("got %d TCX ingress programs on be0, want %d", n, want)
		}
	}
	filters := be.tc(t, "filter", "show", "dev", "be0", "ingress")
	t.Logf("tc filter show dev be0 ingress:\n%s", filters)
	if got := strings.Contains(filters, "dsr_decap") && strings.Contains(filters, "direct-action"); got != (wantHook == "tc") {
		t.Errorf("tc filter show dev be0 ingress:\n%s\nwant a dsr_decap direct-action filter: %v", filters, wantHook == "tc")
	}

	// dsrctl has exited: the interface holds the decapsulator.
	probe := newUDPProbe(t, lb, be)
	const n = 3
	probe.expect(t, "ipip", n, true)
	probe.expect(t, "gre", n, true)

	status := be.mustDsrctlVia(t, via, "status", "-o", "json")
	var st backendStatusJSON
	if err := json.Unmarshal([]byte(status), &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, status)
	}
	if len(st.Decapsulators) != 1 {
		t.Fatalf("got %d decapsulators in status, want 1", len(st.Decapsulators))
	}
	d := st.Decapsulators[0]
	if d.Interface != "be0" || d.Hook != wantHook || d.Stale || d.Pins != "" || d.LinkID != 0 ||
		d.VIPs[vip] != "ipip+gre" || d.IPIPPackets != n || d.GREPackets != n {
		t.Errorf("got status %+v, want be0 on %s, %s ipip+gre, %d packets of each", d, wantHook, vip, n)
	}

	out = be.mustDsrctlVia(t, via, "teardown", "--vip", vip, "--mode", "ipip")
	if want := "decap be0: 10.251.0.10 ipip removed\n"; !strings.Contains(out, want) {
		t.Errorf("teardown ipip output lacks %q", want)
	}
	probe.expect(t, "ipip", 1, false)
	probe.expect(t, "gre", 1, true)
	out = be.mustDsrctlVia(t, via, "teardown", "--vip", vip, "--mode", "gre")
	if want := "decap be0: 10.251.0.10 gre removed, last VIP: detached"; !strings.Contains(out, want) {
		t.Errorf("teardown gre output lacks %q", want)
	}

	if tcx {
		if n := be.tcxPrograms(t, "be0"); n != 0 {
			t.Errorf("got %d TCX ingress programs on be0 after teardown, want 0", n)
		}
	}
	if f := be.tc(t, "filter", "show", "dev", "be0", "ingress"); strings.TrimSpace(f) != "" {
		t.Errorf("tc ingress filters left after teardown:\n%s", f)
	}
	if q := be.tc(t, "qdisc", "show", "dev", "be0"); strings.Contains(q, "clsact") {
		t.Errorf("clsact qdisc left after teardown:\n%s", q)
	}
	if be.hasAddr(t, "lo", tVIP) {
		t.Errorf("VIP still on lo after teardown")
	}
	if out := be.mustDsrctlVia(t, via, "status"); !strings.Contains(out, "no eBPF decapsulator") {
		t.Errorf("status after teardown:\n%s", out)
	}
}

// TestBackendNetnsCannotLoadBPF: where dsrctl may configure the network but
// not load BPF programs, ipip setup fails before it changes anything and says
// what is missing; l2 needs no BPF and works.
func TestBackendNetnsCannotLoadBPF(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	topo := newDSRTopology(t, false)
	be := topo.be
	code, out, errOut := be.dsrctlVia(t, viaNoBPFCaps, "setup", "--vip", tVIP.String(), "--mode", "ipip")
	if !strings.Contains(out, "using the eBPF decapsulator") {
		t.Skipf("this kernel has ipip (exit %d): no eBPF decapsulator needed\n%s%s", code, out, errOut)
	}
	t.Logf("stderr: %s", errOut)
	for _, want := range []string{"the eBPF decapsulator cannot run here: not permitted to load BPF programs", "CAP_SYS_ADMIN"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("got exit %d, stderr %q; want 1 and %q", code, errOut, want)
		}
	}
	if be.hasAddr(t, "lo", tVIP) {
		t.Errorf("failed setup left the VIP on lo")
	}
	if got := be.sysctl(t, "all", "arp_ignore"); got != "0" {
		t.Errorf("failed setup changed all.arp_ignore to %s", got)
	}
	be.mustDsrctlVia(t, viaNoBPFCaps, "setup", "--vip", tVIP.String(), "--mode", "l2")
	if !be.hasAddr(t, "lo", tVIP) {
		t.Errorf("l2 setup did not put the VIP on lo")
	}
}

func TestBackendNetnsDecapUDP(t *testing.T) {
	topo := newDSRTopology(t, false)
	lb, be := topo.lb, topo.be
	bpffs := topo.bpffs
	vip := tVIP.String()

	// Strict reverse path filtering, as many distributions default to:
	// setup must turn it off, or the decapsulated packets from a client
	// the backend has no route to are dropped.
	if err := be.do(func() error {
		for _, d := range []string{"all", "be0"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+d+"/rp_filter", []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// ipip: setup twice (idempotent), from separate processes.
	out := be.mustDsrctl(t, "setup", "--vip", vip, "--mode", "ipip", "--bpffs", bpffs)
	kernelTunnel := !strings.Contains(out, "using the eBPF decapsulator")
	if kernelTunnel {
		t.Log("this kernel has ipip: the kernel decapsulates, not eBPF")
	} else {
		for _, want := range []string{"address 10.251.0.10/32 on lo: added", "decap be0: attached to TCX ingress"} {
			if !strings.Contains(out, want) {
				t.Errorf("setup output lacks %q", want)
			}
		}
	}
	out = be.mustDsrctl(t, "setup", "--vip", vip, "--mode", "ipip", "--bpffs", bpffs)
	if !kernelTunnel {
		for _, want := range []string{"address 10.251.0.10/32 on lo: present", "decap be0: already attached, 10.251.0.10 ipip already present"} {
			if !strings.Contains(out, want) {
				t.Errorf("second setup output lacks %q", want)
			}
		}
		if n := be.tcxPrograms(t, "be0"); n != 1 {
			t.Errorf("got %d TCX programs on be0, want 1", n)
		}
	}
	for _, s := range []struct{ dev, key, want string }{
		{"all", "arp_ignore", "1"}, {"all", "arp_announce", "2"},
		{"lo", "arp_ignore", "1"}, {"lo", "arp_announce", "2"},
		{"be0", "arp_ignore", "1"}, {"be0", "arp_announce", "2"},
		{"all", "rp_filter", "0"}, {"be0", "rp_filter", "0"},
	} {
		if got := be.sysctl(t, s.dev, s.key); got != s.want {
			t.Errorf("got %s.%s=%s, want %s", s.dev, s.key, got, s.want)
		}
	}

	probe := newUDPProbe(t, lb, be)
	const n = 3
	sendAndExpect := func(mode string, wantDelivered bool) {
		t.Helper()
		probe.expect(t, mode, n, wantDelivered)
	}

	sendAndExpect("ipip", true)
	// Not for a VIP: passes untouched, the kernel drops it.
	probe.send(tBE, tEncap("ipip", tLB, tBE, 200, probe.inner(tOther, "not-a-vip")))
	if !kernelTunnel {
		if ipip, gre := decapCounts(backendStatusOf(t, be, bpffs), "be0"); ipip != n || gre != 0 {
			t.Errorf("got counters ipip=%d gre=%d, want %d and 0", ipip, gre, n)
		}
		// GRE is not configured yet: not decapsulated.
		sendAndExpect("gre", false)
	}

	// gre for the same VIP shares the program.
	be.mustDsrctl(t, "setup", "--vip", vip, "--mode", "gre", "--bpffs", bpffs)
	sendAndExpect("gre", true)
	if !kernelTunnel {
		st := backendStatusOf(t, be, bpffs)
		ipip, gre := decapCounts(st, "be0")
		t.Logf("decapsulated on be0: ipip=%d gre=%d", ipip, gre)
		if ipip != n || gre != n {
			t.Errorf("got counters ipip=%d gre=%d, want %d each", ipip, gre, n)
		}
		if len(st.Decapsulators) != 1 || st.Decapsulators[0].VIPs[vip] != "ipip+gre" {
			t.Errorf("got status %+v, want be0 with %s ipip+gre", st, vip)
		}
		if n := be.tcxPrograms(t, "be0"); n != 1 {
			t.Errorf("got %d TCX programs on be0, want 1", n)
		}
		table := be.mustDsrctl(t, "status", "--bpffs", bpffs)
		if !strings.Contains(table, "10.251.0.10/ipip+gre") {
			t.Errorf("status table lacks the VIP:\n%s", table)
		}
	}

	// Teardown ipip: GRE still works, the VIP stays on lo.
	out = be.mustDsrctl(t, "teardown", "--vip", vip, "--mode", "ipip", "--bpffs", bpffs)
	if !kernelTunnel {
		if !strings.Contains(out, "kept, still decapsulated on be0 (gre)") {
			t.Errorf("teardown ipip output does not keep the VIP:\n%s", out)
		}
		sendAndExpect("ipip", false)
	}
	sendAndExpect("gre", true)

	// Teardown gre: everything is gone.
	be.mustDsrctl(t, "teardown", "--vip", vip, "--mode", "gre", "--bpffs", bpffs)
	if be.hasAddr(t, "lo", tVIP) {
		t.Errorf("VIP still on lo after teardown")
	}
	if n := be.tcxPrograms(t, "be0"); n != 0 {
		t.Errorf("got %d TCX programs on be0 after teardown, want 0", n)
	}
	if st := backendStatusOf(t, be, bpffs); len(st.Decapsulators) != 0 {
		t.Errorf("decapsulators left after teardown: %+v", st)
	}
	entries, _ := filepath.Glob(filepath.Join(bpffs, "dsrlb", "*", "be0"))
	if len(entries) != 0 {
		t.Errorf("pins left after teardown: %v", entries)
	}
	out = be.mustDsrctl(t, "teardown", "--vip", vip, "--mode", "gre", "--bpffs", bpffs)
	if !strings.Contains(out, "nothing to undo") {
		t.Errorf("second teardown output: %s", out)
	}
}

// testLB is a userspace stand-in for the dsrlb data plane in namespace lb: it
// captures every IPv4 packet to the VIP arriving on ifname, encapsulates it
// for the backend and sends it with a raw socket. It also counts packets from
// the VIP seen on any interface of lb, which DSR replies must never cross.
type testLB struct {
	forwarded atomic.Int64
	fromVIP   atomic.Int64
}

func startTestLB(t *testing.T, lb *testNetns, ifname, mode string) *testLB {
	t.Helper()
	l := &testLB{}
	var capFD, watchFD, rawFD int
	err := lb.do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		if capFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.Bind(capFD, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.Index}); err != nil {
			return err
		}
		if watchFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		rawFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		t.Fatalf("test LB sockets: %v", err)
	}
	t.Cleanup(func() { unix.Close(rawFD) }) // after the loops have stopped
	vip := tVIP.As4()
	var id uint16
	packetLoop(t, capFD, func(pkt []byte, from *unix.SockaddrLinklayer) { // forward
		if from == nil || from.Pkttype == unix.PACKET_OUTGOING {
			return
		}
		if len(pkt) < 20 || pkt[0]>>4 != 4 || !bytes.Equal(pkt[16:20], vip[:]) {
			return
		}
		inner := append([]byte(nil), pkt...)
		tFixL4Checksum(inner)
		id++
		if err := unix.Sendto(rawFD, tEncap(mode, tLB, tBE, id, inner), 0, &unix.SockaddrInet4{Addr: tBE.As4()}); err == nil {
			l.forwarded.Add(1)
		}
	})
	packetLoop(t, watchFD, func(pkt []byte, _ *unix.SockaddrLinklayer) { // replies crossing the load balancer
		if len(pkt) >= 20 && bytes.Equal(pkt[12:16], vip[:]) {
			l.fromVIP.Add(1)
		}
	})
	return l
}

// packetLoop calls fn, on a goroutine of its own, with every packet that
// the packet socket fd receives, until the test ends; then it closes fd. A
// short receive timeout lets the loop see the end.
func packetLoop(t *testing.T, fd int, fn func(pkt []byte, from *unix.SockaddrLinklayer)) {
	t.Helper()
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // timeout
			}
			sll, _ := from.(*unix.SockaddrLinklayer)
			fn(buf[:n], sll)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(fd)
	})
}

// listenTCP listens on addr in n until the test ends.
func listenTCP(t *testing.T, n *testNetns, addr netip.AddrPort) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := n.do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialTCP connects from n to addr.
func dialTCP(n *testNetns, addr netip.AddrPort) (*net.TCPConn, error) {
	var conn *net.TCPConn
	err := n.do(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err == nil {
			conn = c.(*net.TCPConn)
		}
		return err
	})
	return conn, err
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// TestBackendNetnsDSRTCP runs a real TCP connection through the whole DSR
// path: client -> load balancer (encapsulates) -> backend (decapsulates, the
// VIP on lo accepts) -> replies from the VIP straight to the client.
func TestBackendNetnsDSRTCP(t *testing.T) {
	for _, mode := range []string{"ipip", "gre"} {
		t.Run(mode, func(t *testing.T) {
			topo := newDSRTopology(t, true)
			lb, be, cl := topo.lb, topo.be, topo.cl
			be.mustDsrctl(t, "setup", "--vip", tVIP.String(), "--mode", mode, "--bpffs", topo.bpffs)
			fake := startTestLB(t, lb, "lbc", mode)

			ln := listenTCP(t, be, netip.AddrPortFrom(tVIP, 8080))
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 256)
				n, _ := c.Read(buf)
				c.Write(bytes.ToUpper(buf[:n]))
			}()

			conn, err := dialTCP(cl, netip.AddrPortFrom(tVIP, 8080))
			if err != nil {
				t.Fatalf("connect to the VIP: %v (forwarded %d)", err, fake.forwarded.Load())
			}
			defer conn.Close()
			if got := conn.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != tClient {
				t.Errorf("client address %s, want %s", got, tClient)
			}
			msg := "hello over " + mode
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			reply, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read reply: %v", err)
			}
			if string(reply) != strings.ToUpper(msg) {
				t.Errorf("got reply %q, want %q", reply, strings.ToUpper(msg))
			}
			// The test LB counts a packet after sending it, so the
			// count may trail the connection by a packet or two.
			conn.Close()
			for deadline := time.Now().Add(2 * time.Second); fake.forwarded.Load() < 3 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			st := backendStatusOf(t, be, topo.bpffs)
			ipip, gre := decapCounts(st, "be0")
			fwd := fake.forwarded.Load()
			t.Logf("%s: load balancer forwarded %d packets, backend decapsulated ipip=%d gre=%d, replies seen by the load balancer: %d",
				mode, fwd, ipip, gre, fake.fromVIP.Load())
			if fwd < 3 {
				t.Errorf("load balancer forwarded %d packets, want at least SYN, ACK, data", fwd)
			}
			if len(st.Decapsulators) > 0 { // not with kernel tunnels
				if got := map[string]uint64{"ipip": ipip, "gre": gre}[mode]; got < 3 {
					t.Errorf("backend decapsulated %d %s packets, want at least 3", got, mode)
				}
			}
			if n := fake.fromVIP.Load(); n != 0 {
				t.Errorf("%d packets from the VIP crossed the load balancer; DSR replies must not", n)
			}
			be.mustDsrctl(t, "teardown", "--vip", tVIP.String(), "--mode", mode, "--bpffs", topo.bpffs)
		})
	}
}
