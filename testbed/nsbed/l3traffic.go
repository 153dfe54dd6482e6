package nsbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RouterAlert is an IPv4 Router Alert option (RFC 2113): type 148, length
// 4, value 0. The Linux kernel accepts it in IP_OPTIONS and delivers a
// packet that carries it like any other.
var RouterAlert = []byte{0x94, 0x04, 0x00, 0x00}

// UDPProbe sends datagrams from one socket, so one flow, with socket
// options that shape their IP headers, and collects the echoes of
// backendsrv.
type UDPProbe struct {
	// Count datagrams of Size payload bytes (default 32) are sent.
	Count, Size int
	// IPOptions, if set, are put into every datagram's IPv4 header by the
	// kernel (setsockopt IP_OPTIONS).
	IPOptions []byte
	// NoDF sets IP_PMTUDISC_DONT: the kernel never sets DF and fragments a
	// datagram larger than the path MTU itself.
	NoDF bool
	// GSOSize, if set, sends each datagram with UDP generic segmentation
	// offload (setsockopt UDP_SEGMENT): the kernel cuts it into datagrams
	// of GSOSize payload bytes, or, where the devices on the way offload
	// UDP segmentation (veth and bridges do), hands it over as one
	// super-frame.
	GSOSize int
	// Wait bounds the wait for echoes after the last datagram is sent
	// (default 1 s); it ends early once every datagram is answered.
	Wait time.Duration
}

// UDPProbeResult is what a UDPProbe saw.
type UDPProbeResult struct {
	Sent, Echoed int
	// PerBackend counts echoes by the backend that sent them; Sources by
	// the address they came from (want only the VIP).
	PerBackend map[string]int
	Sources    map[string]int
	Errors     []string
}

// Run sends the datagrams from ns to addr.
func (p UDPProbe) Run(ctx context.Context, ns *NS, addr string) (*UDPProbeResult, error) {
	if p.Size == 0 {
		p.Size = 32
	}
	if p.Wait == 0 {
		p.Wait = time.Second
	}
	dst, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, err
	}
	pc, err := ns.ListenPacket("udp4", ":0")
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	if err := p.setsockopts(pc.(*net.UDPConn)); err != nil {
		return nil, fmt.Errorf("[%s] %w", ns.Short, err)
	}
	r := &UDPProbeResult{PerBackend: map[string]int{}, Sources: map[string]int{}}
	sent := map[string]bool{}
	for i := 0; i < p.Count; i++ {
		msg := fmt.Sprintf("probe=%d ", i)
		msg += strings.Repeat("x", max(0, p.Size-len(msg)))
		if _, err := pc.WriteTo([]byte(msg), dst); err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("send %d: %v", i, err))
			continue
		}
		r.Sent++
		sent[msg] = true
	}
	deadline := time.Now().Add(p.Wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	buf := make([]byte, 65536)
	for r.Echoed < r.Sent {
		_ = pc.SetReadDeadline(deadline)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			break // the deadline
		}
		r.Sources[from.String()]++
		name, rest, ok := strings.Cut(strings.TrimPrefix(string(buf[:n]), "backend="), " ")
		if !ok || !sent[rest] {
			r.Errors = append(r.Errors, fmt.Sprintf("unexpected answer %.60q", buf[:n]))
			continue
		}
		delete(sent, rest)
		r.Echoed++
		r.PerBackend[name]++
	}
	return r, nil
}

func (p UDPProbe) setsockopts(c *net.UDPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if p.NoDF {
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); serr != nil {
				serr = fmt.Errorf("IP_MTU_DISCOVER: %w", serr)
				return
			}
		}
		if len(p.IPOptions) > 0 {
			if serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, string(p.IPOptions)); serr != nil {
				serr = fmt.Errorf("IP_OPTIONS % x: %w", p.IPOptions, serr)
				return
			}
		}
		if p.GSOSize > 0 {
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, p.GSOSize); serr != nil {
				serr = fmt.Errorf("UDP_SEGMENT %d: %w", p.GSOSize, serr)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// SNMP returns the namespace's kernel counters from /proc/net/snmp keyed
// "Ip.FragCreates", "Icmp.InDestUnreachs", ...
func (n *NS) SNMP() (map[string]uint64, error) {
	out, err := n.Run("cat", "/proc/net/snmp")
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	lines := strings.Split(out, "\n")
	// Lines come in pairs: "Ip: Forwarding DefaultTTL ...", "Ip: 1 64 ...".
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || len(names) != len(values) || names[0] != values[0] {
			return nil, fmt.Errorf("[%s] /proc/net/snmp: unexpected lines %q, %q", n.Short, lines[i], lines[i+1])
		}
		group := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			v, _ := strconv.ParseInt(values[j], 10, 64) // a few are signed (Tcp.MaxConn)
			m[group+"."+names[j]] = uint64(v)
		}
	}
	return m, nil
}

// SNMP6 returns the namespace's IPv6 kernel counters from /proc/net/snmp6
// keyed as there: "Icmp6InPktTooBigs", "Ip6FragCreates", ...
func (n *NS) SNMP6() (map[string]uint64, error) {
	out, err := n.Run("cat", "/proc/net/snmp6")
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("[%s] /proc/net/snmp6: %q: %w", n.Short, line, err)
		}
		m[f[0]] = v
	}
	return m, nil
}

var routeMTURE = regexp.MustCompile(`\bmtu (\d+)\b`)

// RouteMTU returns what `ip route get dst` says in the namespace and the
// MTU in it: a learnt path MTU shows as "cache expires ...s mtu N"; 0 when
// the route has none (the device's MTU applies).
func (n *NS) RouteMTU(dst netip.Addr) (mtu int, route string, err error) {
	out, err := n.Run("ip", "route", "get", dst.String())
	if err != nil {
		return 0, "", err
	}
	route = strings.Join(strings.Fields(out), " ")
	if m := routeMTURE.FindStringSubmatch(route); m != nil {
		mtu, _ = strconv.Atoi(m[1])
	}
	return mtu, route, nil
}

// Offloads returns the offload features of iface that decide what sizes
// of packets leave a host (`ethtool -k`): "tx-checksumming",
// "tcp-segmentation-offload", "generic-segmentation-offload",
// "generic-receive-offload", each "on" or "off" (a "[fixed]" suffix
// dropped).
func (n *NS) Offloads(iface string) (map[string]string, error) {
	out, err := n.Run("ethtool", "-k", iface)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{"tx-checksumming": true, "tcp-segmentation-offload": true,
		"generic-segmentation-offload": true, "generic-receive-offload": true}
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if f := strings.Fields(v); ok && want[k] && len(f) > 0 {
			m[k] = f[0]
		}
	}
	return m, nil
}
