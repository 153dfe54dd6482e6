package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// TestFlowsGracefulChange checks connection tracking end to end: 30
// long-lived keep-alive HTTP connections, each asking every 100 ms, run
// while the backend set changes.
//
//   - A fourth backend joins (POST) while its server is still down, then
//     comes up: no connection moves or fails, and it takes new connections.
//   - A backend is drained (PATCH state drain): its connections keep being
//     answered by it, new connections never reach it, its new_flows stop;
//     not even a new connection from the client port of one that ended on
//     it moments ago (the ended flow still in the table).
//   - A backend fails its health check while its server keeps running (the
//     route back to the health checker is blackholed): its connections move
//     at once, which breaks them at TCP level (the new backend has no
//     socket), the clients' new connections go elsewhere, flows.remapped
//     grows; every other connection, the drained backend's too, goes on.
func TestFlowsGracefulChange(t *testing.T) {
	const (
		longLived = 30
		every     = 100 * time.Millisecond
		fresh     = 200 // new connections after each change
	)
	token := newAPIToken(t)
	l := startL2Flows(t, token)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := l.Appliance
	ipOf, nameOf := map[string]string{}, map[string]string{}
	for _, b := range l.Backends {
		ipOf[b.Name], nameOf[b.IP.String()] = b.IP.String(), b.Name
	}
	be4 := l.Backends[3]

	// be4 is built but not in the service; its server starts later.
	if err := be4.Proc.Stop(3 * time.Second); err != nil {
		t.Fatal(err)
	}

	pool := startLivePool(ctx, l.Client, net.JoinHostPort(nsbed.L2VIP.String(), strconv.Itoa(nsbed.HTTPPort)), longLived, every)
	defer pool.stop()
	c0 := mustStatsSample(ctx, t, a)
	base := pool.waitProgress(ctx, nil, 3, flowsWait)
	if p := liveStayProblems(nil, base, 3, ""); len(p) != 0 {
		t.Fatalf("long-lived connections before any change: %s", strings.Join(p, "; "))
	}
	conns := liveByBackend(base)
	// Clients may reuse the 4-tuple of a connection that ended (see
	// checkNewFlows); book counts such reuse.
	book := newAddrBook()
	book.live(base)
	t.Logf("%d long-lived connections: %s", longLived, liveSpread(conns))
	// Drain the backend with the most connections and fail the next one,
	// so that both have some.
	var cands []string
	for _, name := range []string{"be1", "be2", "be3"} {
		if len(conns[name]) > 0 {
			cands = append(cands, name)
		}
	}
	slices.SortStableFunc(cands, func(x, y string) int { return len(conns[y]) - len(conns[x]) })
	if len(cands) < 2 {
		t.Fatalf("the connections reached only %v; need two backends with connections", cands)
	}
	drained, failed := cands[0], cands[1]
	t.Logf("will drain %s (%d connections) and fail %s (%d connections)", drained, len(conns[drained]), failed, len(conns[failed]))

	if !t.Run("added backend takes new connections, none moves", func(t *testing.T) {
		before := pool.snapshot()
		var added struct{ IP string }
		if err := a.Change(ctx, http.MethodPost, "/api/v1/services/web/backends", map[string]string{"ip": ipOf["be4"]}, &added); err != nil {
			t.Fatal(err)
		}
		if added.IP != ipOf["be4"] {
			t.Fatalf("POST answered backend %q, want %s", added.IP, ipOf["be4"])
		}
		// Its health check fails until its server runs: it takes nothing.
		if fw := backendForwarding(ctx, t, a, "web", ipOf["be4"]); fw == "active" {
			t.Fatalf("be4 forwards %q with its server down", fw)
		}
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), 50)
		if err != nil {
			t.Fatal(err)
		}
		reusedA := book.curl(got)
		t.Logf("be4 joined, server down: 50 new connections: %s", got.Spread())
		if got.ErrorCount != 0 || got.PerBackend["be4"] != 0 {
			t.Errorf("got %d errors (%s) and %d answers from be4, want none", got.ErrorCount, strings.Join(got.Errors, "; "), got.PerBackend["be4"])
		}

		start := time.Now()
		if err := be4.Serve(ctx, bins.Backendsrv); err != nil {
			t.Fatal(err)
		}
		if _, err := waitForwarding(ctx, a, "web", ipOf["be4"], "active", flowsWait); err != nil {
			t.Fatal(err)
		}
		t.Logf("be4 active %v after its server started", time.Since(start).Round(10*time.Millisecond))

		c1 := mustStatsSample(ctx, t, a)
		got, err = nsbed.CurlMany(ctx, l.Client, l.URL("/"), fresh)
		if err != nil {
			t.Fatal(err)
		}
		reused := book.curl(got)
		reusedA += reused
		c2 := mustStatsSample(ctx, t, a)
		t.Logf("%d new connections: %s", fresh, got.Spread())
		checkFreshConns(t, got, fresh, []string{"be1", "be2", "be3", "be4"}, nil)
		checkNewFlows(t, c1, c2, nameOf, got.PerBackend, reused)

		after, c3 := waitLiveStay(ctx, t, pool, a, before, 10)
		reusedA += book.live(after)
		checkFlowTable(t, "add", c0, c3, liveAnswersBetween(before, after), reusedA)
		t.Logf("slowest answer on a long-lived connection so far: %v", liveSlowest(after).Round(time.Millisecond))
		if d := c3.flows.Remapped - c0.flows.Remapped; d != 0 {
			t.Errorf("flows.remapped grew by %d, want 0 (no backend went away)", d)
		}
	}) {
		return
	}

	if !t.Run("drained backend keeps its connections, gets no new ones", func(t *testing.T) {
		before := pool.snapshot()
		// Client ports (outside the kernel's ephemeral range) whose
		// connections go to the backend about to be drained; each
		// connection ends, server side first, so its port is free at once.
		var ports []int
		for port := 61000; len(ports) < 5 && port < 61100; port++ {
			b, err := askOnceFrom(ctx, l.Client, port)
			if err != nil {
				t.Fatal(err)
			}
			book.addr(net.JoinHostPort(nsbed.L2ClientIP.String(), strconv.Itoa(port)))
			if b == drained {
				ports = append(ports, port)
			}
		}
		path := "/api/v1/services/web/backends/" + ipOf[drained]
		if code := patchWithoutToken(ctx, t, l, path, `{"state":"drain"}`); code != http.StatusUnauthorized {
			t.Errorf("PATCH without the token: status %d, want %d", code, http.StatusUnauthorized)
		}
		var patched struct{ IP, State string }
		if err := a.Change(ctx, http.MethodPatch, path, map[string]string{"state": "drain"}, &patched); err != nil {
			t.Fatal(err)
		}
		if patched.State != "drain" {
			t.Errorf("PATCH answered state %q, want drain", patched.State)
		}
		// The snapshot is published before the API answers.
		if fw := backendForwarding(ctx, t, a, "web", ipOf[drained]); fw != "drain" {
			t.Fatalf("%s forwards %q right after the PATCH, want drain", drained, fw)
		}
		c1 := mustStatsSample(ctx, t, a)
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), fresh)
		if err != nil {
			t.Fatal(err)
		}
		reused := book.curl(got)
		c2 := mustStatsSample(ctx, t, a)
		t.Logf("%s drained: %d new connections: %s", drained, fresh, got.Spread())
		var others []string
		for _, name := range []string{"be1", "be2", "be3", "be4"} {
			if name != drained {
				others = append(others, name)
			}
		}
		checkFreshConns(t, got, fresh, others, []string{drained})
		checkNewFlows(t, c1, c2, nameOf, got.PerBackend, reused)

		// A new connection from the client port of one of those ended
		// connections (while the ended flow is still in the table) is a
		// new flow too.
		var again []string
		for _, port := range ports {
			b, err := askOnceFrom(ctx, l.Client, port)
			if err != nil {
				t.Fatal(err)
			}
			reused += book.addr(net.JoinHostPort(nsbed.L2ClientIP.String(), strconv.Itoa(port)))
			again = append(again, fmt.Sprintf("%d->%s", port, b))
			if b == drained {
				t.Errorf("a new connection from client port %d, whose ended connection was on %s, reached the drained %s", port, drained, drained)
			}
		}
		t.Logf("new connections from the client ports of %d ended connections on %s: %s", len(ports), drained, strings.Join(again, ", "))

		after, c3 := waitLiveStay(ctx, t, pool, a, before, 10)
		t.Logf("%s still answers its %d connections: %d answers since the drain", drained,
			len(conns[drained]), liveAnswersBetween(pickLive(before, conns[drained]), pickLive(after, conns[drained])))
		if d := webNewFlows(c3, ipOf[drained]) - webNewFlows(c1, ipOf[drained]); d != 0 {
			t.Errorf("drained %s: new_flows grew by %d, want 0", drained, d)
		}
		reused += book.live(after)
		checkFlowTable(t, "drain", c1, c3, liveAnswersBetween(before, after), reused)
		t.Logf("slowest answer on a long-lived connection so far: %v", liveSlowest(after).Round(time.Millisecond))
		if d := c3.flows.Remapped - c0.flows.Remapped; d != 0 {
			t.Errorf("flows.remapped grew by %d, want 0 (no backend went away)", d)
		}
	}) {
		return
	}

	t.Run("failed backend's connections move at once", func(t *testing.T) {
		before := pool.snapshot()
		victims := liveByBackend(before)[failed]
		c1 := mustStatsSample(ctx, t, a)
		// The server keeps running and answering its connections; only
		// the health checker (the appliance's own address) loses it.
		tFail := time.Now()
		if out, err := l.Host(failed).Run("ip", "route", "add", "blackhole", nsbed.L2ApplianceIP.String()+"/32"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		tDown, err := waitForwarding(ctx, a, "web", ipOf[failed], "down", flowsWait)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s down %v after its health checks started failing", failed, tDown.Sub(tFail).Round(10*time.Millisecond))

		// Each of its clients has answers on a new connection, every
		// other client 5 more answers.
		after := pool.waitUntil(ctx, flowsWait, func(s [][]liveLeg) bool {
			for _, i := range victims {
				if legs := s[i]; len(legs) < 2 || legs[len(legs)-1].OK < 3 {
					return false
				}
			}
			return liveProgressed(before, s, 5)
		})
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), fresh)
		if err != nil {
			t.Fatal(err)
		}
		reused := book.live(after) + book.curl(got)
		c2 := mustStatsSample(ctx, t, a)
		t.Logf("%s failed: %d new connections: %s", failed, fresh, got.Spread())
		checkFreshConns(t, got, fresh, nil, []string{failed, drained})

		// The failed backend's connections: broken once, after the
		// failure and promptly after it was seen, then reconnected
		// elsewhere.
		var moved []string
		for _, i := range victims {
			legs := after[i]
			if len(legs) != 2 {
				t.Errorf("conn %d on %s: %d connections, want the old one broken and one new: %s", i, failed, len(legs), describeLegs(legs))
				continue
			}
			old, cur := legs[0], legs[1]
			switch {
			case old.Err == "":
				t.Errorf("conn %d on %s: old connection did not break: %s", i, failed, describeLegs(legs))
			case old.End.Before(tFail) || old.End.After(tDown.Add(flowsBreakWithin)):
				t.Errorf("conn %d on %s broke %v after the failure, %v after it was seen down; want between the failure and %v after",
					i, failed, old.End.Sub(tFail), old.End.Sub(tDown), flowsBreakWithin)
			}
			if cur.Backend == failed || cur.Backend == drained || cur.Err != "" || cur.OK < 3 {
				t.Errorf("conn %d: new connection %s on %q (%d answers, err %q), want one on an active backend answering",
					i, cur.Local, cur.Backend, cur.OK, cur.Err)
			}
			moved = append(moved, fmt.Sprintf("%s->%s %+dms", old.Local, cur.Backend, old.End.Sub(tDown).Milliseconds()))
		}
		t.Logf("%d connections of %s broke and reconnected (client address -> backend, break time after seen down): %s",
			len(victims), failed, strings.Join(moved, ", "))
		// Everyone else, the drained backend's connections included.
		for _, p := range liveStayProblems(before, after, 5, failed) {
			t.Error(p)
		}

		for _, name := range []string{failed, drained} {
			if d := webNewFlows(c2, ipOf[name]) - webNewFlows(c1, ipOf[name]); d != 0 {
				t.Errorf("%s: new_flows grew by %d, want 0", name, d)
			}
		}
		remapped := c2.flows.Remapped - c1.flows.Remapped
		t.Logf("flows.remapped +%d (%d connections were on %s)", remapped, len(victims), failed)
		if remapped < uint64(len(victims)) {
			t.Errorf("flows.remapped grew by %d, want at least the %d connections of %s", remapped, len(victims), failed)
		}
		checkFlowTable(t, "fail", c1, c2, liveAnswersBetween(before, after), reused)
		t.Logf("slowest answer on a long-lived connection so far: %v", liveSlowest(after).Round(time.Millisecond))
		st, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range webBackendStatus(st) {
			t.Logf("status: %s forwarding %s, health %s, new_flows %d", nameOf[b.IP], b.Forwarding, b.Health, b.NewFlows)
		}
	})
}

