package nsbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// backendsrv answers "backend=NAME client=IP:PORT" (see testbed/backendsrv).
var answerRE = regexp.MustCompile(`backend=(\S+)(?: client=(\S+))?`)

// HTTPTally counts HTTP answers by the backend that gave them.
type HTTPTally struct {
	Requests   int
	OK         int
	PerBackend map[string]int
	// Conns is the number of TCP connections the client opened.
	Conns int
	// ClientAddrs are the distinct client addresses the backends saw.
	ClientAddrs map[string]bool
	// Errors describes failed requests (the first 10).
	Errors     []string
	ErrorCount int
}

func newTally() *HTTPTally {
	return &HTTPTally{PerBackend: map[string]int{}, ClientAddrs: map[string]bool{}}
}

func (t *HTTPTally) fail(format string, args ...any) {
	t.ErrorCount++
	if len(t.Errors) < 10 {
		t.Errors = append(t.Errors, fmt.Sprintf(format, args...))
	}
}

// answer records one answer body; false if it names no backend.
func (t *HTTPTally) answer(body string) bool {
	m := answerRE.FindStringSubmatch(body)
	if m == nil {
		return false
	}
	t.OK++
	t.PerBackend[m[1]]++
	if m[2] != "" {
		t.ClientAddrs[m[2]] = true
	}
	return true
}

// Backends returns the names of the backends that answered, sorted.
func (t *HTTPTally) Backends() []string {
	return slices.Sorted(maps.Keys(t.PerBackend))
}

// Spread formats the answers per backend: "be1 70, be2 64, be3 66".
func (t *HTTPTally) Spread() string { return Spread(t.PerBackend) }

// Spread formats a per-backend tally: "be1 70, be2 64, be3 66".
func Spread(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// CurlMany makes n GET requests to url from ns with one curl process, each
// on a new TCP connection (Connection: close, URL globbing ?n=[1-n]).
func CurlMany(ctx context.Context, ns *NS, url string, n int) (*HTTPTally, error) {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	out, err := ns.Output(ctx, "curl", "-sS", "--connect-timeout", "3", "--max-time", "5",
		"-H", "Connection: close", "-w", `\n@@status=%{http_code} connects=%{num_connects}\n`,
		fmt.Sprintf("%s%sn=[1-%d]", url, sep, n))
	// curl goes on after a failed transfer and reports it by status 000;
	// its exit status only tells about the last one.
	if out == "" && err != nil {
		return nil, err
	}
	t := newTally()
	var body strings.Builder
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "@@status=") {
			body.WriteString(line)
			body.WriteByte('\n')
			continue
		}
		t.Requests++
		var code, conns int
		fmt.Sscanf(line, "@@status=%d connects=%d", &code, &conns)
		t.Conns += conns
		switch {
		case code != http.StatusOK:
			t.fail("request %d: status %03d", t.Requests, code)
		case !t.answer(body.String()):
			t.fail("request %d: answer names no backend: %q", t.Requests, body.String())
		}
		body.Reset()
	}
	if t.Requests != n {
		t.fail("curl made %d of %d requests (%v)", t.Requests, n, err)
	}
	return t, nil
}

// KeepAlive makes n GET requests to url from ns over one HTTP keep-alive
// connection (Go's client), counting the connections it opened.
func KeepAlive(ctx context.Context, ns *NS, url string, n int) (*HTTPTally, error) {
	client := ns.HTTPClient(true)
	defer client.CloseIdleConnections()
	t := newTally()
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			t.Conns++
		}
	}}
	for i := 0; i < n; i++ {
		t.Requests++
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			t.fail("request %d: %v", i+1, err)
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			t.fail("request %d: read: %v", i+1, err)
		case resp.StatusCode != http.StatusOK:
			t.fail("request %d: %s", i+1, resp.Status)
		case !t.answer(string(b)):
			t.fail("request %d: answer names no backend: %q", i+1, b)
		}
	}
	return t, nil
}

// UploadResult is the outcome of one POST /upload.
type UploadResult struct {
	Backend      string
	Sent, Echoed int64
	SHA256       string // of what was sent
	EchoedSHA256 string // what the backend computed
}

// OK reports whether the backend received exactly what was sent.
func (u *UploadResult) OK() bool { return u.Sent == u.Echoed && u.SHA256 == u.EchoedSHA256 }

// Upload POSTs size random bytes to url (backendsrv's /upload) from ns.
func Upload(ctx context.Context, ns *NS, url string, size int) (*UploadResult, error) {
	data := make([]byte, size)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	client := ns.HTTPClient(false)
	client.Timeout = 30 * time.Second
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("upload: %s: %s", resp.Status, b)
	}
	r := &UploadResult{Sent: int64(size), SHA256: hex.EncodeToString(sum[:])}
	if _, err := fmt.Sscanf(string(b), "backend=%s bytes=%d sha256=%s", &r.Backend, &r.Echoed, &r.EchoedSHA256); err != nil {
		return nil, fmt.Errorf("upload: unexpected answer %q", b)
	}
	return r, nil
}

