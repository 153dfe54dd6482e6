package e2e

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// screenshots, if set, is the directory the console tests write their
// screenshots to (`make console-screenshots` passes docs/).
var screenshots = flag.String("screenshots", "", "write the web console's screenshots (PNG) to this directory")

// browser is a headless Chromium tab with every message of its console
// collected.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

// needChromium returns the path of Debian's chromium; it skips t when
// chromium is not installed.
func needChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium; make deps)")
	}
	return path
}

// newBrowser starts chromium (path) headless for t inside namespace ns,
// which has nothing but loopback, so the browser can reach nothing but
// what is forwarded there; and closes it when t ends. chromedp talks to
// it over a pipe (--remote-debugging-pipe), which crosses namespaces. It
// runs without the sandbox, which root cannot have.
func newBrowser(t *testing.T, path string, ns *nsbed.NS) *browser {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	inNS := func(cmd *exec.Cmd) {
		cmd.Args = append([]string{ip, "netns", "exec", ns.Name, cmd.Path}, cmd.Args[1:]...)
		cmd.Path = ip
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 1100), chromedp.ModifyCmdFunc(inNS))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // start the browser and its tab
		cancel()
		cancelAlloc()
		t.Fatalf("chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.msgs = append(b.msgs, m)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-done
	})
	return b
}

