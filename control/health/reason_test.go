package health

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestHealthViaVIP: a monitor through the VIP connects to the VIP (here
// 127.0.0.1, the backend 127.0.0.1 too: loopback only) from the source
// ProbeSource gives for each probe, through ProbeDialer; its failures read
// as what to check on the backend.
func TestHealthViaVIP(t *testing.T) {
	var mu sync.Mutex
	var froms []int
	var hosts []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		ap := netip.MustParseAddrPort(r.RemoteAddr)
		froms, hosts = append(froms, int(ap.Port())), append(hosts, r.Host)
	})}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	port := portOf(t, l.Addr())
	base := closedTCPPort(t) // a free local port; its neighbours, likely too
	var dials []netip.AddrPort
	opts := Options{
		ProbeSource: func(tg Target, n uint32) (netip.AddrPort, error) {
			switch tg.Service {
			case "unmapped":
				return netip.AddrPort{}, ErrNoProbePath
			case "unresolved":
				return netip.AddrPort{}, ErrNextHopUnresolved
			}
			return netip.AddrPortFrom(loopback, uint16(base)+uint16(n%2)), nil
		},
		ProbeDialer: func(ctx context.Context, network string, local, addr netip.AddrPort) (net.Conn, error) {
			mu.Lock()
			dials = append(dials, local)
			mu.Unlock()
			return DialFrom(ctx, network, local, addr)
		},
	}
	via := func(typ Type, p int) *Config {
		c := fast(typ, p, 1, 1)
		c.Via, c.VIP, c.Mode = ViaVIP, loopback, "ipip"
		return c
	}
	ms, clk := newMonitors(t, opts)
	mons := map[string]*Config{"web": via(TypeHTTP, port), "refused": via(TypeTCP, closedTCPPort(t)), "unmapped": via(TypeTCP, port), "unresolved": via(TypeTCP, port)}
	mons["web"].Path, mons["web"].Expect = "/", []int{200}
	ms.Update(hcTargets(mons))
	probeRound(t, clk, len(mons))
	probeRound(t, clk, len(mons))

	st := wantState(t, ms, "web", Up)
	if st.Via != ViaVIP || st.Target != "127.0.0.1:"+strconv.Itoa(port)+" through ipip to 127.0.0.1" {
		t.Errorf("web: via %v target %q", st.Via, st.Target)
	}
	mu.Lock()
	if len(froms) != 2 || froms[0] != base || froms[1] != base+1 {
		t.Errorf("requests came from ports %v, want %d then %d", froms, base, base+1)
	}
	for _, h := range hosts {
		if h != "127.0.0.1:"+strconv.Itoa(port) {
			t.Errorf("Host %q, want the VIP's", h)
		}
	}
	mu.Unlock()
	for name, want := range map[string]string{
		"refused":    "connection refused by the VIP: nothing listens on 127.0.0.1:",
		"unmapped":   "cannot probe through the VIP 127.0.0.1:" + strconv.Itoa(port) + ": the appliance has no probe path",
		"unresolved": "not probed through the VIP 127.0.0.1:" + strconv.Itoa(port) + ": the next hop to 127.0.0.1 is not resolved",
	} {
		st := wantState(t, ms, name, Down)
		if !strings.HasPrefix(st.Reason, want) || !strings.HasSuffix(st.Reason, "127.0.0.1") && name == "refused" {
			t.Errorf("%s: reason %q, want it to start %q", name, st.Reason, want)
		}
	}
}

// TestExplain: timeouts name what to check on which host, per mode.
func TestExplain(t *testing.T) {
	be := netip.MustParseAddr("10.1.2.3")
	vip := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		cfg  Config
		err  error
		want string
	}{
		{Config{Type: TypeHTTP, Port: 80, Via: ViaVIP, VIP: vip, Mode: "ipip", Timeout: 500e6}, context.DeadlineExceeded,
			"no answer from the VIP 192.0.2.1:80 through ipip within 500ms: check the VIP on lo and the decapsulator on 10.1.2.3"},
		{Config{Type: TypeTCP, Port: 80, Via: ViaVIP, VIP: vip, Mode: "l2", Timeout: 1e9}, context.DeadlineExceeded,
			"no answer from the VIP 192.0.2.1:80 through l2 within 1s: check the VIP on lo of 10.1.2.3 (and that it answers from it)"},
		{Config{Type: TypeTCP, Port: 80, Via: ViaBackend, VIP: vip, Mode: "gre", Timeout: 1e9}, context.DeadlineExceeded,
			"no answer from 10.1.2.3:80 within 1s: is the host up and the port open?"},
		{Config{Type: TypeICMP, Via: ViaVIP, VIP: vip, Mode: "gre", Timeout: 1e9}, context.DeadlineExceeded,
			"no answer from 10.1.2.3 within 1s: is the host up?"},
	} {
		if got := explain(&tc.cfg, be, tc.err); got != tc.want {
			t.Errorf("explain(%+v, %v):\n got %q\nwant %q", tc.cfg, tc.err, got, tc.want)
		}
	}
}

