package nsbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/dsrlb/dsrlb/control/kernel/nsrun"
)

// NS is one network namespace of a Bed.
type NS struct {
	// Name is the full namespace name (prefix + Short), as `ip netns` knows it.
	Name string
	// Short is the name within the bed: client, appl, be1, ...
	Short string
	bed   *Bed
}

// NewNS creates namespace short (full name: the bed's prefix + short) with
// lo up and IPv6 disabled unless ipv6, so no router solicitations, DAD or
// MLD reports add noise to counters and captures.
func (b *Bed) NewNS(short string, ipv6 bool) (*NS, error) {
	return b.addNS(short, ipv6, "add")
}

// AttachNS makes the network namespace of process pid (a container's) host
// short of the bed: `ip netns attach` gives it the name NewNS would have
// given a new one, and it is prepared the same way. Close removes the name
// again, after killing what still runs in the namespace (pid included).
func (b *Bed) AttachNS(short string, pid int, ipv6 bool) (*NS, error) {
	return b.addNS(short, ipv6, "attach", strconv.Itoa(pid))
}

// addNS names a namespace short with `ip netns <verb> NAME args...`,
// registers it for Close and prepares it (see NewNS).
func (b *Bed) addNS(short string, ipv6 bool, verb string, args ...string) (*NS, error) {
	ns := &NS{Name: b.prefix + short, Short: short, bed: b}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("nsbed: bed is closed")
	}
	b.mu.Unlock()
	if _, err := run(nil, append([]string{"ip", "netns", verb, ns.Name}, args...)...); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.nss = append(b.nss, ns)
	b.mu.Unlock()
	if !ipv6 {
		// -e: a kernel without IPv6 has nothing to disable.
		if _, err := ns.Run("sysctl", "-q", "-e", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
			return nil, err
		}
	}
	if _, err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// Run runs argv inside the namespace (bounded by a 30 s timeout) and
// returns its combined output.
func (n *NS) Run(argv ...string) (string, error) {
	return n.RunCtx(nil, argv...)
}

// RunCtx is Run bounded by ctx instead.
func (n *NS) RunCtx(ctx context.Context, argv ...string) (string, error) {
	out, err := run(ctx, append([]string{"ip", "netns", "exec", n.Name}, argv...)...)
	if err != nil {
		return out, fmt.Errorf("[%s] %w", n.Short, err)
	}
	return out, nil
}

// Output runs argv inside the namespace and returns its standard output
// only; standard error is part of the error.
func (n *NS) Output(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("[%s] %s: %w: %s", n.Short, strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Sysctl sets key/value pairs (net.ipv4.conf.all.arp_ignore, "1", ...).
func (n *NS) Sysctl(kv ...string) error {
	if len(kv)%2 != 0 {
		return errors.New("nsbed: Sysctl wants key/value pairs")
	}
	argv := []string{"sysctl", "-q", "-w"}
	for i := 0; i < len(kv); i += 2 {
		argv = append(argv, kv[i]+"="+kv[i+1])
	}
	_, err := n.Run(argv...)
	return err
}

// SysctlValue reads one sysctl.
func (n *NS) SysctlValue(key string) (string, error) {
	out, err := n.Run("sysctl", "-n", key)
	return strings.TrimSpace(out), err
}

// LinkMAC returns the MAC address of interface ifname.
func (n *NS) LinkMAC(ifname string) (string, error) {
	out, err := n.Run("ip", "-j", "link", "show", "dev", ifname)
	if err != nil {
		return "", err
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return "", fmt.Errorf("[%s] ip -j link show %s: unexpected output %q", n.Short, ifname, out)
	}
	return links[0].Address, nil
}

// Neighbor returns the MAC the namespace's kernel has for ip ("" if none
// or unresolved).
func (n *NS) Neighbor(ip string) (string, error) {
	out, err := n.Run("ip", "-j", "neigh", "show", ip)
	if err != nil {
		return "", err
	}
	var ns []struct {
		Lladdr string `json:"lladdr"`
	}
	if err := json.Unmarshal([]byte(out), &ns); err != nil {
		return "", fmt.Errorf("[%s] ip -j neigh: %w", n.Short, err)
	}
	for _, e := range ns {
		if e.Lladdr != "" {
			return e.Lladdr, nil
		}
	}
	return "", nil
}

// DialContext dials from inside the namespace: the socket is created on a
// thread switched into it, and a socket belongs to the namespace it was
// created in for its whole life. It suits http.Transport.DialContext.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Listen opens a listening socket inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// HTTPClient returns a client whose connections start in the namespace.
// With keepAlive false every request uses a new connection.
func (n *NS) HTTPClient(keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         n.DialContext,
			DisableKeepAlives:   !keepAlive,
			MaxIdleConnsPerHost: 4,
			Proxy:               nil,
		},
	}
}

// do runs fn on an OS thread switched into the namespace (nsrun.Do: the
// thread is switched back afterwards, or discarded if it cannot be).
// Errors entering the namespace name it; fn's own come back unchanged.
func (n *NS) do(fn func() error) error {
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		return fmt.Errorf("[%s] open netns: %w", n.Short, err)
	}
	defer h.Close()
	var ferr error
	if err := nsrun.Do(h, func() error { ferr = fn(); return nil }); err != nil {
		return fmt.Errorf("[%s] %w", n.Short, err)
	}
	return ferr
}

// Proc is a background process of a Bed.
type Proc struct {
	// Name names the process in logs; Log is the file with its output.
	Name, Log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
	stopOnce  sync.Once
}

// Start starts argv in the background inside the namespace, output to
// <dir>/<name>.log. Close stops it (SIGTERM, then SIGKILL).
func (n *NS) Start(name string, argv ...string) (*Proc, error) {
	b := n.bed
	logPath := b.Path(name + ".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a terminal's Ctrl-C reaches only us, and
	// Close stops processes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("nsbed: bed is closed")
	}
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("[%s] start %s: %w", n.Short, name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (ip netns exec replaces itself with the command).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error once it has ended.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and, if the process has not ended after grace,
// SIGKILL to its process group. It is idempotent.
func (p *Proc) Stop(grace time.Duration) error {
	var err error
	p.stopOnce.Do(func() {
		if p.Exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			err = fmt.Errorf("nsbed: %s (pid %d) did not die", p.Name, p.Pid())
		}
	})
	return err
}

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
