package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// streamLineLen is the length of a line of backendsrv's GET /stream, and
// streamLineRE one such line: "backend=be1 client=10.99.0.10:40312
// line=K" padded with '.' and ended by '\n'.
const streamLineLen = 100

var streamLineRE = regexp.MustCompile(`^backend=(\S+) client=(\S+) line=(\d+)\.*\n$`)

// A transfer is one long download (backendsrv's GET /stream) on one TCP
// connection through the appliance, its body checked line by line: every
// line from one backend, naming the client's own address, numbered in
// order. Nothing retries: a reset, a stall longer than
// flowsRequestTimeout or a wrong line ends it with an error.
type transfer struct {
	mu sync.Mutex
	st transferState
}

// transferState is a transfer's progress.
type transferState struct {
	Local   string // client address
	Backend string // backend named by the first line
	Got     int64  // body bytes read and checked
	// Stall is the longest wait for data once the body began, ended at
	// StallEnd.
	Stall    time.Duration
	StallEnd time.Time
	Err      string // why it ended early
	Done     bool   // the whole body read, then the end of the stream
}

func (tr *transfer) state() transferState {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.st
}

func (tr *transfer) fail(err error) {
	tr.mu.Lock()
	tr.st.Err = err.Error()
	tr.mu.Unlock()
}

// run downloads size bytes at rate bytes per second from addr (the web
// VIP) in ns; it ends with the body, an error or ctx.
func (tr *transfer) run(ctx context.Context, ns *nsbed.NS, addr string, size, rate int64) {
	dctx, cancel := context.WithTimeout(ctx, flowsRequestTimeout)
	conn, err := ns.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		tr.fail(fmt.Errorf("dial: %w", err))
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	local := conn.LocalAddr().String()
	tr.mu.Lock()
	tr.st.Local = local
	tr.mu.Unlock()
	if err := tr.read(conn, local, size, rate); err != nil && ctx.Err() == nil {
		tr.fail(err)
	}
}

// read asks for the stream on conn and checks it to its end.
func (tr *transfer) read(conn net.Conn, local string, size, rate int64) error {
	if err := conn.SetDeadline(time.Now().Add(flowsRequestTimeout)); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(conn, "GET /stream?bytes=%d&rate=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", size, rate, nsbed.L2VIP); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		return fmt.Errorf("answer %s, Content-Length %d, want 200 and %d", resp.Status, resp.ContentLength, size)
	}
	var line [streamLineLen]byte
	last := time.Now()
	for k := int64(0); ; k++ {
		if err := conn.SetReadDeadline(time.Now().Add(flowsRequestTimeout)); err != nil {
			return err
		}
		if k*streamLineLen >= size { // the whole body: then its end
			if n, err := resp.Body.Read(line[:1]); n != 0 || !errors.Is(err, io.EOF) {
				return fmt.Errorf("after the %d bytes: %d more (%v), want the end", size, n, err)
			}
			tr.mu.Lock()
			tr.st.Done = true
			tr.mu.Unlock()
			return nil
		}
		n, err := io.ReadFull(resp.Body, line[:min(streamLineLen, size-k*streamLineLen)])
		if err != nil {
			return fmt.Errorf("line %d: %w", k, err)
		}
		if err := tr.check(line[:n], k, local, time.Since(last)); err != nil {
			return err
		}
		last = time.Now()
	}
}

// check checks line k (whole, or the cut last one) and counts it.
func (tr *transfer) check(b []byte, k int64, local string, waited time.Duration) error {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(b) == streamLineLen {
		m := streamLineRE.FindSubmatch(b)
		switch {
		case m == nil:
			return fmt.Errorf("line %d: %q", k, b)
		case string(m[2]) != local || string(m[3]) != strconv.FormatInt(k, 10):
			return fmt.Errorf("line %d: %q, want client %s line %d", k, b, local, k)
		case tr.st.Backend == "":
			tr.st.Backend = string(m[1])
		case string(m[1]) != tr.st.Backend:
			return fmt.Errorf("line %d from %s, the lines before from %s", k, m[1], tr.st.Backend)
		}
	} else if want := fmt.Sprintf("backend=%s client=%s line=%d", tr.st.Backend, local, k); !strings.HasPrefix(want+strings.Repeat(".", streamLineLen), string(b)) {
		return fmt.Errorf("last line %d: %q, want the start of %q...", k, b, want)
	}
	tr.st.Got += int64(len(b))
	if k > 0 && waited > tr.st.Stall {
		tr.st.Stall, tr.st.StallEnd = waited, time.Now()
	}
	return nil
}

// A transferPool runs transfers.
type transferPool struct {
	transfers []*transfer
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// transferStallMax is the longest a transfer may wait for data. TCP
// resends a lost segment after a timeout that doubles each time (200 ms,
// 400 ms, ...): when the loaded machine drops packets under the flood (the
// appliance's single worker falls behind its port), four losses in a row
// of one segment hold a transfer for 3 s; five would hold it 6.2 s. A
// transfer that broke (reset, or moved to a backend without its
// connection) never resumes, which the errors and the whole body tell.
const transferStallMax = 5 * time.Second

// startTransfers starts n transfers of size bytes at rate bytes per second
// in ns against addr, their starts spread over 100 ms.
func startTransfers(ctx context.Context, ns *nsbed.NS, addr string, n int, size, rate int64) *transferPool {
	ctx, cancel := context.WithCancel(ctx)
	p := &transferPool{cancel: cancel}
	for i := 0; i < n; i++ {
		p.transfers = append(p.transfers, &transfer{})
	}
	staggered(ctx, &p.wg, n, 100*time.Millisecond, func(i int) { p.transfers[i].run(ctx, ns, addr, size, rate) })
	return p
}

func (p *transferPool) states() []transferState {
	out := make([]transferState, len(p.transfers))
	for i, tr := range p.transfers {
		out[i] = tr.state()
	}
	return out
}

// started waits, timeout at most, until every transfer has read a line,
// and reports whether they all have.
func (p *transferPool) started(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for _, s := range p.states() {
			ok = ok && s.Got > 0
		}
		if ok || time.Now().After(deadline) || ctx.Err() != nil {
			return ok
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wait waits, timeout at most, until every transfer has ended, then stops
// those still running and returns the states they had.
func (p *transferPool) wait(timeout time.Duration) []transferState {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
	states := p.states()
	p.stop()
	return states
}

// stop ends every transfer and waits for them.
func (p *transferPool) stop() {
	p.cancel()
	p.wg.Wait()
}

// transferProblems lists the transfers that did not read all size bytes
// from one backend without error, or waited for data transferStallMax or
// longer.
func transferProblems(states []transferState, size int64) []string {
	var p []string
	for i, s := range states {
		switch {
		case s.Err != "":
			p = append(p, fmt.Sprintf("transfer %d (%s on %s): %d of %d bytes, then: %s", i, s.Local, s.Backend, s.Got, size, s.Err))
		case !s.Done || s.Got != size:
			p = append(p, fmt.Sprintf("transfer %d (%s on %s): %d of %d bytes, not ended", i, s.Local, s.Backend, s.Got, size))
		case s.Stall >= transferStallMax:
			p = append(p, fmt.Sprintf("transfer %d (%s on %s): waited %v for data, want less than %v", i, s.Local, s.Backend,
				s.Stall.Round(time.Millisecond), transferStallMax))
		}
	}
	return p
}

// transferSpread counts the transfers by backend: "be1 5, be2 6, be3 5".
func transferSpread(states []transferState) string {
	n := map[string]int{}
	for _, s := range states {
		n[s.Backend]++
	}
	return nsbed.Spread(n)
}
