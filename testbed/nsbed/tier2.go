package nsbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// The tier-2 bed: dsrlb (ipip) in front of HAProxy L7 proxies. It is the L3
// bed (client, router, appliance) whose DSR backends are HAProxy instances
// px1..pxN; each holds the VIP on lo, strips the envelope with dsrctl's
// eBPF decapsulator, terminates the client's TCP connection on VIP:80 and
// proxies every request to web servers web1..webM on a segment of their
// own. Answers go from the VIP through the router straight to the client.
//
//	front 10.96.1.0/24: client, appl (eth0 driven by DPDK), rtr
//	back  10.96.2.0/24: rtr, px1..pxN (eth0: the decapsulator; the VIP on lo)
//	web   10.96.3.0/24: px1..pxN (eth1), web1..webM
//
// docs/tier2.md is the guide to this setup; TestTier2DocMatchesBed keeps
// the configs it shows equal to those the bed runs.

// Addresses of the tier-2 bed beyond the L3 bed's (front, back, VIP).
var (
	// Tier2VIP is the service's VIP, on lo of every proxy.
	Tier2VIP = L3VIP("ipip")
	// Tier2WebSubnet is the segment between the proxies and the web
	// servers.
	Tier2WebSubnet = netip.MustParsePrefix("10.96.3.0/24")
)

// Ports and header names of the tier-2 bed's proxies.
const (
	// Tier2MonitorPort is where a proxy answers dsrlb's health check,
	// on the VIP (which dsrlb probes through the envelope, health.via:
	// vip) and on its own address.
	Tier2MonitorPort = 8404
	// ProxyHeader names the HAProxy instance that answered (px1, ...);
	// ClientHeader is the client address and port it accepted the
	// connection from.
	ProxyHeader  = "X-Proxy"
	ClientHeader = "X-Client"
)

// Tier2ProxyIP is the address of proxy i (1-based) on the back segment,
// the address dsrlb sends its envelopes to: 10.96.2.10+i.
func Tier2ProxyIP(i int) netip.Addr { return L3BackendIP(i) }

// Tier2ProxyWebIP is the address of proxy i on the web segment, from which
// it connects to the web servers: 10.96.3.10+i.
func Tier2ProxyWebIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 96, 3, byte(10 + i)}) }

// Tier2WebIP is the address of web server j (1-based): 10.96.3.20+j.
func Tier2WebIP(j int) netip.Addr { return netip.AddrFrom4([4]byte{10, 96, 3, byte(20 + j)}) }

// Tier2Options parametrise StartTier2.
type Tier2Options struct {
	Bins Binaries
	// Proxies is the number of HAProxy hosts built, set up and running;
	// default 3. InService of them, px1 first, are backends of the
	// service when dsrlb starts (default 2); the others are ready to be
	// added through the API.
	Proxies, InService int
	// Webs is the number of web servers; default 3.
	Webs int
	// Lcores is the appliance's EAL lcore list; default "0,1".
	Lcores string
	// Bed configures the underlying Bed.
	Bed Options
	// Config, if set, edits the appliance config (Tier2Config) before
	// dsrlb starts (an API token, ...).
	Config func(*v1.Config)
}

// Tier2Topology is the L3 bed without backends plus segment "web", hosts
// px1..px<proxies> with eth0 on the back segment (default route via the
// router) and eth1 on the web segment, and hosts web1..web<webs> on the web
// segment only: they answer the proxies on-link and have no route beyond.
func Tier2Topology(proxies, webs int) Topology {
	t := L3Topology(0, 1500)
	t.Segments = append(t.Segments, Segment{Name: "web"})
	back, web := L3BackSubnet.Bits(), Tier2WebSubnet.Bits()
	for i := 1; i <= proxies; i++ {
		t.Hosts = append(t.Hosts, Host{Name: "px" + strconv.Itoa(i),
			Links: []Link{
				{Segment: "back", Addrs: []netip.Prefix{netip.PrefixFrom(Tier2ProxyIP(i), back)}},
				{Segment: "web", Addrs: []netip.Prefix{netip.PrefixFrom(Tier2ProxyWebIP(i), web)}},
			},
			Routes: []Route{{Via: L3RouterBackIP}}})
	}
	for j := 1; j <= webs; j++ {
		t.Hosts = append(t.Hosts, Host{Name: "web" + strconv.Itoa(j),
			Links: []Link{{Segment: "web", Addrs: []netip.Prefix{netip.PrefixFrom(Tier2WebIP(j), web)}}}})
	}
	return t
}

