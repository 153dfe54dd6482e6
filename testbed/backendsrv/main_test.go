package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHTTP(t *testing.T) {
	srv := httptest.NewServer(newHandler("be7"))
	defer srv.Close()
	body := strings.Repeat("x", 100000)
	sum := sha256.Sum256([]byte(body))
	for _, tc := range []struct {
		desc, method, path, body string
		wantCode                 int
		wantPrefix               string
	}{
		{"root names the backend", "GET", "/", "", 200, "backend=be7 client=127.0.0.1:"},
		{"upload hashes the body", "POST", "/upload", body, 200, "backend=be7 bytes=100000 sha256=" + hex.EncodeToString(sum[:]) + "\n"},
		{"slow answers after the delay", "GET", "/slow?ms=20", "", 200, "backend=be7 slept=20ms"},
		{"slow wants a number", "GET", "/slow?ms=x", "", 400, "ms must be"},
		{"stream wants a size", "GET", "/stream?bytes=x", "", 400, "bytes must be"},
		{"stream wants a rate of at least 0", "GET", "/stream?bytes=10&rate=-1", "", 400, "bytes must be"},
		{"stream wants at most 1 GiB", "GET", "/stream?bytes=1073741825", "", 400, "bytes must be"},
		{"unknown path", "GET", "/nope", "", 404, "404"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.HasPrefix(string(b), tc.wantPrefix) {
				t.Errorf("got %d %q, want %d %q...", resp.StatusCode, b, tc.wantCode, tc.wantPrefix)
			}
			if strings.HasPrefix(tc.path, "/slow?ms=20") && time.Since(start) < 20*time.Millisecond {
				t.Errorf("answered after %v, want at least 20ms", time.Since(start))
			}
		})
	}
}

// TestStream reads GET /stream unpaced and paced: exactly the bytes asked
// for, in 100-byte lines naming the backend, the client and the line's
// number, the last one cut short; the paced one takes as long as its rate
// says.
func TestStream(t *testing.T) {
	srv := httptest.NewServer(newHandler("be7"))
	defer srv.Close()
	for _, tc := range []struct {
		desc        string
		bytes, rate int64
		atLeast     time.Duration
	}{
		{"unpaced", 1<<20 + 42, 0, 0},
		{"paced", 50000, 200000, 240 * time.Millisecond},
		{"empty", 0, 0, 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			start := time.Now()
			resp, err := http.Get(fmt.Sprintf("%s/stream?bytes=%d&rate=%d", srv.URL, tc.bytes, tc.rate))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || resp.ContentLength != tc.bytes {
				t.Fatalf("got %s, Content-Length %d, %v; want 200, %d", resp.Status, resp.ContentLength, err, tc.bytes)
			}
			if int64(len(b)) != tc.bytes {
				t.Fatalf("got %d bytes, want %d", len(b), tc.bytes)
			}
			if d := time.Since(start); d < tc.atLeast {
				t.Errorf("took %v, want at least %v at %d bytes/s", d, tc.atLeast, tc.rate)
			}
			re := regexp.MustCompile(`^backend=be7 client=(127\.0\.0\.1:\d+) line=(\d+)\.*\n$`)
			client := ""
			for k := 0; k*streamLineLen < len(b); k++ {
				l := b[k*streamLineLen : min(len(b), (k+1)*streamLineLen)]
				if len(l) < streamLineLen { // the last, cut short
					want := fmt.Sprintf("backend=be7 client=%s line=%d", client, k)
					if !bytes.HasPrefix([]byte(want+strings.Repeat(".", streamLineLen)), l) {
						t.Errorf("last line %q, want the start of %q...", l, want)
					}
					break
				}
				m := re.FindSubmatch(l)
				if m == nil || string(m[2]) != strconv.Itoa(k) || client != "" && string(m[1]) != client {
					t.Fatalf("line %d: %q", k, l)
				}
				client = string(m[1])
			}
		})
	}
}

// TestStreamRefusesLongLines: a backend name too long for the stream's
// 100-byte lines gets 400, not lines cut short.
func TestStreamRefusesLongLines(t *testing.T) {
	srv := httptest.NewServer(newHandler(strings.Repeat("b", 80)))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/stream?bytes=1000")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "too long") {
		t.Errorf("got %s %q, want 400 ... too long", resp.Status, b)
	}
}

// TestUDPEchoAnswersFromTheDestination sends to 127.0.0.2 while the echo
// listens on the wildcard address: the answer must come from 127.0.0.2 (as
// it must come from the VIP behind a DSR load balancer), not from the
// address the route would pick (127.0.0.1). The IPv6 echo (--udp6) is asked
// on ::1, the one IPv6 loopback address.
func TestUDPEchoAnswersFromTheDestination(t *testing.T) {
	for _, tc := range []struct {
		network, listen, from string
		dst                   net.IP
	}{
		{"udp4", "0.0.0.0:0", "127.0.0.1:0", net.IPv4(127, 0, 0, 2)},
		{"udp6", "[::]:0", "[::1]:0", net.IPv6loopback},
	} {
		t.Run(tc.network, func(t *testing.T) {
			pc, err := net.ListenPacket(tc.network, tc.listen)
			if err != nil {
				t.Skipf("no %s: %v", tc.network, err)
			}
			go udpEcho(newEchoConn(tc.network, pc), "be7")
			defer pc.Close()
			port := pc.LocalAddr().(*net.UDPAddr).Port

			c, err := net.ListenPacket(tc.network, tc.from)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dst := &net.UDPAddr{IP: tc.dst, Port: port}
			if _, err := c.WriteTo([]byte("hello"), dst); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 100)
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(buf[:n]), "backend=be7 hello"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			if got := from.String(); got != dst.String() {
				t.Errorf("answer came from %s, want %s", got, dst)
			}
		})
	}
}
