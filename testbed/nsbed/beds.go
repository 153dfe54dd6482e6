package nsbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// What the L2, L3 and ECMP beds share: building the namespaces, setting up
// backend hosts be1..beN, the services' config, and starting dsrlb until it
// forwards.

// buildNet creates a Bed with o, logs what it is about to build (what
// names the bed) and builds topo in it. On error the Bed is closed again;
// on success the caller owns it (n.Bed).
func buildNet(o Options, what string, topo Topology) (*Net, error) {
	bed, err := New(o)
	if err != nil {
		return nil, err
	}
	bed.Logf("%s: building (namespaces %s*, work dir %s)", what, bed.Prefix(), bed.Dir())
	n, err := bed.Build(topo)
	if err != nil {
		bed.Close()
		return nil, err
	}
	return n, nil
}

// dsrVIP is a VIP a backend serves and the mode (l2, ipip, gre) in which
// the appliance hands it packets for it.
type dsrVIP struct {
	VIP  netip.Addr
	Mode string
}

// setupBackends makes hosts be1..be<count> of n DSR backends of every VIP
// in vips (SetupDSRBackend on eth0) and returns them with their address
// ip(i) and MAC. It starts no server (see Backend.Serve).
func setupBackends(n *Net, dsrctl string, count int, ip func(int) netip.Addr, vips ...dsrVIP) (Backends, error) {
	return setupDSRHosts(n, dsrctl, "be", count, ip, vips...)
}

// setupDSRHosts is setupBackends for hosts named prefix1..prefix<count>.
func setupDSRHosts(n *Net, dsrctl, prefix string, count int, ip func(int) netip.Addr, vips ...dsrVIP) (Backends, error) {
	var bes Backends
	for i := 1; i <= count; i++ {
		name := prefix + strconv.Itoa(i)
		be := &Backend{Name: name, NS: n.Host(name), IP: ip(i), Iface: "eth0"}
		for _, v := range vips {
			if err := SetupDSRBackend(be.NS, dsrctl, v.VIP, v.Mode, be.Iface); err != nil {
				return nil, err
			}
		}
		var err error
		if be.MAC, err = be.NS.LinkMAC(be.Iface); err != nil {
			return nil, err
		}
		bes = append(bes, be)
	}
	return bes, nil
}

// Serve starts backendsrv (binary bin) on b with HTTP on port HTTPPort and
// UDP on port UDPPort, over IPv6 too when b has an IPv6 address, waits
// until it accepts connections and sets b.Proc.
func (b *Backend) Serve(ctx context.Context, bin string) error {
	httpHost, extra := "0.0.0.0", []string(nil)
	if b.IP6.IsValid() {
		httpHost, extra = "::", []string{"--udp6", net.JoinHostPort("::", strconv.Itoa(UDPPort))}
	}
	p, err := StartBackendsrv(ctx, b.NS, bin, b.Name,
		net.JoinHostPort(httpHost, strconv.Itoa(HTTPPort)), net.JoinHostPort("0.0.0.0", strconv.Itoa(UDPPort)), extra...)
	if err != nil {
		return err
	}
	b.Proc = p
	return nil
}

// Backends are the backend hosts of a bed, be1..beN in order.
type Backends []*Backend

// Names returns be1..beN.
func (bs Backends) Names() []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out
}

// ByIP maps backend addresses (IPv4 and IPv6) to names.
func (bs Backends) ByIP() map[string]string {
	m := map[string]string{}
	for _, b := range bs {
		m[b.IP.String()] = b.Name
		if b.IP6.IsValid() {
			m[b.IP6.String()] = b.Name
		}
	}
	return m
}

// ByMAC maps backend MACs to names.
func (bs Backends) ByMAC() map[string]string {
	m := map[string]string{}
	for _, b := range bs {
		m[b.MAC] = b.Name
	}
	return m
}

// Missing returns the backends absent from got (a per-backend tally).
func (bs Backends) Missing(got map[string]int) []string {
	var out []string
	for _, b := range bs {
		if got[b.Name] == 0 {
			out = append(out, b.Name)
		}
	}
	return out
}

// backendList is the config's backend list: ip(1)..ip(count).
func backendList(count int, ip func(int) netip.Addr) []v1.Backend {
	var bes []v1.Backend
	for i := 1; i <= count; i++ {
		bes = append(bes, v1.Backend{IP: ip(i).String()})
	}
	return bes
}

// webAndEcho are the services of the L2 and L3 beds on vip in mode with
// bes: "web"+suffix (tcp/80, HTTP health check) and "echo"+suffix
// (udp/9000, TCP health check on port 80).
func webAndEcho(suffix, vip, mode string, bes []v1.Backend) []v1.Service {
	return []v1.Service{
		{Name: "web" + suffix, VIP: vip, Protocol: "tcp", Port: HTTPPort, Mode: mode, Backends: bes,
			Health: &v1.Health{Type: "http", Path: "/", Interval: v1.Duration(time.Second), Timeout: v1.Duration(500 * time.Millisecond), Rise: 1, Fall: 3}},
		{Name: "echo" + suffix, VIP: vip, Protocol: "udp", Port: UDPPort, Mode: mode, Backends: bes,
			Health: &v1.Health{Type: "tcp", Port: HTTPPort, Interval: v1.Duration(time.Second), Timeout: v1.Duration(500 * time.Millisecond), Rise: 1, Fall: 3}},
	}
}

// startActive starts dsrlb (binary bin) in ns with cfg and waits, 30 s at
// most, until it forwards to every backend. It returns the Appliance
// whenever dsrlb started, with an error too, so that the caller can stop
// it.
func startActive(ctx context.Context, ns *NS, bin string, cfg v1.Config) (*Appliance, error) {
	app, err := StartDsrlb(ctx, ns, bin, cfg)
	if err != nil {
		return nil, err
	}
	return app, waitActive(ctx, app)
}

// waitActive waits, 30 s at most, until app forwards to every backend.
func waitActive(ctx context.Context, app *Appliance) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := app.WaitActive(wctx); err != nil {
		return fmt.Errorf("%w; dsrlb log:\n%s", err, app.Proc.Tail(20))
	}
	return nil
}

// allAtOnce runs f(0)..f(n-1) concurrently, waits for all and joins their
// errors.
func allAtOnce(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
