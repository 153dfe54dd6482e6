package nsbed

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// ProxyTally counts answers that came through a tier-2 bed: from a web
// server (backendsrv's body), through a proxy (ProxyHeader).
type ProxyTally struct {
	Requests, OK int
	// PerProxy counts answers by proxy, PerWeb by web server, Pairs by
	// "proxy>web".
	PerProxy, PerWeb, Pairs map[string]int
	// ClientKept counts answers whose ClientHeader, the address the proxy
	// accepted the connection from, is the client's own address and port
	// of that connection: the L4 tier kept the client's address.
	ClientKept int
	// WebSawProxy counts answers whose web server saw the request come
	// from the web-segment address of the proxy that ProxyHeader names:
	// that proxy made the L7 hop.
	WebSawProxy int
	// First is when each proxy first answered.
	First map[string]time.Time
	// Errors describes failed requests (the first 10).
	Errors     []string
	ErrorCount int
}

func newProxyTally() *ProxyTally {
	return &ProxyTally{PerProxy: map[string]int{}, PerWeb: map[string]int{}, Pairs: map[string]int{}, First: map[string]time.Time{}}
}

// proxyAnswer is what one request through the tier-2 bed got.
type proxyAnswer struct {
	proxy, web string
	// webSaw is the address the web server saw the request come from
	// (host only); client the ClientHeader; local the client
	// connection's own address.
	webSaw, client, local string
	at                    time.Time
	err                   error
}

// ask makes one GET / to the VIP with client (whose transport opens a new
// connection per request) and reads who answered.
func (t *Tier2) ask(ctx context.Context, client *http.Client) proxyAnswer {
	var a proxyAnswer
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { a.local = i.Conn.LocalAddr().String() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, t.URL("/"), nil)
	if err != nil {
		a.err = err
		return a
	}
	resp, err := client.Do(req)
	if err != nil {
		a.err = err
		return a
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a.at = time.Now()
	m := answerRE.FindStringSubmatch(string(b))
	a.proxy, a.client = resp.Header.Get(ProxyHeader), resp.Header.Get(ClientHeader)
	switch {
	case err != nil:
		a.err = fmt.Errorf("read: %w", err)
	case resp.StatusCode != http.StatusOK:
		a.err = fmt.Errorf("%s from proxy %q: %.80q", resp.Status, a.proxy, b)
	case m == nil:
		a.err = fmt.Errorf("answer names no web server: %.80q", b)
	case a.proxy == "":
		a.err = fmt.Errorf("answer of %s has no %s header", m[1], ProxyHeader)
	default:
		a.web = m[1]
		a.webSaw, _, _ = net.SplitHostPort(m[2])
	}
	return a
}

// add records a; proxyOf maps proxies' web-segment addresses to names.
func (p *ProxyTally) add(a proxyAnswer, proxyOf map[string]string) {
	p.Requests++
	if a.err != nil {
		p.ErrorCount++
		if len(p.Errors) < 10 {
			p.Errors = append(p.Errors, a.err.Error())
		}
		return
	}
	p.OK++
	p.PerProxy[a.proxy]++
	p.PerWeb[a.web]++
	p.Pairs[a.proxy+">"+a.web]++
	if a.client != "" && a.client == a.local {
		p.ClientKept++
	}
	if proxyOf[a.webSaw] == a.proxy {
		p.WebSawProxy++
	}
	if _, ok := p.First[a.proxy]; !ok {
		p.First[a.proxy] = a.at
	}
}

// Requests makes n GET / requests to the VIP from the client, one after
// the other, each on a new TCP connection.
func (t *Tier2) Requests(ctx context.Context, n int) *ProxyTally {
	client := t.Client.HTTPClient(false)
	proxyOf := t.ProxyOfWebAddr()
	p := newProxyTally()
	for range n {
		p.add(t.ask(ctx, client), proxyOf)
	}
	return p
}

// ProxyStream is a steady stream of new connections to the VIP, one
// request each, until Stop.
type ProxyStream struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	mu       sync.Mutex
	tally    *ProxyTally
}

// StartStream starts a stream from the client that opens a new connection
// every interval (or as fast as answers come, if slower).
func (t *Tier2) StartStream(interval time.Duration) *ProxyStream {
	s := &ProxyStream{stop: make(chan struct{}), done: make(chan struct{}), tally: newProxyTally()}
	client := t.Client.HTTPClient(false)
	proxyOf := t.ProxyOfWebAddr()
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			// Not cut short by Stop: the proxies would log an aborted
			// request (the client's HTTP timeout bounds it).
			a := t.ask(context.Background(), client)
			s.mu.Lock()
			s.tally.add(a, proxyOf)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// FirstFrom returns when proxy first answered the stream.
func (s *ProxyStream) FirstFrom(proxy string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.tally.First[proxy]
	return at, ok
}

// Stop ends the stream after its request under way and returns its
// tally. It is idempotent.
func (s *ProxyStream) Stop() *ProxyTally {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	return s.tally
}
