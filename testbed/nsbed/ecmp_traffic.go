package nsbed

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Clients with control over the TCP connection itself, which net/http's
// client hides: a fixed source port (a chosen 5-tuple), and a keep-alive
// connection that is never silently redialled (http.Transport retries an
// idempotent request on a new connection when the old one breaks, which
// would hide exactly the failure the ECMP tests look for).

// FromPortResult is the answer to one GetFromPort.
type FromPortResult struct {
	// Backend is the backend that answered; Client the client address it
	// saw (source port included).
	Backend, Client string
	// Proxy is the proxy that answered (ProxyHeader), in a tier-2 bed.
	Proxy string
}

// GetFromPort makes one GET / to addr (VIP:port) from ns on a connection
// whose source port is srcPort, so the flow's 5-tuple is fixed, and
// returns who answered. The connection ends with a reset (SO_LINGER 0), so
// no TIME_WAIT keeps srcPort from being used again for the same tuple.
func GetFromPort(ctx context.Context, ns *NS, addr string, srcPort int) (*FromPortResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var c net.Conn
	err := ns.do(func() error {
		var err error
		d := net.Dialer{LocalAddr: &net.TCPAddr{Port: srcPort}}
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	host, _, _ := net.SplitHostPort(addr)
	body, hdr, err := getOnConn(c, bufio.NewReader(c), host)
	if err != nil {
		return nil, fmt.Errorf("source port %d: %w", srcPort, err)
	}
	m := answerRE.FindStringSubmatch(body)
	if m == nil {
		return nil, fmt.Errorf("source port %d: answer names no backend: %q", srcPort, body)
	}
	return &FromPortResult{Backend: m[1], Client: m[2], Proxy: hdr.Get(ProxyHeader)}, nil
}

// getOnConn writes one GET / on c and reads the answer from r: its body
// and header.
func getOnConn(c net.Conn, r *bufio.Reader, host string) (string, http.Header, error) {
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: nsbed\r\n\r\n", host); err != nil {
		return "", nil, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", nil, fmt.Errorf("read: %w", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", nil, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("status %s", resp.Status)
	}
	return string(b), resp.Header, nil
}

// ConnReport is what one long-lived connection of a KeepAliveRun saw.
type ConnReport struct {
	// Local is the connection's first local address; Port its local port
	// if fixed (StartKeepAliveFrom), else 0.
	Local string
	Port  int
	// Requests were sent, OK answered by a backend.
	Requests, OK int
	// Backends counts answers per backend; a connection that stays on its
	// backend has one key.
	Backends map[string]int
	// Proxies counts answers per proxy (ProxyHeader) where a tier-2
	// HAProxy answers; the backends are then its web servers.
	Proxies map[string]int
	// Errors are the failures (first 10), ErrorCount all of them; after an
	// error the connection is redialled (Redials).
	Errors     []string
	ErrorCount int
	Redials    int
	// MaxGap is the longest time between two answers (or from the start
	// to the first); MaxRTT the slowest answer.
	MaxGap, MaxRTT time.Duration
}

// KeepAliveRun is a set of long-lived HTTP keep-alive connections, each
// making a request every interval until Stop.
type KeepAliveRun struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []*ConnReport
}

// StartKeepAlive opens n connections from ns to addr (VIP:port) and has
// each send GET / every interval (answers within 5 s, or it is an error).
// It returns once every connection is open and has had its first answer.
func StartKeepAlive(ctx context.Context, ns *NS, addr string, n int, interval time.Duration) (*KeepAliveRun, error) {
	return startKeepAlive(ctx, ns, addr, make([]int, n), interval)
}

// StartKeepAliveFrom is StartKeepAlive with connection i opened from local
// port ports[i], so its 5-tuple is known, and ended with a reset (SO_LINGER
// 0), so that the port is free at once after Stop: GetFromPort can then ask
// where a new connection with the same 5-tuple goes. Pick ports outside
// the kernel's ephemeral range.
func StartKeepAliveFrom(ctx context.Context, ns *NS, addr string, ports []int, interval time.Duration) (*KeepAliveRun, error) {
	return startKeepAlive(ctx, ns, addr, ports, interval)
}

// startKeepAlive opens a connection per entry of ports (0: any port).
func startKeepAlive(ctx context.Context, ns *NS, addr string, ports []int, interval time.Duration) (*KeepAliveRun, error) {
	rctx, cancel := context.WithCancel(context.Background())
	r := &KeepAliveRun{cancel: cancel}
	host, _, _ := net.SplitHostPort(addr)
	n := len(ports)
	ready := make(chan error, n)
	for _, port := range ports {
		rep := &ConnReport{Port: port, Backends: map[string]int{}, Proxies: map[string]int{}}
		r.conns = append(r.conns, rep)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.loop(rctx, ns, addr, host, interval, rep, ready)
		}()
	}
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				r.Stop()
				return nil, err
			}
		case <-ctx.Done():
			r.Stop()
			return nil, ctx.Err()
		}
	}
	return r, nil
}

