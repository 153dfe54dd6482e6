// Command demo shows dsrlb doing L2 direct server return on real kernels:
// it builds the L2 testbed of package nsbed, sends real traffic from the
// client (separate curl connections, a keep-alive connection, UDP flows, an
// upload, wrk load), prints who answered, the appliance's counters and the
// evidence that no answer passed through the appliance, tears everything
// down and exits 0 only if all of it held. `make demo` runs it through
// testbed/demo.sh.
//
//	demo --bin bin [--requests 200] [--duration 10s] [--conns 16] [--backends 3] [--keep]
//	demo --sweep   remove what killed runs left behind
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

func main() {
	binDir := flag.String("bin", "bin", "directory with dsrlb, dsrctl and backendsrv")
	requests := flag.Int("requests", 200, "separate HTTP connections made with curl")
	duration := flag.Duration("duration", 10*time.Second, "wrk load duration")
	conns := flag.Int("conns", 16, "wrk connections")
	backends := flag.Int("backends", 3, "number of backends")
	keep := flag.Bool("keep", false, "keep the work directory (configs, logs, captures)")
	sweep := flag.Bool("sweep", false, "only remove testbeds that killed runs left behind")
	flag.Parse()
	if *sweep {
		nsbed.Sweep(func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
		return
	}
	bins, err := nsbed.BinariesIn(*binDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err, "(run make build)")
		os.Exit(2)
	}
	nsbed.CloseOnSignal()
	d := &demo{bins: bins, requests: *requests, duration: *duration, conns: *conns, backends: *backends, keep: *keep}
	ok := d.run()
	if nsbed.Interrupted() {
		select {} // the signal handler tears down and exits
	}
	if ok {
		fmt.Println("\nRESULT: PASS")
		return
	}
	fmt.Println("\nRESULT: FAIL")
	for _, p := range d.problems {
		fmt.Println("  -", p)
	}
	os.Exit(1)
}

type demo struct {
	bins                         nsbed.Binaries
	requests, conns, backends    int
	duration                     time.Duration
	keep                         bool
	l                            *nsbed.L2
	problems                     []string
	curl, keepAlive              *nsbed.HTTPTally
	udp                          *nsbed.UDPTally
	wrk                          *nsbed.WrkResult
	dsr                          *nsbed.DSRReport
	delta                        *nsbed.Stats
	curlLine, udpLine, statsLine string
}

func (d *demo) problem(format string, a ...any) {
	d.problems = append(d.problems, fmt.Sprintf(format, a...))
}

func (d *demo) run() bool {
	ctx := context.Background()
	fmt.Println("dsrlb demo: L2 direct server return through the DPDK appliance")
	fmt.Println("==============================================================")
	l, err := nsbed.StartL2(ctx, nsbed.L2Options{Bins: d.bins, Backends: d.backends,
		Bed: nsbed.Options{Keep: d.keep, Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }}})
	if err != nil {
		d.problem("testbed: %v", err)
		return false
	}
	d.l = l
	defer func() {
		if err := l.Close(); err != nil {
			d.problem("teardown: %v", err)
		}
		fmt.Println("\ntestbed torn down (namespaces deleted, processes stopped)")
		if d.keep {
			fmt.Println("work directory kept:", l.Bed.Dir())
		}
	}()
	d.describe()
	if err := d.traffic(ctx); err != nil {
		d.problem("%v", err)
		if !nsbed.Interrupted() {
			fmt.Println("\ndsrlb log (end):\n" + l.Appliance.Proc.Tail(20))
		}
		return false
	}
	d.report()
	if err := l.Appliance.Stop(); err != nil {
		d.problem("dsrlb did not stop cleanly: %v", err)
	} else {
		fmt.Println("\ndsrlb stopped cleanly (SIGTERM, exit status 0)")
	}
	return len(d.problems) == 0
}

func (d *demo) describe() {
	l := d.l
	fmt.Printf("\ntestbed: namespaces %s*, segment %s on bridge br-lan in %ssw\n", l.Bed.Prefix(), nsbed.L2Subnet, l.Bed.Prefix())
	cmac, _ := l.Client.LinkMAC("eth0")
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(w, "  client\t%s\t%s\tcurl, wrk, Go HTTP and UDP clients\n", nsbed.L2ClientIP, cmac)
	fmt.Fprintf(w, "  appl\t(eth0: no IP)\t%s\tdsrlb: DPDK net_af_packet on eth0; kernel tap dsr-eth0 %s/%d + VIP %s\n",
		l.ApplianceMAC, nsbed.L2ApplianceIP, nsbed.L2Subnet.Bits(), nsbed.L2VIP)
	for _, b := range l.Backends {
		fmt.Fprintf(w, "  %s\t%s\t%s\tbackendsrv; VIP %s/32 on lo, arp_ignore=1, arp_announce=2 (dsrctl backend setup)\n",
			b.Name, b.IP, b.MAC, nsbed.L2VIP)
	}
	w.Flush()
	fmt.Printf("appliance ready in %v: web tcp/%d and echo udp/%d on %s, l2 mode, every backend healthy and active\n",
		l.Ready.Round(10*time.Millisecond), nsbed.HTTPPort, nsbed.UDPPort, nsbed.L2VIP)
	offl, err := l.PeerOffloads("appl", "eth0")
	if err != nil {
		d.problem("offloads: %v", err)
	}
	fmt.Printf("offloads: the kernel's defaults on every veth; switch port facing the appliance: tx-checksumming %s, tso %s, gso %s\n",
		offl["tx-checksumming"], offl["tcp-segmentation-offload"], offl["generic-segmentation-offload"])
}