// Tolerances. The appliance's worker lcore busy-polls, and on a small
// machine it shares its core with whatever else runs (other testbeds'
// appliances, too): packets can then wait for seconds, and TCP retransmits.
// That is neither an error nor a moved connection, so a request has
// flowsRequestTimeout, the health checks (which pass the data plane too)
// a 1 s timeout and fall 5 (L2Config: 500 ms, 3), and waits end early when
// done.
const (
	flowsRequestTimeout = 10 * time.Second
	flowsWait           = 30 * time.Second
	// flowsBreakWithin bounds how long after the failed backend is seen
	// down its connections break (their next request, every 100 ms, is
	// sent elsewhere and reset).
	flowsBreakWithin = 5 * time.Second
)

// startL2Flows starts the L2 bed with four backend hosts of which be1..be3
// are in the services, and API token token.
func startL2Flows(t *testing.T, token string) *nsbed.L2 {
	t.Helper()
	return startL2(t, nsbed.L2Options{Backends: 4,
		Config: func(c *v1.Config) {
			c.API.Token = token
			for i := range c.Services {
				c.Services[i].Backends = c.Services[i].Backends[:3]
				h := c.Services[i].Health
				h.Interval, h.Timeout, h.Fall = v1.Duration(time.Second), v1.Duration(time.Second), 5
			}
		}})
}

