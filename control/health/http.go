package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// HTTPChecker passes when GET Path answers with one of the Expect status
// codes. Redirects are not followed (a 301 is a status like any other);
// each probe uses a new connection; Host is the backend's IP (with the port
// unless 80; an IPv6 one in brackets). Make one with NewHTTPChecker.
type HTTPChecker struct {
	path   string
	url    string
	host   string
	expect []int
	client *http.Client
}

// NewHTTPChecker returns a checker of GET path on addr that passes on the
// status codes in expect.
func NewHTTPChecker(addr netip.AddrPort, path string, expect []int) *HTTPChecker {
	host := addr.String()
	if addr.Port() == 80 {
		host = strings.TrimSuffix(host, ":80") // "[2001:db8::21]" keeps its brackets (RFC 3986 3.2.2)
	}
	return &HTTPChecker{
		path:   path,
		url:    "http://" + addr.String() + path,
		host:   host,
		expect: slices.Clone(expect),
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:              nil,
				DisableKeepAlives:  true,
				DisableCompression: true,
				DialContext:        (&net.Dialer{}).DialContext,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Check sends one GET and reads at most 64 KiB of the answer.
func (c *HTTPChecker) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return err
	}
	req.Host = c.host
	req.Header.Set("User-Agent", "dsrlb-health/1")
	resp, err := c.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return context.DeadlineExceeded
		}
		return fmt.Errorf("http GET %s: %w", c.path, unwrapURLError(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if !slices.Contains(c.expect, resp.StatusCode) {
		return fmt.Errorf("http GET %s: status %d, want %v", c.path, resp.StatusCode, c.expect)
	}
	return nil
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the URL.
func unwrapURLError(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok {
		if inner := u.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