// WrkResult is the outcome of a wrk run.
type WrkResult struct {
	Requests   int
	Duration   time.Duration
	PerBackend map[string]int
	// Errors by kind: connect, read, write, timeout (socket errors),
	// status (non-2xx), body (answer naming no backend).
	Errors map[string]int
	Output string
}

// ErrorCount is the sum of all errors.
func (w *WrkResult) ErrorCount() int {
	n := 0
	for _, v := range w.Errors {
		n += v
	}
	return n
}

// RPS is requests per second.
func (w *WrkResult) RPS() float64 { return float64(w.Requests) / w.Duration.Seconds() }

// wrkScript counts answers per backend in each wrk thread and prints the
// sums when done.
const wrkScript = `-- written by nsbed: count answers per backend
counts = {}
bad = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  local name = body and body:match("backend=(%S+)")
  if status ~= 200 or not name then bad = bad + 1; return end
  counts[name] = (counts[name] or 0) + 1
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do
    for name, n in pairs(t:get("counts")) do io.write(string.format("@@backend %s %d\n", name, n)) end
    b = b + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("@@summary requests=%d us=%d connect=%d read=%d write=%d status=%d timeout=%d body=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, b))
end
`

// Wrk runs wrk from ns against url for d with conns connections on one
// thread, counting answers per backend with a Lua script.
func Wrk(ctx context.Context, ns *NS, url string, d time.Duration, conns int) (*WrkResult, error) {
	script := ns.bed.Path("wrk-count.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return nil, err
	}
	out, err := ns.Output(ctx, "wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s",
		"--timeout", "2s", "-s", script, url)
	if err != nil {
		return nil, err
	}
	w := &WrkResult{PerBackend: map[string]int{}, Errors: map[string]int{}, Output: out}
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "@@backend":
			n, _ := strconv.Atoi(f[2])
			w.PerBackend[f[1]] += n
		case len(f) > 1 && f[0] == "@@summary":
			found = true
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.Atoi(v)
				switch k {
				case "requests":
					w.Requests = n
				case "us":
					w.Duration = time.Duration(n) * time.Microsecond
				default:
					w.Errors[k] = n
				}
			}
		}
	}
	if !found || w.Duration <= 0 {
		return nil, fmt.Errorf("wrk: no summary in output:\n%s", out)
	}
	return w, nil
}

// UDPTally is the outcome of UDPFlows.
type UDPTally struct {
	Flows, Sent, Received int
	// PerBackend counts flows by the backend that answered them.
	PerBackend map[string]int
	// Sources counts answers by source address (want only the VIP).
	Sources map[string]int
	// Split counts flows answered by more than one backend.
	Split  int
	Errors []string
}

// Spread formats flows per backend.
func (u *UDPTally) Spread() string { return Spread(u.PerBackend) }

// UDPFlows sends perFlow datagrams on each of flows UDP flows (one socket,
// so one source port, per flow) from ns to addr (IPv4 or IPv6) and waits for each echo,
// recording which backend answered and from which address. Every socket
// stays open until it returns: a closed one's port could be handed to a
// later flow, which would then be the same 5-tuple, not a new flow.
func UDPFlows(ctx context.Context, ns *NS, addr string, flows, perFlow int) (*UDPTally, error) {
	dst, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	network := "udp4"
	if dst.IP.To4() == nil {
		network = "udp6"
	}
	u := &UDPTally{Flows: flows, PerBackend: map[string]int{}, Sources: map[string]int{}}
	buf := make([]byte, 2048)
	var open []net.PacketConn
	defer func() {
		for _, pc := range open {
			pc.Close()
		}
	}()
	for f := 0; f < flows; f++ {
		pc, err := ns.ListenPacket(network, ":0")
		if err != nil {
			return nil, err
		}
		open = append(open, pc)
		seen := map[string]bool{}
		for s := 0; s < perFlow; s++ {
			msg := fmt.Sprintf("flow=%d seq=%d", f, s)
			u.Sent++
			if _, err := pc.WriteTo([]byte(msg), dst); err != nil {
				u.Errors = append(u.Errors, err.Error())
				continue
			}
			_ = pc.SetReadDeadline(time.Now().Add(time.Second))
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				u.Errors = append(u.Errors, fmt.Sprintf("%s: %v", msg, err))
				continue
			}
			u.Sources[from.String()]++
			name, rest, ok := strings.Cut(strings.TrimPrefix(string(buf[:n]), "backend="), " ")
			if !ok || rest != msg {
				u.Errors = append(u.Errors, fmt.Sprintf("%s: unexpected answer %q", msg, buf[:n]))
				continue
			}
			u.Received++
			seen[name] = true
		}
		for name := range seen {
			u.PerBackend[name]++
		}
		if len(seen) > 1 {
			u.Split++
		}
	}
	return u, nil
}
