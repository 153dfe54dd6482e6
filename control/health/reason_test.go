package health

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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
		ProbeSource: func(tg Target, n uint32) (netip.AddrPort, bool) {
			if tg.Service == "unmapped" {
				return netip.AddrPort{}, false
			}
			return netip.AddrPortFrom(loopback, uint16(base)+uint16(n%2)), true
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
	mons := map[string]*Config{"web": via(TypeHTTP, port), "refused": via(TypeTCP, closedTCPPort(t)), "unmapped": via(TypeTCP, port)}
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
		"refused":  "connection refused by the VIP: nothing listens on 127.0.0.1:",
		"unmapped": "cannot probe through the VIP 127.0.0.1:" + strconv.Itoa(port) + ": the appliance has no probe path",
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