func newAPIToken(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// A liveLeg is one TCP connection of a long-lived client.
type liveLeg struct {
	Local   string // client address, as the backend saw it too
	Backend string // backend of the first answer
	OK      int    // answers
	// Switched counts answers from another backend than the first (on
	// one TCP connection that cannot happen).
	Switched int
	// Slowest is the longest a request waited for its answer.
	Slowest    time.Duration
	Start, End time.Time // End is zero while the connection is open
	Err        string    // why it ended
}

// liveConn is a client that keeps one keep-alive HTTP connection open and
// asks on it periodically; when the connection fails it opens a new one at
// the next tick. Requests are written by hand, so no retry hides a failure.
type liveConn struct {
	mu   sync.Mutex
	legs []liveLeg
}

var liveAnswerRE = regexp.MustCompile(`backend=(\S+) client=(\S+)`)

func (c *liveConn) run(ctx context.Context, ns *nsbed.NS, addr string, id int, every time.Duration) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		if conn == nil {
			dctx, cancel := context.WithTimeout(ctx, flowsRequestTimeout)
			cn, err := ns.DialContext(dctx, "tcp", addr)
			cancel()
			if ctx.Err() != nil {
				if cn != nil {
					cn.Close()
				}
				return
			}
			now := time.Now()
			c.mu.Lock()
			if err != nil {
				c.legs = append(c.legs, liveLeg{Start: now, End: now, Err: "dial: " + err.Error()})
			} else {
				conn, br = cn, bufio.NewReader(cn)
				c.legs = append(c.legs, liveLeg{Local: cn.LocalAddr().String(), Start: now})
			}
			c.mu.Unlock()
		}
		if conn != nil {
			t0 := time.Now()
			backend, client, err := liveGet(conn, br, fmt.Sprintf("/?conn=%d&seq=%d", id, seq))
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			l := &c.legs[len(c.legs)-1]
			l.Slowest = max(l.Slowest, time.Since(t0))
			if err == nil && client != l.Local {
				err = fmt.Errorf("backend %s saw client %s, want %s", backend, client, l.Local)
			}
			switch {
			case err != nil:
				l.End, l.Err = time.Now(), err.Error()
				conn.Close()
				conn = nil
			case l.Backend == "":
				l.Backend, l.OK = backend, 1
			default:
				l.OK++
				if backend != l.Backend {
					l.Switched++
				}
			}
			c.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// liveGet asks for path on conn and returns the backend and client address the
// answer names.
func liveGet(conn net.Conn, br *bufio.Reader, path string) (backend, client string, err error) {
	if err := conn.SetDeadline(time.Now().Add(flowsRequestTimeout)); err != nil {
		return "", "", err
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, nsbed.L2VIP); err != nil {
		return "", "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %s", resp.Status)
	}
	m := liveAnswerRE.FindStringSubmatch(string(body))
	if m == nil {
		return "", "", fmt.Errorf("answer names no backend: %q", body)
	}
	return m[1], m[2], nil
}

// askOnceFrom opens a connection from client port port, asks once with
// "Connection: close", reads until the server has closed and only then
// closes: the server ends the connection first, so the client port is free
// again at once (no TIME_WAIT on the client). It returns the backend.
func askOnceFrom(ctx context.Context, ns *nsbed.NS, port int) (string, error) {
	local := net.JoinHostPort(nsbed.L2ClientIP.String(), strconv.Itoa(port))
	dctx, cancel := context.WithTimeout(ctx, flowsRequestTimeout)
	defer cancel()
	c, err := ns.DialFrom(dctx, "tcp4", local, net.JoinHostPort(nsbed.L2VIP.String(), strconv.Itoa(nsbed.HTTPPort)))
	if err != nil {
		return "", fmt.Errorf("from port %d: %w", port, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(flowsRequestTimeout)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(c, "GET /?port=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", port, nsbed.L2VIP); err != nil {
		return "", fmt.Errorf("from port %d: %w", port, err)
	}
	b, err := io.ReadAll(c) // until the server's FIN
	if err != nil {
		return "", fmt.Errorf("from port %d: %w", port, err)
	}
	m := liveAnswerRE.FindSubmatch(b)
	if m == nil || string(m[2]) != local {
		return "", fmt.Errorf("from port %d: unexpected answer %q", port, b)
	}
	return string(m[1]), nil
}

// livePool runs the long-lived clients.
type livePool struct {
	conns  []*liveConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startLivePool starts n long-lived clients in ns against addr, asking every
// period, their starts spread over one period.
func startLivePool(ctx context.Context, ns *nsbed.NS, addr string, n int, every time.Duration) *livePool {
	ctx, cancel := context.WithCancel(ctx)
	p := &livePool{cancel: cancel}
	for i := 0; i < n; i++ {
		p.conns = append(p.conns, &liveConn{})
	}
	staggered(ctx, &p.wg, n, every, func(i int) { p.conns[i].run(ctx, ns, addr, i, every) })
	return p
}

// staggered calls run(0) .. run(n-1), each in a goroutine counted in wg,
// their starts spread evenly over spread; none starts after ctx ended.
func staggered(ctx context.Context, wg *sync.WaitGroup, n int, spread time.Duration, run func(i int)) {
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(spread * time.Duration(i) / time.Duration(n)):
			}
			run(i)
		}()
	}
}

// stop ends every client and waits for them.
func (p *livePool) stop() {
	p.cancel()
	p.wg.Wait()
}

// snapshot copies every client's legs.
func (p *livePool) snapshot() [][]liveLeg {
	out := make([][]liveLeg, len(p.conns))
	for i, c := range p.conns {
		c.mu.Lock()
		out[i] = slices.Clone(c.legs)
		c.mu.Unlock()
	}
	return out
}

// waitProgress waits until every client has n more answers than in before
// (nil: than none), or timeout, and returns the last snapshot.
func (p *livePool) waitProgress(ctx context.Context, before [][]liveLeg, n int, timeout time.Duration) [][]liveLeg {
	return p.waitUntil(ctx, timeout, func(s [][]liveLeg) bool { return liveProgressed(before, s, n) })
}

// waitUntil waits until done holds for a snapshot, or timeout, and returns
// the last snapshot.
func (p *livePool) waitUntil(ctx context.Context, timeout time.Duration, done func([][]liveLeg) bool) [][]liveLeg {
	deadline := time.Now().Add(timeout)
	for {
		s := p.snapshot()
		if done(s) || time.Now().After(deadline) || ctx.Err() != nil {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// liveProgressed reports whether every client has n more answers in s than in
// before (nil: than none).
func liveProgressed(before, s [][]liveLeg, n int) bool {
	for i := range s {
		var b []liveLeg
		if before != nil {
			b = before[i]
		}
		if liveAnswers(s[i])-liveAnswers(b) < n {
			return false
		}
	}
	return true
}

func liveAnswers(legs []liveLeg) int {
	n := 0
	for _, l := range legs {
		n += l.OK
	}
	return n
}

// liveAnswersBetween is the number of answers all clients got between two
// snapshots.
func liveAnswersBetween(before, after [][]liveLeg) int {
	n := 0
	for i := range after {
		n += liveAnswers(after[i])
		if before != nil {
			n -= liveAnswers(before[i])
		}
	}
	return n
}

// pickLive returns the snapshots of clients ids.
func pickLive(s [][]liveLeg, ids []int) [][]liveLeg {
	var out [][]liveLeg
	for _, i := range ids {
		out = append(out, s[i])
	}
	return out
}

// liveSlowest is the longest any request waited for its answer.
func liveSlowest(s [][]liveLeg) time.Duration {
	var d time.Duration
	for _, legs := range s {
		for _, l := range legs {
			d = max(d, l.Slowest)
		}
	}
	return d
}

// liveByBackend maps each backend to the clients whose current connection
// it answers.
func liveByBackend(s [][]liveLeg) map[string][]int {
	m := map[string][]int{}
	for i, legs := range s {
		if len(legs) > 0 {
			m[legs[len(legs)-1].Backend] = append(m[legs[len(legs)-1].Backend], i)
		}
	}
	return m
}

func liveSpread(m map[string][]int) string {
	n := map[string]int{}
	for k, v := range m {
		n[k] = len(v)
	}
	return nsbed.Spread(n)
}

func describeLegs(legs []liveLeg) string {
	var parts []string
	for _, l := range legs {
		s := fmt.Sprintf("%s on %s: %d answers", l.Local, l.Backend, l.OK)
		if l.Err != "" {
			s += ", ended: " + l.Err
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// liveStayProblems lists the clients (except those on backend skip at before)
// that did not keep one connection to one backend from before (nil: from
// their start) to after, answered at least n more times, without errors.
func liveStayProblems(before, after [][]liveLeg, n int, skip string) []string {
	var p []string
	for i := range after {
		var b []liveLeg
		if before != nil {
			b = before[i]
			if len(b) > 0 && b[len(b)-1].Backend == skip {
				continue
			}
		}
		a := after[i]
		switch {
		case len(a) != 1:
			p = append(p, fmt.Sprintf("conn %d: %d connections, want 1: %s", i, len(a), describeLegs(a)))
		case a[0].Err != "" || a[0].Switched != 0:
			p = append(p, fmt.Sprintf("conn %d: %s (%d answers from another backend)", i, describeLegs(a), a[0].Switched))
		case len(b) == 1 && (b[0].Local != a[0].Local || b[0].Backend != a[0].Backend):
			p = append(p, fmt.Sprintf("conn %d: was %s on %s, now %s on %s", i, b[0].Local, b[0].Backend, a[0].Local, a[0].Backend))
		case liveAnswers(a)-liveAnswers(b) < n:
			p = append(p, fmt.Sprintf("conn %d on %s: %d answers, want at least %d", i, a[0].Backend, liveAnswers(a)-liveAnswers(b), n))
		}
	}
	return p
}

// flowCounters are the flows counters of GET /api/v1/stats.
type flowCounters struct {
	Entries, Hits, Misses, Evictions, Expired, Remapped uint64
	Stateless                                           uint64
	TableFull                                           uint64 `json:"table_full"`
}

// statsSample is one reading of GET /api/v1/stats.
type statsSample struct {
	flows flowCounters
	stats nsbed.Stats
}

func readStatsSample(ctx context.Context, a *nsbed.Appliance) (*statsSample, error) {
	var raw json.RawMessage
	if err := a.Get(ctx, "/api/v1/stats", &raw); err != nil {
		return nil, err
	}
	c := &statsSample{}
	if err := json.Unmarshal(raw, &c.stats); err != nil {
		return nil, err
	}
	var doc struct {
		Flows *flowCounters `json:"flows"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	if doc.Flows == nil {
		return nil, fmt.Errorf("stats: no flows section: %s", raw)
	}
	c.flows = *doc.Flows
	return c, nil
}

// mustStatsSample reads a stats sample from a; an error ends t.
func mustStatsSample(ctx context.Context, t *testing.T, a *nsbed.Appliance) *statsSample {
	t.Helper()
	c, err := readStatsSample(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitLiveStay waits (flowsWait at most) until every long-lived connection
// of pool has n more answers than in before, reports those that broke,
// moved or stalled (liveStayProblems), and returns the pool's snapshot and
// a stats sample of a taken right after.
func waitLiveStay(ctx context.Context, t *testing.T, pool *livePool, a *nsbed.Appliance, before [][]liveLeg, n int) ([][]liveLeg, *statsSample) {
	t.Helper()
	after := pool.waitProgress(ctx, before, n, flowsWait)
	c := mustStatsSample(ctx, t, a)
	for _, p := range liveStayProblems(before, after, n, "") {
		t.Error(p)
	}
	return after, c
}

// checkFreshConns checks got, the tally of n new connections
// (nsbed.CurlMany): every one answered without error, each backend of
// answering among those answering, and none of idle.
func checkFreshConns(t *testing.T, got *nsbed.HTTPTally, n int, answering, idle []string) {
	t.Helper()
	if got.ErrorCount != 0 || got.OK != n {
		t.Errorf("got %d of %d answers, %d errors: %s", got.OK, n, got.ErrorCount, strings.Join(got.Errors, "; "))
	}
	for _, name := range idle {
		if k := got.PerBackend[name]; k != 0 {
			t.Errorf("%d new connections reached %s, want 0", k, name)
		}
	}
	for _, name := range answering {
		if got.PerBackend[name] == 0 {
			t.Errorf("%s answered none of the %d new connections (%s)", name, n, got.Spread())
		}
	}
}

// webNewFlows is backend ip's new_flows in service web.
func webNewFlows(c *statsSample, ip string) uint64 {
	return c.stats.Services["web"].Backends[ip].NewFlows
}

// addrBook remembers the client addresses of the connections made, to
// count those that reuse one.
type addrBook struct {
	addrs map[string]int  // connections per client address
	legs  map[string]bool // long-lived client connections seen
}

func newAddrBook() *addrBook {
	return &addrBook{addrs: map[string]int{}, legs: map[string]bool{}}
}

// curl records the connections of a curl run and returns how many reused
// an address.
func (b *addrBook) curl(got *nsbed.HTTPTally) int {
	reused := got.OK - len(got.ClientAddrs)
	for a := range got.ClientAddrs {
		if b.addrs[a] > 0 {
			reused++
		}
		b.addrs[a]++
	}
	return reused
}

// addr records one connection from client address a and returns 1 if it
// reused it, else 0.
func (b *addrBook) addr(a string) int {
	b.addrs[a]++
	if b.addrs[a] > 1 {
		return 1
	}
	return 0
}

// live records the long-lived clients' connections not seen yet and returns
// how many reused an address.
func (b *addrBook) live(s [][]liveLeg) int {
	reused := 0
	for _, legs := range s {
		for _, l := range legs {
			k := l.Local + "@" + l.Start.String()
			if l.Local == "" || b.legs[k] {
				continue
			}
			b.legs[k] = true
			if b.addrs[l.Local] > 0 {
				reused++
			}
			b.addrs[l.Local]++
		}
	}
	return reused
}

// checkNewFlows checks that between c1 and c2, during which only the
// connections tallied in perBackend were opened, each backend's new_flows
// grew by its share of them.
//
// Linux may give a new connection the source port of one that ended
// moments ago (no TIME_WAIT on the client when the server closed first).
// The appliance treats a SYN on an ended flow (client FIN or RST seen) as
// a new flow, but a connection broken by a reset only the backend sent
// left an established flow behind, and a new connection on its 4-tuple
// follows that flow (to a backend that is usable, or it would have been
// remapped). So up to reused connections may be missing from new_flows.
func checkNewFlows(t *testing.T, c1, c2 *statsSample, nameOf map[string]string, perBackend map[string]int, reused int) {
	t.Helper()
	got := map[string]int{}
	for ip, b := range c2.stats.Services["web"].Backends {
		if d := b.NewFlows - c1.stats.Services["web"].Backends[ip].NewFlows; d != 0 {
			got[nameOf[ip]] = int(d)
		}
	}
	want := map[string]int{}
	for k, v := range perBackend {
		if v != 0 {
			want[k] = v
		}
	}
	t.Logf("new_flows +: %s (%d connections reused a client address)", nsbed.Spread(got), reused)
	short := 0
	for name := range merge(got, want) {
		if got[name] > want[name] {
			t.Errorf("%s: new_flows +%d, more than the %d new connections it answered", name, got[name], want[name])
		}
		short += want[name] - got[name]
	}
	if short > reused {
		t.Errorf("new_flows grew by %s, want the new connections' %s (%d connections reused a client address)",
			nsbed.Spread(got), nsbed.Spread(want), reused)
	}
}

func merge(a, b map[string]int) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// checkFlowTable checks the flow table counters between c1 and c2: the
// long-lived clients' answers (at least one packet each) were hits, and
// every flow given a backend (new_flows) was a miss, a remap or a
// connection on the 4-tuple of an ended flow (at most reused; see
// checkNewFlows).
func checkFlowTable(t *testing.T, phase string, c1, c2 *statsSample, longLivedAnswers, reused int) {
	t.Helper()
	d := flowCounters{Hits: c2.flows.Hits - c1.flows.Hits, Misses: c2.flows.Misses - c1.flows.Misses,
		Remapped: c2.flows.Remapped - c1.flows.Remapped, Evictions: c2.flows.Evictions - c1.flows.Evictions}
	var nf uint64
	for ip, b := range c2.stats.Services["web"].Backends {
		nf += b.NewFlows - c1.stats.Services["web"].Backends[ip].NewFlows
	}
	t.Logf("%s: flows entries %d, hits +%d, misses +%d, remapped +%d, evictions +%d; new_flows +%d; long-lived answers %d; reused client addresses %d",
		phase, c2.flows.Entries, d.Hits, d.Misses, d.Remapped, d.Evictions, nf, longLivedAnswers, reused)
	if d.Hits < uint64(longLivedAnswers) {
		t.Errorf("flows.hits grew by %d, want at least the %d requests on long-lived connections", d.Hits, longLivedAnswers)
	}
	if nf < d.Misses+d.Remapped || nf > d.Misses+d.Remapped+uint64(reused) {
		t.Errorf("new_flows +%d, want misses +%d + remapped +%d (+ up to %d reused client addresses)", nf, d.Misses, d.Remapped, reused)
	}
	if c2.flows.Entries < 30 {
		t.Errorf("flows.entries %d, want at least the 30 long-lived connections", c2.flows.Entries)
	}
	if d.Evictions != 0 {
		t.Errorf("flows.evictions grew by %d, want 0", d.Evictions)
	}
}

// backendForwarding returns the forwarding state of backend ip of service svc.
func backendForwarding(ctx context.Context, t *testing.T, a *nsbed.Appliance, svc, ip string) string {
	t.Helper()
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Services {
		for _, b := range s.Backends {
			if s.Name == svc && b.IP == ip {
				return b.Forwarding
			}
		}
	}
	return "absent"
}

// waitForwarding polls until backend ip of service svc forwards as want and
// returns when it first saw it.
func waitForwarding(ctx context.Context, a *nsbed.Appliance, svc, ip, want string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	last := "?"
	for {
		if st, err := a.Status(ctx); err == nil {
			for _, s := range st.Services {
				for _, b := range s.Backends {
					if s.Name == svc && b.IP == ip {
						if b.Forwarding == want {
							return time.Now(), nil
						}
						last = b.Forwarding + " (health " + b.Health + ")"
					}
				}
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s/%s: not %s after %v: %s", svc, ip, want, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func webBackendStatus(st *v1.Status) []v1.BackendStatus {
	for _, s := range st.Services {
		if s.Name == "web" {
			return s.Backends
		}
	}
	return nil
}

// patchWithoutToken sends a PATCH without a token and returns the
// status.
func patchWithoutToken(ctx context.Context, t *testing.T, l *nsbed.L2, path, body string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, l.Appliance.API+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.Appliance.NS.HTTPClient(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