func (r *KeepAliveRun) loop(ctx context.Context, ns *NS, addr, host string, interval time.Duration, rep *ConnReport, ready chan<- error) {
	var c net.Conn
	var br *bufio.Reader
	closeConn := func() {
		if tc, ok := c.(*net.TCPConn); ok && rep.Port != 0 {
			_ = tc.SetLinger(0)
		}
		c.Close()
		c = nil
	}
	defer func() {
		if c != nil {
			closeConn()
		}
	}()
	first := true
	last := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if c == nil {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			if rep.Port != 0 {
				c, err = ns.DialFrom(dctx, "tcp4", net.JoinHostPort("", strconv.Itoa(rep.Port)), addr)
			} else {
				c, err = ns.DialContext(dctx, "tcp4", addr)
			}
			cancel()
			if err != nil {
				c = nil
				if ctx.Err() != nil {
					return
				}
				if first {
					ready <- err
					return
				}
				r.fail(rep, "dial: %v", err)
			} else {
				br = bufio.NewReader(c)
				r.mu.Lock()
				if rep.Local == "" {
					rep.Local = c.LocalAddr().String()
				} else {
					rep.Redials++
				}
				r.mu.Unlock()
			}
		}
		if c != nil {
			start := time.Now()
			_ = c.SetDeadline(start.Add(5 * time.Second))
			body, hdr, err := getOnConn(c, br, host)
			now := time.Now()
			r.mu.Lock()
			rep.Requests++
			r.mu.Unlock()
			switch m := answerRE.FindStringSubmatch(body); {
			case err != nil:
				if ctx.Err() != nil {
					return
				}
				r.fail(rep, "request %d: %v", rep.Requests, err)
				closeConn()
			case m == nil:
				r.fail(rep, "request %d: answer names no backend: %q", rep.Requests, body)
			default:
				r.mu.Lock()
				rep.OK++
				rep.Backends[m[1]]++
				if px := hdr.Get(ProxyHeader); px != "" {
					rep.Proxies[px]++
				}
				rep.MaxGap = max(rep.MaxGap, now.Sub(last))
				rep.MaxRTT = max(rep.MaxRTT, now.Sub(start))
				r.mu.Unlock()
				last = now
			}
			if first {
				first = false
				ready <- err
				if err != nil {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *KeepAliveRun) fail(rep *ConnReport, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.ErrorCount++
	if len(rep.Errors) < 10 {
		rep.Errors = append(rep.Errors, fmt.Sprintf(format, args...))
	}
}

// Snapshot returns a copy of every connection's report so far.
func (r *KeepAliveRun) Snapshot() []ConnReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ConnReport, len(r.conns))
	for i, c := range r.conns {
		out[i] = *c
		out[i].Backends = maps.Clone(c.Backends)
		out[i].Proxies = maps.Clone(c.Proxies)
		out[i].Errors = append([]string(nil), c.Errors...)
	}
	return out
}

// Stop ends every connection and returns the final reports.
func (r *KeepAliveRun) Stop() []ConnReport {
	r.cancel()
	r.wg.Wait()
	return r.Snapshot()
}

// KeepAliveSummary totals a run's reports.
type KeepAliveSummary struct {
	Conns, Requests, OK, Errors, Redials int
	// Moved counts connections answered by more than one backend.
	Moved          int
	MaxGap, MaxRTT time.Duration
	// PerBackend counts connections by the backend that answered them.
	PerBackend map[string]int
	// PerProxy counts connections by the proxy that answered them
	// (ConnReport.Proxies); ProxyMoved those answered by more than one.
	PerProxy   map[string]int
	ProxyMoved int
	// FirstErrors are some of the errors, with the connection's address.
	FirstErrors []string
}

// SummarizeConns totals reports.
func SummarizeConns(reports []ConnReport) KeepAliveSummary {
	s := KeepAliveSummary{Conns: len(reports), PerBackend: map[string]int{}, PerProxy: map[string]int{}}
	for _, c := range reports {
		s.Requests += c.Requests
		s.OK += c.OK
		s.Errors += c.ErrorCount
		s.Redials += c.Redials
		s.MaxGap = max(s.MaxGap, c.MaxGap)
		s.MaxRTT = max(s.MaxRTT, c.MaxRTT)
		if len(c.Backends) > 1 {
			s.Moved++
		}
		if len(c.Proxies) > 1 {
			s.ProxyMoved++
		}
		for px := range c.Proxies {
			s.PerProxy[px]++
		}
		var names []string
		for name := range c.Backends {
			names = append(names, name)
			s.PerBackend[name]++
		}
		sort.Strings(names)
		for _, e := range c.Errors {
			if len(s.FirstErrors) < 10 {
				s.FirstErrors = append(s.FirstErrors, fmt.Sprintf("%s (%s): %s", c.Local, strings.Join(names, "+"), e))
			}
		}
	}
	return s
}