// Tier2Service is the bed's one service: "web", tcp/80 on Tier2VIP, ipip,
// to proxies px1..px<proxies>, each checked with GET /healthz through the
// VIP, port Tier2MonitorPort (HAProxy's monitor-uri: 200 while the proxy
// has a web server up).
func Tier2Service(proxies int) v1.Service {
	return v1.Service{Name: "web", VIP: Tier2VIP.String(), Protocol: "tcp", Port: HTTPPort, Mode: "ipip",
		Backends: backendList(proxies, Tier2ProxyIP),
		Health: &v1.Health{Type: "http", Port: Tier2MonitorPort, Path: "/healthz",
			Interval: v1.Duration(time.Second), Timeout: v1.Duration(time.Second), Rise: 2, Fall: 3}}
}

// Tier2Config is the appliance config of the tier-2 bed: the L3 bed's
// port (eth0 on net_af_packet, the router as gateway) and Tier2Service.
func Tier2Config(b *Bed, proxies int, lcores string) v1.Config {
	cfg := L3Config(b, 0, lcores, 1500, L3AFPacketDevice)
	cfg.Services = []v1.Service{Tier2Service(proxies)}
	return cfg
}

// HAProxyConfig is the configuration of one tier-2 HAProxy instance.
type HAProxyConfig struct {
	// Name is the instance's name, sent in ProxyHeader.
	Name string
	// VIP is bound on port 80: local on lo (dsrctl backend setup).
	VIP netip.Addr
	// Monitor is the proxy's own address, where its health check answers
	// too (port Tier2MonitorPort), besides the VIP.
	Monitor netip.Addr
	// Webs are the web servers (port 80), named web1, web2, ...
	Webs []netip.Addr
}

// Tier2HAProxyConfig is the configuration of proxy i of a bed with webs
// web servers.
func Tier2HAProxyConfig(i, webs int) HAProxyConfig {
	c := HAProxyConfig{Name: "px" + strconv.Itoa(i), VIP: Tier2VIP, Monitor: Tier2ProxyIP(i)}
	for j := 1; j <= webs; j++ {
		c.Webs = append(c.Webs, Tier2WebIP(j))
	}
	return c
}

// String renders c as haproxy.cfg (HAProxy 2.6, Debian bookworm).
//
// mode http terminates HTTP, so every request is balanced on its own
// (round robin over the web servers) and the answers can name the proxy.
// dontlog-normal logs only failed or aborted sessions, and dontlognull
// leaves out connections that closed without sending anything (port
// probes): an empty log is part of the evidence. The timeouts keep an idle keep-alive connection open
// for 30 s, longer than the tests pause between requests.
func (c HAProxyConfig) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 4096
    nbthread 1
    log stdout format raw daemon

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    option dontlognull
    option forwardfor
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

# dsrlb's health check, through the VIP (and on the proxy's own
# address): 200 while a web server is up, 503 when none is
frontend monitor
    bind %s:%d
    bind %s:%d
    monitor-uri /healthz
    monitor fail if { nbsrv(web) lt 1 }

# the VIP: local on lo, reached through dsrlb's IPIP envelope
frontend vip
    bind %s:%d
    http-response set-header %s %s
    http-response set-header %s %%[src]:%%[src_port]
    default_backend web

backend web
    balance roundrobin
    option httpchk GET /