// TestExplain6: the reasons of probes through an IPv6 VIP bracket the
// VIP with its port and name the backend, of either family.
func TestExplain6(t *testing.T) {
	vip := netip.MustParseAddr("2001:db8:100::1")
	for _, tc := range []struct {
		cfg  Config
		be   string
		err  error
		want string
	}{
		{Config{Type: TypeHTTP, Port: 80, Via: ViaVIP, VIP: vip, Mode: "l2", Timeout: 500e6}, "2001:db8:0:1::21", context.DeadlineExceeded,
			"no answer from the VIP [2001:db8:100::1]:80 through l2 within 500ms: check the VIP on lo of 2001:db8:0:1::21 (and that it answers from it)"},
		{Config{Type: TypeTCP, Port: 443, Via: ViaVIP, VIP: vip, Mode: "gre", Timeout: 1e9}, "10.2.0.1", context.DeadlineExceeded,
			"no answer from the VIP [2001:db8:100::1]:443 through gre within 1s: check the VIP on lo and the decapsulator on 10.2.0.1"},
		{Config{Type: TypeUDP, Port: 53, Via: ViaVIP, VIP: vip, Mode: "ipip"}, "2001:db8:0:2::21", syscall.ECONNREFUSED,
			"connection refused by the VIP: nothing listens on [2001:db8:100::1]:53 on 2001:db8:0:2::21"},
	} {
		if got := explain(&tc.cfg, netip.MustParseAddr(tc.be), tc.err); got != tc.want {
			t.Errorf("explain(%+v, %v):\n got %q\nwant %q", tc.cfg, tc.err, got, tc.want)
		}
	}
}

// TestExplainUDPRefused: an ICMP port unreachable to a udp probe through
// the VIP reads as nothing listening there.
func TestExplainUDPRefused(t *testing.T) {
	cfg := Config{Type: TypeUDP, Port: 53, Via: ViaVIP, VIP: netip.MustParseAddr("192.0.2.1"), Mode: "gre"}
	err := UDPChecker{Addr: netip.AddrPortFrom(loopback, uint16(closedUDPPort(t)))}.Check(context.Background())
	want := "connection refused by the VIP: nothing listens on 192.0.2.1:53 on 10.1.2.3"
	if got := explain(&cfg, netip.MustParseAddr("10.1.2.3"), err); got != want {
		t.Errorf("explain(%v) = %q, want %q", err, got, want)
	}
}

// TestHealthViaVIP6: tcp and udp monitors through an IPv6 VIP (::1 here,
// loopback only; the backend 127.0.0.1 only names the target) dial tcp6
// and udp6 from the IPv6 source ProbeSource gives, through ProbeDialer:
// the backend sees the probe source ports.
func TestHealthViaVIP6(t *testing.T) {
	loopback6 := netip.MustParseAddr("::1")
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var froms []netip.AddrPort
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			froms = append(froms, netip.MustParseAddrPort(c.RemoteAddr().String()))
			mu.Unlock()
			c.Close()
		}
	}()
	udp := serveUDP(t, "udp6", "[::1]:0", func(b []byte, from net.Addr) []byte {
		mu.Lock()
		froms = append(froms, netip.MustParseAddrPort(from.String()))
		mu.Unlock()
		return b
	})
	base := uint16(closedTCPPort(t))
	var networks []string
	opts := Options{
		ProbeSource: func(tg Target, n uint32) (netip.AddrPort, error) {
			if tg.Service == "udp" {
				return netip.AddrPortFrom(loopback6, base+2), nil
			}
			return netip.AddrPortFrom(loopback6, base), nil
		},
		ProbeDialer: func(ctx context.Context, network string, local, addr netip.AddrPort) (net.Conn, error) {
			mu.Lock()
			networks = append(networks, network)
			mu.Unlock()
			return DialFrom(ctx, network, local, addr)
		},
	}
	via := func(typ Type, p int) Config {
		c := fast(typ, p, 1, 1)
		c.Via, c.VIP, c.Mode = ViaVIP, loopback6, "l2"
		return *c
	}
	u := via(TypeUDP, portOf(t, udp.LocalAddr()))
	u.Send, u.Receive = "PING", "PING"
	ms, clk := newMonitors(t, opts)
	ms.Update(map[Target]Config{{Service: "tcp", Backend: loopback}: via(TypeTCP, portOf(t, l.Addr())), {Service: "udp", Backend: loopback}: u})
	probeRound(t, clk, 2)
	for _, svc := range []string{"tcp", "udp"} {
		if st := wantState(t, ms, svc, Up); st.Via != ViaVIP {
			t.Errorf("%s: via %v", svc, st.Via)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(networks)
	if !slices.Equal(networks, []string{"tcp6", "udp6"}) {
		t.Errorf("dialed %v, want tcp6 and udp6", networks)
	}
	for _, f := range froms {
		if f.Addr() != loopback6 || f.Port() != base && f.Port() != base+2 {
			t.Errorf("probe from %v, want [::1]:%d or :%d", f, base, base+2)
		}
	}
	if len(froms) < 2 {
		t.Errorf("the backends saw %d probes, want 2", len(froms))
	}
}