// do runs steps with a deadline of d.
func (b *browser) do(d time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// act runs steps that act on the page's rows, again if a row they found
// was replaced under them: the console rebuilds its tables on every
// refresh (5 s), and chromedp acts on a node it found first, where a
// person's click lands on whatever row is there.
func (b *browser) act(steps ...chromedp.Action[chromedp.Void]) error {
	var err error
	for range 3 {
		if err = b.do(10*time.Second, steps...); err == nil || !strings.Contains(err.Error(), "node") {
			return err
		}
	}
	return err
}

// eval evaluates the JavaScript expression js into a T, awaiting it if
// it is a promise.
func eval[T any](b *browser, js string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// poll waits up to d for the JavaScript expression js to be truthy.
func (b *browser) poll(d time.Duration, js string) error {
	ctx, cancel := context.WithTimeout(b.ctx, d+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", js, err)
	}
	return nil
}

// problems returns the console's errors, warnings and exceptions so far.
func (b *browser) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.msgs {
		if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
			out = append(out, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
		}
	}
	return out
}

// screenshot writes the whole page to name in the -screenshots directory,
// if one is set.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	if *screenshots == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(*screenshots, name)
	if err := os.MkdirAll(*screenshots, 0o755); err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Error(err)
		return
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

// consoleToken is the API token of the console test's appliance.
const consoleToken = "console-e2e-token-0123456789"

// TestConsole drives the web console of a running appliance (the L2 bed)
// in headless Chromium: it loads without a console error and shows the
// appliance's services and BGP session; a graph gains points while
// traffic flows; without the token every control is disabled; with it a
// drain click drains the backend (checked over the API) and shows in the
// event feed; and a config of 200 services and 2,000 backends renders
// within a bound.
func TestConsole(t *testing.T) {
	chromium := needChromium(t)
	l := startL2(t, nsbed.L2Options{Config: func(c *v1.Config) {
		c.API.Token = consoleToken
		// A peer that runs no BGP: the console shows the session as not
		// established, and why the VIP is not announced.
		c.BGP = &v1.BGP{ASN: 65010, RouterID: nsbed.L2ApplianceIP.String(),
			Peers: []v1.BGPPeer{{Address: nsbed.L2ClientIP.String(), ASN: 65000}}}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bns, err := l.Bed.NewNS("browser", false)
	if err != nil {
		t.Fatal(err)
	}
	base, stop, err := l.Appliance.Forward(bns)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	b := newBrowser(t, chromium, bns)
	t.Logf("console at %s in namespace %s (the appliance's API, forwarded)", base, bns.Name)

	t.Run("loads without console errors and shows the services and BGP", func(t *testing.T) {
		start := time.Now()
		if err := b.do(30*time.Second, chromedp.Navigate(base+"/")); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(20*time.Second, `document.body.dataset.loaded === "true"`); err != nil {
			t.Fatal(err)
		}
		t.Logf("RESULT console loaded in %v", time.Since(start).Round(time.Millisecond))
		names, err := eval[[]string](b, `[...document.querySelectorAll("#services tbody tr")].map(r => r.dataset.service)`)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, s := range l.Appliance.Config.Services {
			want = append(want, s.Name)
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("services shown %v, want %v", names, want)
		}
		vip, err := eval[string](b, `document.querySelector('#services tr[data-service="web"] td:nth-child(2)').textContent`)
		if want := nsbed.L2VIP.String() + ":80/tcp"; err != nil || vip != want {
			t.Errorf("web's VIP cell %q (%v), want %q", vip, err, want)
		}
		peer, err := eval[string](b, `document.querySelector("#bgp tbody td").textContent`)
		if err != nil || peer != nsbed.L2ClientIP.String() {
			t.Errorf("first BGP row's peer %q (%v), want %s", peer, err, nsbed.L2ClientIP)
		}
		// Everything the page loaded came from the API that served it.
		foreign, err := eval[[]string](b, `performance.getEntriesByType("resource").map(e => e.name).filter(u => !u.startsWith(location.origin + "/"))`)
		if err != nil || len(foreign) != 0 {
			t.Errorf("requests beyond the API: %v (%v)", foreign, err)
		}
		// The feed holds the events so far, the start's config event first.
		if err := b.poll(10*time.Second, `document.querySelectorAll("#events li.kind-config").length > 0`); err != nil {
			t.Error(err)
		}
		if p := b.problems(); len(p) != 0 {
			t.Errorf("console messages: %v", p)
		}
	})

	web := l.Backends[0].IP.String()
	t.Run("read-only without the token", func(t *testing.T) {
		if err := b.act(chromedp.Click(`#services tr[data-service="web"]`)); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `document.querySelectorAll("#backends tbody tr").length === `+fmt.Sprint(len(l.Backends))); err != nil {
			t.Fatal(err)
		}
		controls, err := eval[[]bool](b, `[...document.querySelectorAll("#backends .control")].map(c => c.disabled)`)
		if err != nil {
			t.Fatal(err)
		}
		// Per backend: the weight box and four buttons.
		if len(controls) != 5*len(l.Backends) {
			t.Errorf("%d controls, want %d", len(controls), 5*len(l.Backends))
		}
		for i, d := range controls {
			if !d {
				t.Errorf("control %d is enabled without the token", i)
			}
		}
		mode, _ := eval[string](b, `document.getElementById("mode").textContent`)
		if !strings.HasPrefix(mode, "Read-only") {
			t.Errorf("mode banner %q, want it to say read-only", mode)
		}
	})

	t.Run("a graph gains points while traffic flows", func(t *testing.T) {
		points := func() int {
			n, err := eval[string](b, `document.getElementById("chart-service-packets").dataset.points || "0"`)
			if err != nil {
				t.Fatal(err)
			}
			var v int
			fmt.Sscan(n, &v)
			return v
		}
		p0 := points()
		wrk, err := nsbed.Wrk(ctx, l.Client, l.URL("/"), 12*time.Second, 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("wrk: %d requests, errors %v", wrk.Requests, wrk.Errors)
		// The server samples every 5 s and the page reads every 5 s.
		if err := b.poll(15*time.Second, `Number(document.getElementById("chart-service-packets").dataset.points) >= `+fmt.Sprint(p0+2)); err != nil {
			t.Error(err)
		}
		p1 := points()
		t.Logf("RESULT console graph of web: %d points before, %d after 12 s of traffic", p0, p1)
		var h v1.History
		if err := l.Appliance.Get(ctx, "/api/v1/history?service=web", &h); err != nil {
			t.Fatal(err)
		}
		var peak float64
		for _, s := range h.Series {
			if s.Name == "packets_per_second" {
				for _, v := range s.Values {
					peak = max(peak, v)
				}
			}
		}
		if peak <= 0 {
			t.Errorf("web's history %+v has no packets/s while wrk ran", h)
		}
		t.Logf("RESULT console web peak %.0f packets/s", peak)
	})

	t.Run("drain click drains the backend", func(t *testing.T) {
		if err := b.do(10*time.Second, chromedp.SendKeys("#token", consoleToken), chromedp.Click("#token-use")); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `[...document.querySelectorAll("#backends .control")].every(c => !c.disabled)`); err != nil {
			t.Fatal(err)
		}
		if err := b.act(chromedp.Click(`#backends tr[data-backend="` + web + `"] button[data-action="drain"]`)); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `document.querySelector('#backends tr[data-backend="`+web+`"] td.state').textContent === "drain"`); err != nil {
			t.Error(err)
		}
		st, err := l.Appliance.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, s := range st.Services {
			for _, be := range s.Backends {
				if s.Name == "web" && be.IP == web {
					got = be.State
				}
			}
		}
		if got != "drain" {
			t.Errorf("web/%s state over the API %q, want drain", web, got)
		}
		// The change reaches the event feed through the API's stream.
		if err := b.poll(10*time.Second, `[...document.querySelectorAll("#events li.kind-config")].some(li => li.textContent.includes("service web/backend `+web+`"))`); err != nil {
			feed, _ := eval[string](b, `document.getElementById("events").textContent`)
			t.Errorf("%v; the feed: %s", err, feed)
		}
		// Enable it again, and give another backend weight 5.
		if err := b.poll(10*time.Second, `[...document.querySelectorAll("#backends .control")].every(c => !c.disabled)`); err != nil {
			t.Fatal(err)
		}
		if err := b.act(chromedp.Click(`#backends tr[data-backend="` + web + `"] button[data-action="enable"]`)); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `document.querySelector('#backends tr[data-backend="`+web+`"] td.state').textContent === "enabled"`); err != nil {
			t.Error(err)
		}
		other := l.Backends[1].IP.String()
		if err := b.poll(10*time.Second, `[...document.querySelectorAll("#backends .control")].every(c => !c.disabled)`); err != nil {
			t.Fatal(err)
		}
		// Focused, the weight box is left alone by the refresh.
		if err := b.act(chromedp.Focus(`#backends tr[data-backend="`+other+`"] input.weight`),
			chromedp.SetValue(`#backends tr[data-backend="`+other+`"] input.weight`, "5"),
			chromedp.Click(`#backends tr[data-backend="`+other+`"] button[data-action="set weight"]`)); err != nil {
			t.Fatal(err)
		}
		// The page answers once the API accepted it and it read the
		// status again; until then its controls are disabled.
		if err := b.poll(10*time.Second, `document.getElementById("message").textContent === "web `+other+`: weight 5 accepted"`); err != nil {
			t.Error(err)
		}
		st, err = l.Appliance.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Services {
			for _, be := range s.Backends {
				if s.Name == "web" && be.IP == web && be.State != "enabled" {
					t.Errorf("web/%s state over the API %q after enable, want enabled", web, be.State)
				}
				if s.Name == "web" && be.IP == other && be.Weight != 5 {
					t.Errorf("web/%s weight over the API %d, want 5", other, be.Weight)
				}
			}
		}
		// Drain it again and open its graphs, for the screenshot.
		if err := b.poll(10*time.Second, `[...document.querySelectorAll("#backends .control")].every(c => !c.disabled)`); err != nil {
			t.Fatal(err)
		}
		if err := b.act(chromedp.Click(`#backends tr[data-backend="` + web + `"] button[data-action="drain"]`)); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `document.querySelector('#backends tr[data-backend="`+web+`"] td.state').textContent === "drain"`); err != nil {
			t.Error(err)
		}
		if err := b.act(chromedp.Click(`#backends tr[data-backend="` + web + `"] td`)); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `Number(document.getElementById("chart-backend-packets").dataset.points) > 0`); err != nil {
			t.Error(err)
		}
		if p := b.problems(); len(p) != 0 {
			t.Errorf("console messages: %v", p)
		}
		b.screenshot(t, "console-service.png")
	})

	t.Run("200 services and 2,000 backends", func(t *testing.T) {
		svcs := scaleServices(l.Appliance.Config.Services[0], 200, 2000)
		if err := l.Appliance.Change(ctx, "PUT", "/api/v1/services", v1.ServiceList{Services: svcs}, nil); err != nil {
			t.Fatal(err)
		}
		// A fresh page: load, fetch, render the first page of services.
		start := time.Now()
		if err := b.do(30*time.Second, chromedp.Navigate(base+"/")); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(30*time.Second, `document.body.dataset.loaded === "true" && document.querySelectorAll("#services tbody tr").length === 50`); err != nil {
			t.Fatal(err)
		}
		load := time.Since(start)
		count, _ := eval[string](b, `document.getElementById("services-count").textContent`)
		b.screenshot(t, "console-scale.png")
		// Filter to one service, timed in the page: the handler filters
		// and rebuilds the table, then the layout is forced.
		filterMs, err := eval[float64](b, `(() => { const f = document.getElementById("services-filter"), t = performance.now();
			f.value = "svc-0007"; f.dispatchEvent(new Event("input")); void document.body.offsetHeight;
			return performance.now() - t; })()`)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `document.querySelectorAll("#services tbody tr").length === 1`); err != nil {
			t.Fatal(err)
		}
		filter := time.Duration(filterMs * float64(time.Millisecond))
		start = time.Now()
		if err := b.act(chromedp.Click(`#services tr[data-service="svc-0007"]`)); err != nil {
			t.Fatal(err)
		}
		if err := b.poll(10*time.Second, `document.querySelectorAll("#backends tbody tr").length === 10`); err != nil {
			t.Fatal(err)
		}
		open := time.Since(start)
		// One refresh of everything (status, services, rates, tables).
		refresh, err := eval[float64](b, `(async () => { const t = performance.now();
			await Promise.all(["/api/v1/status", "/api/v1/services", "/api/v1/rates"].map(p => fetch(p).then(r => r.json())));
			return performance.now() - t; })()`)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("RESULT console 200 services/2000 backends (%s): page loaded and rendered in %v, filter (in the page) %v, service opened %v, API reads of one refresh %.0f ms",
			count, load.Round(time.Millisecond), filter.Round(time.Millisecond), open.Round(time.Millisecond), refresh)
		if count != "(200)" {
			t.Errorf("services count %q, want (200)", count)
		}
		// Bounds: several times what was measured on the 2-core test
		// machine (docs/console.md), so that only a real regression fails.
		if load > 10*time.Second || filter > time.Second || open > 3*time.Second {
			t.Errorf("too slow: load %v (bound 10 s), filter %v (1 s), open %v (3 s)", load, filter, open)
		}
		if p := b.problems(); len(p) != 0 {
			t.Errorf("console messages: %v", p)
		}
	})
}

// scaleServices returns n services with total backends between them: web
// (the bed's, kept so its traffic still flows) and n-1 more, svc-0001...,
// of about total/n backends each, on addresses of the bed's subnet (the
// appliance resolves none of them: they show as pending or down).
func scaleServices(web v1.Service, n, total int) []v1.Service {
	out := []v1.Service{web}
	left := total - len(web.Backends)
	for i := 1; i < n; i++ {
		per := left / (n - i)
		s := v1.Service{Name: fmt.Sprintf("svc-%04d", i), VIP: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(i%250 + 1)}).String(),
			Protocol: "tcp", Port: 80, Mode: "l2"}
		for j := 0; j < per; j++ {
			ip := netip.AddrFrom4([4]byte{10, 99, 0, byte(120 + (i*7+j)%100)})
			s.Backends = append(s.Backends, v1.Backend{IP: ip.String()})
		}
		left -= per
		out = append(out, s)
	}
	return out
}