func (d *demo) traffic(ctx context.Context) error {
	l := d.l
	ev, err := l.StartEvidence()
	if err != nil {
		return err
	}
	before, err := l.Appliance.Stats(ctx)
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	fmt.Println("\ntraffic from the client to", nsbed.L2VIP)
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)

	d.curl, err = nsbed.CurlMany(ctx, l.Client, l.URL("/"), d.requests)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  1. curl, %d separate connections\t%d ok, %d errors\t%s\n", d.requests, d.curl.OK, d.curl.ErrorCount, d.curl.Spread())
	if d.curl.ErrorCount != 0 {
		d.problem("curl: %d errors: %s", d.curl.ErrorCount, strings.Join(d.curl.Errors, "; "))
	}
	if miss := l.Missing(d.curl.PerBackend); len(miss) > 0 {
		d.problem("curl: backends %v got no connection", miss)
	}

	d.keepAlive, err = nsbed.KeepAlive(ctx, l.Client, l.URL("/"), 50)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  2. one keep-alive connection, 50 requests\t%d ok on %d connection(s)\tall from %s\n",
		d.keepAlive.OK, d.keepAlive.Conns, strings.Join(d.keepAlive.Backends(), " and "))
	if d.keepAlive.ErrorCount != 0 || d.keepAlive.Conns != 1 || len(d.keepAlive.PerBackend) != 1 {
		d.problem("keep-alive: %d errors, %d connections, backends %s (want 0, 1, one)", d.keepAlive.ErrorCount, d.keepAlive.Conns, d.keepAlive.Spread())
	}

	d.udp, err = nsbed.UDPFlows(ctx, l.Client, l.UDPAddr(), 30, 5)
	if err != nil {
		return err
	}
	var from []string
	for src, n := range d.udp.Sources {
		from = append(from, fmt.Sprintf("%d from %s", n, src))
	}
	fmt.Fprintf(w, "  3. UDP echo, 30 flows x 5 datagrams\t%d/%d answered (%s)\tflows: %s\n", d.udp.Received, d.udp.Sent, strings.Join(from, ", "), d.udp.Spread())
	if d.udp.Received != d.udp.Sent || len(d.udp.Errors) > 0 || len(d.udp.Sources) != 1 || d.udp.Sources[l.UDPAddr()] == 0 || d.udp.Split != 0 {
		d.problem("udp: %d/%d answered, sources %v, %d flows split, errors %v", d.udp.Received, d.udp.Sent, d.udp.Sources, d.udp.Split, d.udp.Errors)
	}
	if miss := l.Missing(d.udp.PerBackend); len(miss) > 0 {
		d.problem("udp: backends %v got no flow", miss)
	}

	up, err := nsbed.Upload(ctx, l.Client, l.URL("/upload"), 1<<20)
	if err != nil {
		return err
	}
	verdict := "sha256 matches"
	if !up.OK() {
		verdict = "MISMATCH"
		d.problem("upload: sent %d bytes %s, %s got %d bytes %s", up.Sent, up.SHA256, up.Backend, up.Echoed, up.EchoedSHA256)
	}
	fmt.Fprintf(w, "  4. POST /upload, 1 MiB\t%s received %d bytes\t%s\n", up.Backend, up.Echoed, verdict)
	w.Flush()

	fmt.Printf("  5. wrk, %v, %d connections ...\n", d.duration, d.conns)
	d.wrk, err = nsbed.Wrk(ctx, l.Client, l.URL("/"), d.duration, d.conns)
	if err != nil {
		return err
	}
	fmt.Printf("     %d requests in %v (%.0f/s), %d errors: %s\n", d.wrk.Requests, d.wrk.Duration.Round(time.Millisecond),
		d.wrk.RPS(), d.wrk.ErrorCount(), nsbed.Spread(d.wrk.PerBackend))
	if d.wrk.ErrorCount() != 0 {
		d.problem("wrk: errors %v", d.wrk.Errors)
	}
	if d.wrk.Requests == 0 {
		d.problem("wrk made no request")
	}

	// The counters, fetched as an operator would: curl in the appliance's
	// namespace.
	out, err := l.Appliance.NS.Output(ctx, "curl", "-sS", "--fail", l.Appliance.API+"/api/v1/stats")
	if err != nil {
		return err
	}
	var after nsbed.Stats
	if err := json.Unmarshal([]byte(out), &after); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	d.statsLine = fmt.Sprintf("ip netns exec %s curl -s %s/api/v1/stats", l.Appliance.NS.Name, l.Appliance.API)
	d.delta = after.Sub(before)
	d.dsr, err = ev.Finish(ctx)
	return err
}

