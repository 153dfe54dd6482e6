package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/bgp/frrtest"
	"github.com/dsrlb/dsrlb/testbed/dockerlab"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// The BGP router of the container lab: one more host on the L2 bed's
// segment, peering with the appliance's port address.
var (
	dockerRouterIP = netip.MustParseAddr("10.99.0.1")
	dockerVIP      = netip.PrefixFrom(nsbed.L2VIP, 32)
)

const (
	dockerRouterASN    = 65000
	dockerApplianceASN = 65010
	dockerDrain        = 2 * time.Second
)

// TestDockerAppliance builds the appliance's image (docker/Dockerfile) on
// Debian bases made here with debootstrap, runs it as the appliance of the
// L2 DSR bed, and checks what an operator relies on: requests spread over
// every backend, answers not through the container, the VIP announced to a
// BGP router (FRR), and on `docker stop` the VIP withdrawn while dsrlb
// drains, then dsrlb ending with status 0. It installs nothing: `make
// test` runs `make docker-deps` first; without Docker it fails.
//
// The container owns no interface of its own: a first container (the
// network namespace's owner, dockerlab.NetnsArgs) is made with --network
// none, its namespace becomes the bed's host "appl" (nsbed.Bed.AttachNS),
// where the bed creates the raw veth eth0 as for the bare appliance; the
// appliance then runs with --network container:<owner>.
func TestDockerAppliance(t *testing.T) {
	needBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	d, err := dockerlab.Start(ctx, t.Logf)
	if err != nil {
		t.Fatalf("docker: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	root, err := nsbed.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	image := buildApplianceImage(ctx, t, d, root)

	t.Run("compose lab file is valid", func(t *testing.T) {
		if _, err := exec.LookPath("docker-compose"); err != nil {
			t.Fatalf("docker-compose missing: install it (make docker-deps): %v", err)
		}
		out, err := exec.CommandContext(ctx, "docker-compose", "--file", filepath.Join(root, "docker", "compose.yaml"),
			"config", "--quiet").CombinedOutput()
		if err != nil {
			t.Fatalf("docker-compose config: %v\n%s", err, out)
		}
	})

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
		Config: func(c *nsbed.DsrlbConfig) {
			c.BGP = map[string]any{
				"asn": dockerApplianceASN, "router_id": nsbed.L2ApplianceIP.String(), "drain": dockerDrain.String(),
				"peers": []map[string]any{{"address": dockerRouterIP.String(), "asn": dockerRouterASN, "hold_time": 9}},
			}
		},
		Start: func(ctx context.Context, l *nsbed.L2, cfg nsbed.DsrlbConfig) (*nsbed.Appliance, error) {
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
		rep, err := ev.Finish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("RESULT container's NIC: %d TCP/UDP packets from the VIP; client: %d SYN-ACK/UDP answers from the VIP by backend MAC %v",
			rep.ApplianceFromVIP, rep.ClientFromVIP, rep.ByBackend)
		for _, p := range rep.Problems(l) {
			t.Error(p)
		}
		if miss := l.Missing(rep.ByBackend); len(miss) != 0 {
			t.Errorf("no answer from backends %v reached the client", miss)
		}
		for _, p := range nsbed.CounterProblems(mustStats(ctx, t, appl).Sub(before), requests) {
			t.Error(p)
		}
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

// buildApplianceImage makes (or finds cached) the Debian base and the
// builder image, builds docker/Dockerfile on them, logs the times and the
// image's size, and removes the image when t ends.
func buildApplianceImage(ctx context.Context, t *testing.T, d *dockerlab.Daemon, root string) string {
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
	image := fmt.Sprintf("dsrlb-test/dsrlb:%d", os.Getpid())
	log := filepath.Join(os.TempDir(), fmt.Sprintf("dsrlb-test-build-%d.log", os.Getpid()))
	start = time.Now()
	if err := d.Build(ctx, dockerlab.BuildOptions{Context: root,
		Tag: image, Base: base, Builder: builder, Log: log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.RemoveImage(context.Background(), image); err != nil {
			t.Error(err)
		}
		if !t.Failed() {
			os.Remove(log)
		}
	})
	size, err := d.ImageSize(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING image %s: bases %s and %s ready in %v, build %v; RESULT size %.0f MB",
		image, base, builder, bases.Round(time.Second), time.Since(start).Round(time.Second), float64(size)/1e6)
	return image
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