`, c.VIP, Tier2MonitorPort, c.Monitor, Tier2MonitorPort, c.VIP, HTTPPort, ProxyHeader, c.Name, ClientHeader)
	for j, w := range c.Webs {
		fmt.Fprintf(&b, "    server web%d %s:%d check inter 1s\n", j+1, w, HTTPPort)
	}
	return b.String()
}

// StartHAProxy writes c to the bed's work directory as <host>-haproxy.cfg,
// has HAProxy check it, starts it in the foreground in ns (output to
// <host>-haproxy.log; Close stops it) and waits until it accepts
// connections on the VIP and on the monitor address.
func StartHAProxy(ctx context.Context, ns *NS, c HAProxyConfig) (*Proc, error) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, fmt.Errorf("nsbed: the tier-2 bed needs haproxy (Debian package haproxy; make deps installs it): %w", err)
	}
	path := ns.bed.Path(ns.Short + "-haproxy.cfg")
	if err := os.WriteFile(path, []byte(c.String()), 0o644); err != nil {
		return nil, err
	}
	if _, err := ns.Run("haproxy", "-c", "-q", "-f", path); err != nil {
		return nil, fmt.Errorf("haproxy config %s: %w", path, err)
	}
	// -db: stay in the foreground (no daemon), so the Bed owns the process.
	p, err := ns.Start(ns.Short+"-haproxy", "haproxy", "-db", "-f", path)
	if err != nil {
		return nil, err
	}
	for _, addr := range []string{
		net.JoinHostPort(c.VIP.String(), strconv.Itoa(HTTPPort)),
		net.JoinHostPort(c.Monitor.String(), strconv.Itoa(Tier2MonitorPort)),
	} {
		if err := waitListening(ctx, ns, p, addr); err != nil {
			return nil, err
		}
	}
	ns.bed.Logf("%s: haproxy -db -f %s (log %s)", ns.Short, path, p.Log)
	return p, nil
}

// Tier2 is a running tier-2 bed.
type Tier2 struct {
	// L3 holds the client, the router and the appliance; its Backends
	// are the proxies px1..pxN (Proc: haproxy), all running, the first
	// InService of them in the service.
	*L3
	// Webs are the web servers web1..webM (Proc: backendsrv; no VIP, no
	// decapsulator).
	Webs Backends
}

// StartTier2 builds the tier-2 bed: web servers first, then every proxy
// host set up as a DSR backend of Tier2VIP with `dsrctl backend setup
// --mode ipip` on eth0 and running HAProxy, then dsrlb with the first
// InService proxies, and waits until it forwards to them. On error
// everything is torn down again.
func StartTier2(ctx context.Context, o Tier2Options) (t *Tier2, err error) {
	if o.Proxies == 0 {
		o.Proxies = 3
	}
	if o.InService == 0 {
		o.InService = 2
	}
	if o.Webs == 0 {
		o.Webs = 3
	}
	if o.Lcores == "" {
		o.Lcores = "0,1"
	}
	n, err := buildNet(o.Bed, fmt.Sprintf("tier-2 testbed: front %s, proxies %s, web servers %s, VIP %s",
		L3FrontSubnet, L3BackSubnet, Tier2WebSubnet, Tier2VIP), Tier2Topology(o.Proxies, o.Webs))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Bed.Close()
		}
	}()
	t = &Tier2{L3: &L3{Net: n, Client: n.Host("client"), Router: n.Host("rtr"), MTU: 1500, bins: o.Bins, modes: []string{"ipip"}}}
	for j := 1; j <= o.Webs; j++ {
		name := "web" + strconv.Itoa(j)
		w := &Backend{Name: name, NS: n.Host(name), IP: Tier2WebIP(j), Iface: "eth0"}
		if w.Proc, err = StartBackendsrv(ctx, w.NS, o.Bins.Backendsrv, name, net.JoinHostPort("0.0.0.0", strconv.Itoa(HTTPPort)), ""); err != nil {
			return nil, err
		}
		t.Webs = append(t.Webs, w)
	}
	if t.Backends, err = setupDSRHosts(n, o.Bins.Dsrctl, "px", o.Proxies, Tier2ProxyIP, dsrVIP{Tier2VIP, "ipip"}); err != nil {
		return nil, err
	}
	for i, px := range t.Backends {
		if px.Proc, err = StartHAProxy(ctx, px.NS, Tier2HAProxyConfig(i+1, o.Webs)); err != nil {
			return nil, err
		}
	}
	cfg := Tier2Config(n.Bed, o.InService, o.Lcores)
	if o.Config != nil {
		o.Config(&cfg)
	}
	if err := t.startAppliance(ctx, cfg); err != nil {
		return nil, err
	}
	return t, nil
}

// Proxy returns proxy pxi (1-based).
func (t *Tier2) Proxy(i int) *Backend { return t.Backends[i-1] }

// URL is http://Tier2VIP<path>.
func (t *Tier2) URL(path string) string { return "http://" + Tier2VIP.String() + path }

// Addr is Tier2VIP:80.
func (t *Tier2) Addr() string { return net.JoinHostPort(Tier2VIP.String(), strconv.Itoa(HTTPPort)) }

// ProxyOfWebAddr maps a proxy's address on the web segment (as a web
// server sees its connections come) to the proxy's name.
func (t *Tier2) ProxyOfWebAddr() map[string]string {
	m := map[string]string{}
	for i, px := range t.Backends {
		m[Tier2ProxyWebIP(i+1).String()] = px.Name
	}
	return m
}

// ProxyLogs returns the lines each proxy's HAProxy logged (failed or
// aborted sessions only: dontlog-normal), by proxy name; proxies that
// logged nothing are left out.
func (t *Tier2) ProxyLogs() map[string][]string {
	m := map[string][]string{}
	for _, px := range t.Backends {
		b, err := os.ReadFile(px.Proc.Log)
		if err != nil {
			m[px.Name] = []string{err.Error()}
			continue
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			m[px.Name] = strings.Split(s, "\n")
		}
	}
	return m
}