func (d *demo) report() {
	l := d.l
	names := l.BackendNames()
	ipOf := map[string]string{}
	for _, b := range l.Backends {
		ipOf[b.Name] = b.IP.String()
	}
	fmt.Println("\nanswers per backend")
	const label = "  %-44s"
	fmt.Printf(label, "")
	for _, n := range names {
		fmt.Printf("%9s", n)
	}
	fmt.Println()
	row := func(what string, get func(name string) uint64) {
		fmt.Printf(label, what)
		for _, n := range names {
			fmt.Printf("%9d", get(n))
		}
		fmt.Println()
	}
	row("curl requests", func(n string) uint64 { return uint64(d.curl.PerBackend[n]) })
	row("keep-alive requests", func(n string) uint64 { return uint64(d.keepAlive.PerBackend[n]) })
	row("UDP flows", func(n string) uint64 { return uint64(d.udp.PerBackend[n]) })
	row("wrk requests", func(n string) uint64 { return uint64(d.wrk.PerBackend[n]) })
	row("appliance: web new flows", func(n string) uint64 { return d.delta.Services["web"].Backends[ipOf[n]].NewFlows })
	row("appliance: web packets", func(n string) uint64 { return d.delta.Services["web"].Backends[ipOf[n]].Packets })
	row("appliance: echo packets", func(n string) uint64 { return d.delta.Services["echo"].Backends[ipOf[n]].Packets })
	row("client: SYN-ACKs/UDP answers from VIP by MAC", func(n string) uint64 { return uint64(d.dsr.ByBackend[n]) })

	t := d.delta.Totals
	fmt.Printf("\nappliance counters over the run (%s)\n", d.statsLine)
	fmt.Printf("  rx %d packets, %d of them TCP super-frames (the client's TSO) cut into %d segments:\n", t.RxPackets, t.GSOSegmented, t.GSOSegments)
	fmt.Printf("    %d = to services %d (web %d, echo %d) + to its kernel %d (ARP, health-check answers) + dropped %d\n",
		t.RxPackets-t.GSOSegmented+t.GSOSegments, d.delta.ServicePackets(), d.delta.Services["web"].Packets,
		d.delta.Services["echo"].Packets, t.ToKernel, t.Dropped)
	fmt.Printf("  %d TCP/UDP checksums completed (left partial by the peers' checksum offload)\n", t.L4ChecksumsCompleted)
	fmt.Printf("  tx %d packets (client packets handed to backends, plus %d from its kernel)\n", t.TxPackets, t.FromKernel)

	fmt.Println("\nevidence that answers did not pass through the appliance")
	r := d.dsr
	fmt.Printf("  client resolves VIP %s to %s (the appliance's MAC %s): requests go to the appliance\n", nsbed.L2VIP, r.VIPNeighbor, l.ApplianceMAC)
	fmt.Printf("  capture on the appliance's eth0, \"ip src host %s and (tcp or udp)\": %d packets\n", nsbed.L2VIP, r.ApplianceFromVIP)
	fmt.Printf("  capture at the client, SYN-ACKs and UDP answers from %s: %d, from backend MACs: %s; from the appliance's MAC: %d; unknown: %d\n",
		nsbed.L2VIP, r.ClientFromVIP, nsbed.Spread(r.ByBackend), r.FromAppliance, r.FromUnknown)
	before := len(d.problems)
	for _, p := range r.Problems() {
		d.problem("dsr: %s", p)
	}
	if miss := l.Missing(r.ByBackend); len(miss) > 0 {
		d.problem("dsr: no answer from %v reached the client", miss)
	}
	total := uint64(d.curl.Requests + d.keepAlive.Requests + d.udp.Sent + 1 + d.wrk.Requests)
	for _, p := range nsbed.CounterProblems(d.delta, total) {
		d.problem("counters: %s", p)
	}
	if len(d.problems) == before {
		fmt.Printf("  => every packet the appliance received was for a service or its own kernel, none dropped;\n" +
			"     every answer reached the client straight from a backend\n")
	}
}
