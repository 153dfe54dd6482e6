// Command backendsrv is the testbed's real server: an HTTP server and a UDP
// echo that name themselves in every answer, so a client can tell which
// backend a load balancer picked.
//
//	backendsrv --name be1 --http :80 --udp :9000
//	backendsrv --name be1 --http [::]:80 --udp 0.0.0.0:9000 --udp6 [::]:9000
//
// HTTP (keep-alive as usual for net/http):
//
//	GET  /             backend=be1 client=10.99.0.10:40312
//	POST /upload       backend=be1 bytes=1048576 sha256=<hex of the body>
//	GET  /slow?ms=N    answers after N milliseconds (at most 60 s)
//	GET  /stream?bytes=N&rate=R
//	                   N bytes (at most 1 GiB) of 100-byte lines
//	                   "backend=be1 client=10.99.0.10:40312 line=K" padded
//	                   with '.' and ended by '\n' (the last one cut at N),
//	                   sent at R bytes per second (0: as fast as it goes)
//
// UDP: every datagram is answered with "backend=be1 " followed by the
// datagram's payload, from the address it was sent to (the VIP for DSR).
// --udp listens on IPv4, --udp6 on IPv6; "[::]:80" serves HTTP on both.
package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

func main() {
	name := flag.String("name", "", "backend name put in every answer (required)")
	httpAddr := flag.String("http", ":80", "HTTP listen address; empty disables HTTP")
	udpAddr := flag.String("udp", "", "UDP echo listen address (IPv4); empty disables it")
	udp6Addr := flag.String("udp6", "", "UDP echo listen address (IPv6); empty disables it")
	flag.Parse()
	if *name == "" {
		fmt.Fprintln(os.Stderr, "backendsrv: --name is required")
		os.Exit(2)
	}
	log.SetPrefix("backendsrv " + *name + ": ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 3)
	if *httpAddr != "" {
		srv := &http.Server{Addr: *httpAddr, Handler: newHandler(*name), ReadHeaderTimeout: 10 * time.Second}
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("http listening on %s", ln.Addr())
		go func() { errc <- srv.Serve(ln) }()
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	for _, u := range []struct{ network, addr string }{{"udp4", *udpAddr}, {"udp6", *udp6Addr}} {
		if u.addr == "" {
			continue
		}
		pc, err := net.ListenPacket(u.network, u.addr)
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("udp echo listening on %s", pc.LocalAddr())
		go func() { errc <- udpEcho(newEchoConn(u.network, pc), *name) }()
		go func() { <-ctx.Done(); pc.Close() }()
	}
	select {
	case <-ctx.Done():
		log.Print("stopping")
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}
}

// newHandler returns the HTTP routes of backend name.
func newHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend=%s client=%s\n", name, r.RemoteAddr)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, fmt.Sprintf("backend=%s error=%v", name, err), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "backend=%s bytes=%d sha256=%s\n", name, n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 || ms > 60000 {
			http.Error(w, "ms must be 0..60000", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "backend=%s slept=%dms client=%s\n", name, ms, r.RemoteAddr)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, err1 := strconv.ParseInt(q.Get("bytes"), 10, 64)
		rate, err2 := strconv.ParseInt(cmp.Or(q.Get("rate"), "0"), 10, 64)
		if err1 != nil || err2 != nil || n < 0 || n > 1<<30 || rate < 0 {
			http.Error(w, "bytes must be 0..1073741824, rate at least 0", http.StatusBadRequest)
			return
		}
		line := streamLine(name, r.RemoteAddr)
		var last [streamLineLen]byte
		if !line(last[:], n/streamLineLen) {
			http.Error(w, "backend name and client address too long for the stream's lines", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		stream(r.Context(), w, line, n, rate)
	})
	return mux
}

// streamLineLen is the length of a line of GET /stream, '\n' included.
const streamLineLen = 100

// streamLine returns the function that writes line k of GET /stream from
// backend name to client into b (streamLineLen bytes); false if the
// line's text does not fit (it is cut then).
func streamLine(name, client string) func(b []byte, k int64) bool {
	return func(b []byte, k int64) bool {
		var text [2 * streamLineLen]byte
		s := fmt.Appendf(text[:0], "backend=%s client=%s line=%d", name, client, k)
		n := copy(b[:streamLineLen-1], s)
		for i := n; i < streamLineLen-1; i++ {
			b[i] = '.'
		}
		b[streamLineLen-1] = '\n'
		return len(s) < streamLineLen
	}
}

// streamTick is how often a paced stream writes.
const streamTick = 10 * time.Millisecond

// stream writes n bytes of lines to w, rate bytes per second at most (0:
// no limit), flushing each write, until done or ctx ends.
func stream(ctx context.Context, w http.ResponseWriter, line func([]byte, int64) bool, n, rate int64) {
	rc := http.NewResponseController(w)
	buf := make([]byte, 64*streamLineLen)
	start := time.Now()
	var sent int64
	for sent < n {
		want := n
		if rate > 0 {
			want = min(n, rate*time.Since(start).Milliseconds()/1000)
			if want < n { // whole lines until the last
				want -= want % streamLineLen
			}
			if want <= sent {
				select {
				case <-ctx.Done():
					return
				case <-time.After(streamTick):
				}
				continue
			}
		}
		chunk := buf[:min(int64(len(buf)), want-sent)]
		for off := int64(0); off < int64(len(chunk)); off += streamLineLen {
			// sent is a multiple of streamLineLen: only the
			// last write ends inside a line.
			var l [streamLineLen]byte
			line(l[:], (sent+off)/streamLineLen)
			copy(chunk[off:], l[:])
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		sent += int64(len(chunk))
	}
}

// echoConn is a UDP socket that tells each datagram's destination address
// and sends from a given source address (IP_PKTINFO, IPV6_PKTINFO).
type echoConn interface {
	enableDst() error
	readFrom(b []byte) (n int, dst net.IP, from net.Addr, err error)
	writeFrom(b []byte, src net.IP, to net.Addr) error
}

// newEchoConn wraps pc, a socket of network "udp4" or "udp6".
func newEchoConn(network string, pc net.PacketConn) echoConn {
	if network == "udp6" {
		return echo6{ipv6.NewPacketConn(pc)}
	}
	return echo4{ipv4.NewPacketConn(pc)}
}

type echo4 struct{ *ipv4.PacketConn }

func (c echo4) enableDst() error { return c.SetControlMessage(ipv4.FlagDst, true) }

func (c echo4) readFrom(b []byte) (int, net.IP, net.Addr, error) {
	n, cm, from, err := c.ReadFrom(b)
	if cm == nil {
		return n, nil, from, err
	}
	return n, cm.Dst, from, err
}

func (c echo4) writeFrom(b []byte, src net.IP, to net.Addr) error {
	var cm *ipv4.ControlMessage
	if src != nil {
		cm = &ipv4.ControlMessage{Src: src}
	}
	_, err := c.WriteTo(b, cm, to)
	return err
}

type echo6 struct{ *ipv6.PacketConn }

func (c echo6) enableDst() error { return c.SetControlMessage(ipv6.FlagDst, true) }

func (c echo6) readFrom(b []byte) (int, net.IP, net.Addr, error) {
	n, cm, from, err := c.ReadFrom(b)
	if cm == nil {
		return n, nil, from, err
	}
	return n, cm.Dst, from, err
}

func (c echo6) writeFrom(b []byte, src net.IP, to net.Addr) error {
	var cm *ipv6.ControlMessage
	if src != nil {
		cm = &ipv6.ControlMessage{Src: src}
	}
	_, err := c.WriteTo(b, cm, to)
	return err
}

// udpEcho answers every datagram on pc until pc is closed. A socket bound to
// the wildcard address would answer from the address the route to the
// client prefers (the backend's own), so each answer is sent from the
// datagram's destination address instead (IP_PKTINFO, IPV6_PKTINFO): the
// VIP on lo when the datagram came through a DSR load balancer.
func udpEcho(pc echoConn, name string) error {
	if err := pc.enableDst(); err != nil {
		return fmt.Errorf("udp: pktinfo: %w", err)
	}
	buf := make([]byte, 64<<10)
	prefix := []byte("backend=" + name + " ")
	out := make([]byte, 0, len(prefix)+len(buf))
	for {
		n, dst, from, err := pc.readFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		var src net.IP
		if dst != nil && !dst.IsMulticast() {
			src = dst
		}
		out = append(append(out[:0], prefix...), buf[:n]...)
		if err := pc.writeFrom(out, src, from); err != nil {
			log.Printf("udp reply to %s: %v", from, err)
		}
	}
}
