package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	v1 "github.com/dsrlb/dsrlb/api/v1"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/bgp/frrtest"
	"github.com/dsrlb/dsrlb/testbed/dockerlab"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// The BGP router of the container's bed: one more host on the L2 bed's
// segment, peering with the appliance's port address.
var (
	dockerRouterIP = netip.MustParseAddr("10.99.0.1")
	dockerVIP      = netip.PrefixFrom(nsbed.L2VIP, 32)
)

// The compose lab's VIP and backends (docker/compose.yaml).
var (
	composeVIP      = netip.MustParseAddr("10.89.0.100")
	composeBackends = []string{"be1", "be2", "be3"}
)

const (
	dockerRouterASN    = 65000
	dockerApplianceASN = 65010
	dockerDrain        = 2 * time.Second
)

// TestDocker builds the appliance's image (docker/Dockerfile) and the
// compose lab's image (its lab target) on Debian bases made here with
// debootstrap, in a private Docker daemon, then runs the appliance's
// container twice: as the appliance of the L2 DSR bed, with a BGP router,
// and in the compose lab (docker/compose.yaml) on a daemon of its own. Each
// time it checks what an operator relies on: requests spread over every
// backend, answers not through the container, and a clean `docker stop`.
// It installs nothing: `make test` runs `make docker-deps` first; without
// Docker it fails.
func TestDocker(t *testing.T) {
	needBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	d, err := dockerlab.Start(ctx, dockerlab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("docker: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	// Runs after the subtests' clean-ups, before the daemon stops.
	volumes, err := d.Run(ctx, "volume", "ls", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		left, err := d.Run(context.Background(), "ps", "--all", "--quiet", "--filter", fmt.Sprintf("name=dsrlb-test-%d-", os.Getpid()))
		if err != nil || strings.TrimSpace(left) != "" {
			t.Errorf("containers left behind: %q (%v)", left, err)
		}
		if after, err := d.Run(context.Background(), "volume", "ls", "--quiet"); err != nil || after != volumes {
			t.Errorf("volumes before the test %q, after %q (%v)", volumes, after, err)
		}
	})
	root, err := nsbed.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	image, lab := buildImages(ctx, t, d, root)

	t.Run("image holds dsrlb, dsrctl and their libraries", func(t *testing.T) {
		for _, bin := range []string{"dsrlb", "dsrctl"} {
			out, err := d.Run(ctx, "run", "--rm", "--network", "none", "--entrypoint", "ldd", image, "/usr/local/bin/"+bin)
			if err != nil {
				t.Fatalf("ldd %s in the image: %v", bin, err)
			}
			if strings.Contains(out, "not found") {
				t.Errorf("%s in the image misses libraries:\n%s", bin, out)
			}
		}
		out, err := d.Run(ctx, "run", "--rm", "--network", "none", "--entrypoint", "ls", image, "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0")
		if err != nil {
			t.Fatal(err)
		}
		for _, drv := range []string{"librte_mempool_ring.so.23.0", "librte_bus_vdev.so.23.0", "librte_net_af_packet.so.23.0", "librte_net_tap.so.23.0"} {
			if !strings.Contains(out, drv) {
				t.Errorf("DPDK driver %s missing from the image's plugin directory:\n%s", drv, out)
			}
		}
	})
	t.Run("appliance container in the L2 bed", func(t *testing.T) { testDockerBed(ctx, t, d, image) })
	t.Run("compose lab", func(t *testing.T) { testComposeLab(ctx, t, d, root, image, lab) })
}

// testDockerBed runs the appliance's image as the appliance of the L2 DSR
// bed, with a BGP router (FRR) on the bed's segment, and checks that on
// `docker stop` the VIP is withdrawn while dsrlb drains, then dsrlb ends
// with status 0.
//
// The container owns no interface of its own: a first container (the
// network namespace's owner, dockerlab.NetnsArgs) is made with --network
// none, its namespace becomes the bed's host "appl" (nsbed.Bed.AttachNS),
// where the bed creates the raw veth eth0 as for the bare appliance; the
// appliance then runs with --network container:<owner>.
func testDockerBed(ctx context.Context, t *testing.T, d *dockerlab.Daemon, image string) {
	netns := fmt.Sprintf("dsrlb-test-%d-netns", os.Getpid())
	appName := fmt.Sprintf("dsrlb-test-%d-appliance", os.Getpid())
	if _, err := d.Run(ctx, dockerlab.NetnsArgs(netns, image)...); err != nil {
		t.Fatal(err)
	}
	// Registered before the bed's clean-up, so it runs after it (last in,
	// first out): the bed deletes the namespace's name, then the owner goes.
	t.Cleanup(func() {
		if err := d.Remove(context.Background(), appName, netns); err != nil {
			t.Error(err)
		}
	})
	pid, err := d.Inspect(ctx, netns, "{{.State.Pid}}")
	if err != nil {
		t.Fatal(err)
	}
	var router *frrtest.Router
	l := startL2(t, nsbed.L2Options{
		Topology: func(topo *nsbed.Topology) {
			fmt.Sscan(pid, &topo.Host("appl").PID)
			topo.Hosts = append(topo.Hosts, nsbed.Host{Name: "rtr", Links: []nsbed.Link{{Segment: "lan",
				Addrs: []netip.Prefix{netip.PrefixFrom(dockerRouterIP, nsbed.L2Subnet.Bits())}}}})
		},
		Config: func(c *v1.Config) {
			c.BGP = &v1.BGP{ASN: dockerApplianceASN, RouterID: nsbed.L2ApplianceIP.String(), Drain: v1.Duration(dockerDrain),
				Peers: []v1.BGPPeer{{Address: dockerRouterIP.String(), ASN: dockerRouterASN, HoldTime: 9}}}
		},
		Start: func(ctx context.Context, l *nsbed.L2, cfg v1.Config) (*nsbed.Appliance, error) {
			conf := frrtest.BGPConfig{ASN: dockerRouterASN, RouterID: dockerRouterIP.String(),
				Neighbors: []frrtest.Peer{{Address: nsbed.L2ApplianceIP.String(), ASN: dockerApplianceASN, Passive: true}}}
			var err error
			if router, err = frrtest.Launch(l.Host("rtr").Name, conf.String(), frrtest.Options{}); err != nil {
				return nil, err
			}
			l.Bed.OnClose(func() {
				if err := router.Stop(); err != nil {
					t.Error(err)
				}
				if !bedOptions(t).Keep {
					os.RemoveAll(router.Dir)
				}
			})
			l.Bed.OnClose(func() { d.Remove(context.Background(), appName) })
			return nsbed.StartDsrlbCommand(ctx, l.Host("appl"), cfg, func(config, state string) []string {
				return d.Argv(dockerlab.Appliance{Name: appName, Image: image, Network: "container:" + netns,
					Config: config, StateDir: filepath.Dir(state), Args: []string{"--log-level", "debug"}}.RunArgs()...)
			})
		},
	})
	appl := l.Appliance

	t.Run("VIP announced to the router", func(t *testing.T) {
		took, err := frrtest.WaitEvery(30*time.Second, 50*time.Millisecond, func() (bool, error) {
			routes, err := router.Route(dockerVIP)
			return len(routes) > 0, err
		})
		if err != nil {
			t.Fatalf("the router never learnt %s: %v", dockerVIP, err)
		}
		t.Logf("TIMING router learnt %s %v after the appliance forwarded", dockerVIP, took.Round(time.Millisecond))
	})

	ev, err := l.StartEvidence()
	if err != nil {
		t.Fatal(err)
	}
	before := mustStats(ctx, t, appl)
	var requests uint64
	t.Run("requests spread over every backend", func(t *testing.T) {
		const n = 150
		got, err := nsbed.CurlMany(ctx, l.Client, l.URL("/"), n)
		if err != nil {
			t.Fatal(err)
		}
		requests += uint64(got.Requests)
		checkCurlMany(t, "curl through the container", got, n, l.Backends)
	})
	t.Run("udp flows spread and answered from the VIP", func(t *testing.T) {
		const flows, per = 30, 3
		got, err := nsbed.UDPFlows(ctx, l.Client, l.UDPAddr(), flows, per)
		if err != nil {
			t.Fatal(err)
		}
		checkUDPFlows(t, "udp through the container", got, l.UDPAddr(), flows, per, l.Backends)
	})
	t.Run("answers bypass the container", func(t *testing.T) {
		checkDSREvidence(ctx, t, "RESULT appliance container", ev, l.Backends)
		delta := mustStats(ctx, t, appl).Sub(before)
		t.Logf("appliance delta: %d checksums completed, %d super-frames cut into %d segments",
			delta.Totals.L4ChecksumsCompleted, delta.Totals.GSOSegmented, delta.Totals.GSOSegments)
		for _, p := range nsbed.CounterProblems(delta, requests) {
			t.Error(p)
		}
		// Since its start, not only over the traffic: the probe
		// namespace's kernel must send nothing of its own (a router
		// solicitation from a link-local address on the probe tap, for
		// one, repeated with backoff) although the container's
		// /proc/sys is read-only.
		if all := mustStats(ctx, t, appl); all.Totals.Dropped != 0 {
			t.Errorf("since its start the appliance dropped %d packets: %v", all.Totals.Dropped, all.NonZeroDrops())
		}
	})
	t.Run("peers keep the kernel's default offloads", func(t *testing.T) {
		checkDefaultOffloads(t, l.Net, "appl", l.Client, l.Backends)
	})

	t.Run("docker stop withdraws the VIP, then dsrlb exits 0", func(t *testing.T) {
		start := time.Now()
		stopped := make(chan error, 1)
		go func() {
			_, err := d.Run(ctx, "stop", appName)
			stopped <- err
		}()
		var runningAtWithdrawal bool
		took, err := frrtest.WaitEvery(30*time.Second, 20*time.Millisecond, func() (bool, error) {
			routes, err := router.Route(dockerVIP)
			if err == nil && len(routes) == 0 {
				runningAtWithdrawal = !appl.Proc.Exited()
				return true, nil
			}
			return false, err
		})
		if err != nil {
			t.Errorf("the router kept %s after docker stop: %v", dockerVIP, err)
		}
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		exited := time.Since(start)
		t.Logf("TIMING docker stop: VIP withdrawn at the router after %v, container exited after %v (drain %v)",
			took.Round(time.Millisecond), exited.Round(time.Millisecond), dockerDrain)
		if !runningAtWithdrawal {
			t.Errorf("dsrlb had exited before the router lost the VIP: it must withdraw, then drain, then stop")
		}
		if exited < dockerDrain {
			t.Errorf("the container exited %v after docker stop, before the %v drain", exited, dockerDrain)
		}
		if code, err := d.Inspect(ctx, appName, "{{.State.ExitCode}}"); err != nil || code != "0" {
			t.Errorf("container exit code %q (%v), want 0", code, err)
		}
		if err := appl.Proc.Err(); err != nil {
			t.Errorf("docker run: %v", err)
		}
		events, problems := logEvents(appl.Proc.Log)
		t.Logf("dsrlb events from withdraw_all on: %v", events[max(0, slices.Index(events, "withdraw_all")):])
		for _, p := range problems {
			t.Error(p)
		}
		i, j := slices.Index(events, "withdraw_all"), slices.Index(events, "stopping")
		if i < 0 || j < i {
			t.Errorf("dsrlb logged withdraw_all at %d and stopping at %d, want both, in that order", i, j)
		}
		if out, err := l.Host("appl").Run("ip", "-o", "addr", "show"); err != nil || strings.Contains(out, nsbed.L2VIP.String()) {
			t.Errorf("the VIP is still on an interface of the appliance's namespace (%v):\n%s", err, out)
		}
	})
}

// testComposeLab runs docker/compose.yaml as it stands on a daemon of its
// own, started in a network namespace of the test so that the lab's bridge
// network stays there, with the images copied over under the names the
// file uses. It attaches the namespaces of the lab's containers to a bed,
// so the client's requests, the captures and ethtool run there as in the
// other beds. The lab keeps Docker's default veth offloads: the appliance
// must complete partial checksums and cut the client's upload's TCP
// super-frames.
func testComposeLab(ctx context.Context, t *testing.T, d *dockerlab.Daemon, root, image, lab string) {
	file := filepath.Join(root, "docker", "compose.yaml")
	bed, err := nsbed.New(bedOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bed.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	host, err := bed.NewNS("dockerd", false)
	if err != nil {
		t.Fatal(err)
	}
	cd, err := dockerlab.Start(ctx, dockerlab.Options{Socket: bed.Path("docker.sock"), DataRoot: bed.Path("docker-data"),
		ExecRoot: bed.Path(host.Name), NetNS: "/var/run/netns/" + host.Name, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cd.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := d.CopyImages(ctx, cd, image, lab); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{image: "dsrlb:latest", lab: "dsrlb-lab:latest"} {
		if _, err := cd.Run(ctx, "tag", src, dst); err != nil {
			t.Fatal(err)
		}
	}
	project := fmt.Sprintf("dsrlbtest%d", os.Getpid())
	compose := func(args ...string) (string, error) { return cd.Compose(ctx, project, file, args...) }
	if out, err := compose("config", "--quiet"); err != nil {
		t.Fatalf("compose file: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if _, err := cd.Compose(context.Background(), project, file, "down", "--volumes", "--timeout", "5"); err != nil {
			t.Error(err)
		}
	})
	start := time.Now()
	if _, err := compose("up", "--detach", "--no-build"); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, svc := range append([]string{"appliance", "client"}, composeBackends...) {
		out, err := compose("ps", "--quiet", svc)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("compose ps %s: %q %v", svc, out, err)
		}
		ids[svc] = strings.TrimSpace(out)
	}
	attach := func(svc string) *nsbed.NS {
		var pid int
		out, err := cd.Inspect(ctx, ids[svc], "{{.State.Pid}}")
		if err == nil {
			_, err = fmt.Sscan(out, &pid)
		}
		if err != nil {
			t.Fatalf("pid of %s: %v", svc, err)
		}
		ns, err := bed.AttachNS(svc, pid, false)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	applNS, client := attach("appliance"), attach("client")
	macOf := func(svc string) string {
		mac, err := cd.Inspect(ctx, ids[svc], "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}")
		if err != nil {
			t.Fatal(err)
		}
		return mac
	}
	var bes nsbed.Backends
	for _, name := range composeBackends {
		bes = append(bes, &nsbed.Backend{Name: name, NS: attach(name), Iface: "eth0", MAC: macOf(name)})
	}
	applMAC := macOf("appliance")
	stats := func() *nsbed.Stats {
		t.Helper()
		out, err := compose("exec", "-T", "appliance", "dsrctl", "get", "stats", "-o", "json")
		var st nsbed.Stats
		if err == nil {
			err = json.Unmarshal([]byte(out), &st)
		}
		if err != nil {
			t.Fatalf("the lab's appliance's stats: %v\n%s", err, out)
		}
		return &st
	}

	var last string
	took, err := frrtest.WaitEvery(60*time.Second, 250*time.Millisecond, func() (bool, error) {
		out, err := compose("exec", "-T", "appliance", "dsrctl", "get", "status", "-o", "json")
		if err != nil {
			return false, err
		}
		var st v1.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return false, err
		}
		last = strings.Join(nsbed.NotActive(&st), ", ")
		return last == "", nil
	})
	if err != nil {
		logs, _ := compose("logs", "--tail", "30", "appliance")
		t.Fatalf("the lab's appliance never forwarded to every backend (%s): %v\n%s", last, err, logs)
	}
	t.Logf("TIMING compose up to every backend active: %v (status polled for %v)", time.Since(start).Round(time.Millisecond), took.Round(time.Millisecond))

	// The lab runs with Docker's default veth offloads: the frames of the
	// client and the backends reach the appliance with partial checksums,
	// the client's upload as TCP super-frames, which the appliance cuts.
	got, err := client.Offloads("eth0")
	checkOffloadsOn(t, "the lab's client eth0", got, err)
	checkBackendOffloadsOn(t, bes)
	port, err := bridgePort(host, applNS, "eth0")
	if err == nil {
		got, err = host.Offloads(port)
	}
	checkOffloadsOn(t, "the lab's bridge port "+port+" facing the appliance's eth0", got, err)

	ev, err := nsbed.StartDSREvidence(applNS, client, composeVIP, bes, applMAC)
	if err != nil {
		t.Fatal(err)
	}
	before := stats()
	const n = 60
	tally, err := nsbed.CurlMany(ctx, client, "http://"+composeVIP.String()+"/", n)
	if err != nil {
		t.Fatal(err)
	}
	checkCurlMany(t, "curl in the compose lab", tally, n, bes)
	requests := uint64(tally.Requests)
	up, err := nsbed.Upload(ctx, client, "http://"+composeVIP.String()+"/upload", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	requests++
	if !up.OK() {
		t.Errorf("1 MB upload in the compose lab: backend %s got %d bytes sha256 %s, sent %d bytes sha256 %s",
			up.Backend, up.Echoed, up.EchoedSHA256, up.Sent, up.SHA256)
	}
	checkDSREvidence(ctx, t, "RESULT compose lab", ev, bes)
	delta := stats().Sub(before)
	t.Logf("RESULT compose lab appliance delta: rx %d tx %d; %d checksums completed, %d super-frames cut into %d segments; drops %v",
		delta.Totals.RxPackets, delta.Totals.TxPackets, delta.Totals.L4ChecksumsCompleted, delta.Totals.GSOSegmented,
		delta.Totals.GSOSegments, delta.NonZeroDrops())
	if delta.Totals.L4ChecksumsCompleted == 0 || delta.Totals.GSOSegmented == 0 || delta.Totals.GSOSegments <= delta.Totals.GSOSegmented {
		t.Errorf("l4_checksums_completed +%d, gso_superframes_segmented +%d, gso_segments +%d: want all moved",
			delta.Totals.L4ChecksumsCompleted, delta.Totals.GSOSegmented, delta.Totals.GSOSegments)
	}
	for _, p := range nsbed.CounterProblems(delta, requests) {
		t.Error(p)
	}

	if _, err := compose("stop", "appliance"); err != nil {
		t.Fatal(err)
	}
	if code, err := cd.Inspect(ctx, ids["appliance"], "{{.State.ExitCode}}"); err != nil || code != "0" {
		t.Errorf("the lab's appliance exited with %q (%v), want 0", code, err)
	}
	// docker-compose logs prints the containers' standard error (dsrlb's
	// log) on its standard output.
	logs, err := compose("logs", "--no-color", "appliance")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs, `"event":"stopping"`) {
		t.Errorf("the lab's appliance did not log its stop:\n%s", logs)
	}
}

// bridgePort returns the name, in host (the namespace of the lab's
// daemon, which holds its bridge), of the veth peer of iface in ns: the
// bridge's port whose offloads shape the frames iface receives.
func bridgePort(host, ns *nsbed.NS, iface string) (string, error) {
	// `ip -o link show eth0` in ns: "9: eth0@if10: <...>".
	out, err := ns.Run("ip", "-o", "link", "show", iface)
	if err != nil {
		return "", err
	}
	var peer string
	if f := strings.Fields(out); len(f) > 1 {
		_, peer, _ = strings.Cut(strings.TrimSuffix(f[1], ":"), "@if")
	}
	if peer == "" {
		return "", fmt.Errorf("%s in %s names no peer: %q", iface, ns.Short, out)
	}
	out, err = host.Run("ip", "-o", "link", "show")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == peer+":" {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			return name, nil
		}
	}
	return "", fmt.Errorf("no interface %s in %s:\n%s", peer, host.Short, out)
}

// buildImages makes (or finds cached) the Debian base and the builder
// image, builds docker/Dockerfile's appliance and lab targets on them, logs
// the times and the appliance image's size, and removes both images when
// t ends.
func buildImages(ctx context.Context, t *testing.T, d *dockerlab.Daemon, root string) (image, lab string) {
	t.Helper()
	start := time.Now()
	base, err := d.DebianBase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	builder, err := d.GoBuilder(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	bases := time.Since(start)
	image = fmt.Sprintf("dsrlb-test/dsrlb:%d", os.Getpid())
	lab = fmt.Sprintf("dsrlb-test/dsrlb-lab:%d", os.Getpid())
	log := filepath.Join(os.TempDir(), fmt.Sprintf("dsrlb-test-build-%d.log", os.Getpid()))
	var built []string
	t.Cleanup(func() {
		for _, ref := range built {
			if err := d.RemoveImage(context.Background(), ref); err != nil {
				t.Error(err)
			}
		}
		if !t.Failed() {
			os.Remove(log)
		}
	})
	for _, b := range []struct{ ref, target string }{{image, ""}, {lab, "lab"}} {
		start := time.Now()
		if err := d.Build(ctx, dockerlab.BuildOptions{Context: root, Tag: b.ref, Target: b.target,
			Base: base, Builder: builder, Log: log}); err != nil {
			t.Fatal(err)
		}
		built = append(built, b.ref)
		t.Logf("TIMING image %s built in %v", b.ref, time.Since(start).Round(time.Second))
	}
	size, err := d.ImageSize(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING bases %s and %s ready in %v; RESULT appliance image %.0f MB", base, builder, bases.Round(time.Second), float64(size)/1e6)
	return image, lab
}

// logEvents reads dsrlb's JSON log at path and returns the "event" of
// every line in order, and a problem for each warning or error logged
// while dsrlb was running (a sysctl it could not set, a failed BGP call).
// Lines that are not JSON (DPDK's own) are skipped.
func logEvents(path string) (events, problems []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, []string{err.Error()}
	}
	for _, line := range strings.Split(string(b), "\n") {
		var e struct {
			Level, Event, Message string
			Error                 string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Event == "" {
			continue
		}
		events = append(events, e.Event)
		if e.Level == "warn" || e.Level == "error" {
			problems = append(problems, fmt.Sprintf("dsrlb logged %s %s: %s %s", e.Level, e.Event, e.Message, e.Error))
		}
	}
	return events, problems
}
