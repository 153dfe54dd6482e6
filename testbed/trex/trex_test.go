package trex

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline/pcap"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

// python is Debian's interpreter, which has python3-scapy and python3-yaml
// (make deps installs them).
const python = "/usr/bin/python3"

// testFlows is the number of client flows per service of every profile.
const testFlows = 300

var (
	// trexMAC is TRex port 0's MAC in the sample configs: the clients'.
	trexMAC = "02:00:00:00:00:01"
	// eal replaces the samples' EAL arguments: a test machine's.
	eal = []string{"--no-huge", "--no-pci", "-m", "256"}
	// samples are the sample configs (dsrlb-NAME.yaml), one-armed and
	// two-armed per mode.
	samples  = []string{"l2", "ipip", "gre", "l2-two-armed", "ipip-two-armed", "gre-two-armed"}
	overhead = map[string]int{"l2": 0, "ipip": 20, "gre": 24}
	// profiles are the profile runs of every config, with the frame sizes
	// (without FCS) and SYNs they must make: 3 services (2 of them TCP),
	// testFlows flows each, IMIX 7:4:1, 10 % SYNs.
	profiles = []profileCase{
		{"clients-64", "clients", 3 * testFlows, []string{"--size", "64"}, map[int]int{60: 900}, 0},
		{"clients-imix", "clients", 6 * testFlows, []string{"--size", "imix"}, map[int]int{60: 1050, 590: 600, 1514: 150}, 0},
		{"synack", "synack", 2 * testFlows, nil, map[int]int{60: 600}, 60},
		{"latency", "latency", 60, nil, map[int]int{124: 60}, 0},
	}
)

// A profileCase is one profile rendered with its tunables into packets.
type profileCase struct {
	name, profile string
	packets       int
	args          []string
	sizes         map[int]int // frames by length
	syns          int
}

// TestProfilesReplay renders every profile with scapy for each sample
// config, replays the packets through `dsrlb replay` with that config and
// checks, from the counters and the output pcap (by hand and with tshark),
// that every packet came out once, of the port towards the backends,
// unchanged inside, to a backend of its service, that a flow kept its
// backend, and that the flows spread over the backends by weight.
func TestProfilesReplay(t *testing.T) {
	needTools(t)
	bin := dsrlbBinary(t)
	dir := t.TempDir()
	loaded := map[string]*sample{}
	var jobs []job
	for _, name := range samples {
		loaded[name] = loadSample(t, name)
		for _, c := range profiles {
			jobs = append(jobs, renderJob(dir, name, loaded[name].path, c))
		}
	}
	results := runBatch(t, dir, jobs)
	for si, name := range samples {
		t.Run(name, func(t *testing.T) {
			s := loaded[name]
			var in [][]byte
			for ci, c := range profiles {
				var sum renderSummary
				decode(t, results[si*len(profiles)+ci], &sum)
				pkts, err := pcap.ReadFile(jobs[si*len(profiles)+ci].out)
				if err != nil {
					t.Fatal(err)
				}
				checkRender(t, c, pkts, sum, s)
				in = append(in, pkts...)
			}
			inPath := filepath.Join(dir, name+"-in.pcap")
			if err := pcap.WriteFile(inPath, in); err != nil {
				t.Fatal(err)
			}
			cfgPath, outPaths := replayConfig(t, s, dir)
			st := replay(t, bin, cfgPath, inPath, outPaths[0])
			var out [][]byte
			for i, p := range outPaths {
				pkts, err := pcap.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if i == s.egress {
					out = pkts
				} else if len(pkts) != 0 {
					t.Errorf("%d packets out of port %d, want all out of port %d", len(pkts), i, s.egress)
				}
			}
			checkCounters(t, st, in, s)
			checkForwarded(t, in, out, s)
			checkTshark(t, outPaths[s.egress], in, s)
		})
	}
}

// TestProfilesTRexStub loads each profile the way TRex's console does,
// against a stub of TRex's API (testdata/trexstub, not TRex), and checks
// the streams and field-engine programs it builds against what render.py
// made of the same tunables. The clients profile is also loaded with its
// tunables as keyword arguments, as TRex versions before argparse pass them.
func TestProfilesTRexStub(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	s := loadSample(t, "l2")
	var jobs []job
	var names []string
	for _, c := range profiles {
		for _, legacy := range []bool{false, true} {
			if legacy && c.profile != "clients" {
				continue
			}
			name := c.name
			if legacy {
				name += "-legacy-tunables"
			}
			names = append(names, name)
			jobs = append(jobs, renderJob(dir, "l2", s.path, c),
				job{Stub: []any{"dsrlb_" + c.profile + ".py", profileArgs(c, s.path), legacy}})
		}
	}
	results := runBatch(t, dir, jobs)
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			var sum renderSummary
			var got struct {
				Streams []stubStream `json:"streams"`
			}
			decode(t, results[2*i], &sum)
			decode(t, results[2*i+1], &got)
			if len(got.Streams) != len(sum.Streams) {
				t.Fatalf("TRex stub got %d streams, render.py %d", len(got.Streams), len(sum.Streams))
			}
			for j, st := range got.Streams {
				checkStubStream(t, st, sum.Streams[j])
			}
		})
	}
}

// TestRenderCLI runs render.py as an operator would and checks its pcap
// and summary line.
func TestRenderCLI(t *testing.T) {
	needTools(t)
	out := filepath.Join(t.TempDir(), "latency.pcap")
	stdout, err := pythonCmd("", "render.py", "latency", "--out", out, "--packets", "6", "--lat-pps", "10").Output()
	if err != nil {
		t.Fatalf("render.py: %v\n%s", err, stderrOf(err))
	}
	var sum renderSummary
	if err := json.Unmarshal(lastLine(stdout), &sum); err != nil {
		t.Fatalf("summary: %v: %s", err, stdout)
	}
	pkts, err := pcap.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != 6 || sum.Packets != 6 || len(sum.Streams) != 3 || sum.Streams[0].PPS != 10 {
		t.Errorf("got %d packets, summary %+v; want 6 packets of 3 latency streams at 10 pps", len(pkts), sum)
	}
}

// TestSamplesAgree checks what the profiles' default config relies on:
// every sample config has the services (VIP, protocol, port) and the first
// port of dsrlb-l2.yaml; and each has the mode of its name.
func TestSamplesAgree(t *testing.T) {
	l2 := loadSample(t, "l2")
	for _, name := range samples {
		s := loadSample(t, name)
		if got, want := s.cfg.Dataplane.Ports[0], l2.cfg.Dataplane.Ports[0]; got.IP != want.IP || got.MAC != want.MAC || got.Device != want.Device {
			t.Errorf("%s: first port %+v, l2 sample has %+v", name, got, want)
		}
		if len(s.services) != len(l2.services) {
			t.Fatalf("%s: %d services, l2 sample has %d", name, len(s.services), len(l2.services))
		}
		for i, sv := range s.services {
			w := l2.services[i]
			if sv.name != w.name || sv.vip != w.vip || sv.proto != w.proto || sv.port != w.port {
				t.Errorf("%s: service %d is %s %v/%d:%d, l2 sample has %s %v/%d:%d",
					name, i, sv.name, sv.vip, sv.proto, sv.port, w.name, w.vip, w.proto, w.port)
			}
		}
	}
}

func needTools(t *testing.T) {
	t.Helper()
	if out, err := pythonCmd("", "-c", "import scapy, yaml").CombinedOutput(); err != nil {
		t.Fatalf("%s with scapy and yaml is required (make deps installs python3-scapy, python3-yaml): %v\n%s", python, err, out)
	}
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark is required (make deps installs it)")
	}
}

// pythonCmd is python with args, PYTHONPATH path (if any), and no
// bytecode written into the source tree.
func pythonCmd(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(python, args...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if path != "" {
		cmd.Env = append(cmd.Env, "PYTHONPATH="+path)
	}
	return cmd
}

// dsrlbBinary is bin/dsrlb of DSRLB_TESTBED_BIN, or a fresh build.
func dsrlbBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("DSRLB_TESTBED_BIN"); dir != "" {
		b, err := nsbed.BinariesIn(dir)
		if err != nil {
			t.Fatal(err)
		}
		return b.Dsrlb
	}
	b, err := nsbed.BuildBinaries(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b.Dsrlb
}

// sample is a sample config (dsrlb-NAME.yaml) as the checks need it.
type sample struct {
	name, path, mode string
	cfg              *control.Config
	services         []service
	// egress is the port every backend is reached through; a frame to a
	// backend leaves with that port's MAC and, in L3 modes, address.
	egress  int
	portMAC []byte
	portIP  netip.Addr
	// gwMAC is the next hop of every envelope (L3 modes).
	gwMAC string
}

// service is one service of a sample.
type service struct {
	name  string
	vip   netip.Addr
	proto uint8
	port  uint16
	// weights are the backends' by IP; macs the backends' IPs by MAC.
	weights map[string]int
	macs    map[string]string
}

func loadSample(t *testing.T, name string) *sample {
	t.Helper()
	path, err := filepath.Abs("dsrlb-" + name + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := control.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	typed, err := cfg.Validate()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	s := &sample{name: name, path: path, mode: strings.TrimSuffix(name, "-two-armed"), cfg: cfg, egress: -1}
	nb := map[netip.Addr]string{}
	for _, n := range cfg.Neighbors {
		nb[netip.MustParseAddr(n.IP)] = strings.ToLower(n.MAC)
	}
	for _, sv := range cfg.Services {
		if sv.Mode != s.mode {
			t.Fatalf("%s: service %s has mode %s", path, sv.Name, sv.Mode)
		}
		x := service{name: sv.Name, vip: netip.MustParseAddr(sv.VIP), port: uint16(sv.Port),
			proto: map[string]uint8{"tcp": 6, "udp": 17}[sv.Protocol], weights: map[string]int{}, macs: map[string]string{}}
		for _, b := range sv.Backends {
			w := 1
			if b.Weight != nil {
				w = *b.Weight
			}
			x.weights[b.IP] = w
			hop, port := typed.NextHop(netip.MustParseAddr(b.IP))
			if s.egress >= 0 && port != s.egress || nb[hop] == "" {
				t.Fatalf("%s: backend %s is reached through port %d and %v (MAC %q); want one port for all, static MACs",
					path, b.IP, port, hop, nb[hop])
			}
			s.egress = port
			if s.mode == "l2" {
				x.macs[nb[hop]] = b.IP
			} else {
				s.gwMAC = nb[hop]
			}
		}
		s.services = append(s.services, x)
	}
	p := cfg.Dataplane.Ports[s.egress]
	s.portIP = netip.MustParsePrefix(p.IP).Addr()
	s.portMAC = mustMAC(p.MAC)
	return s
}

// replayConfig writes the sample with the EAL arguments of a test machine
// and returns its path and the output pcaps of its ports: replay replaces
// the first port's device by the capture; the others become pcap writers.
func replayConfig(t *testing.T, s *sample, dir string) (string, []string) {
	t.Helper()
	cfg := *s.cfg
	cfg.Dataplane.EALArgs = eal
	cfg.Dataplane.Ports = append([]control.Port(nil), cfg.Dataplane.Ports...)
	empty := filepath.Join(dir, "empty.pcap")
	if err := pcap.WriteFile(empty, nil); err != nil {
		t.Fatal(err)
	}
	var outs []string
	for i := range cfg.Dataplane.Ports {
		out := filepath.Join(dir, fmt.Sprintf("%s-out%d.pcap", s.name, i))
		outs = append(outs, out)
		if i > 0 {
			cfg.Dataplane.Ports[i].Device = fmt.Sprintf("net_pcap_out%d,rx_pcap=%s,tx_pcap=%s", i, empty, out)
		}
	}
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "replay-"+filepath.Base(s.path))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, outs
}

// renderSummary is render.py's JSON summary.
type renderSummary struct {
	Profile string         `json:"profile"`
	Packets int            `json:"packets"`
	Streams []renderStream `json:"streams"`
}

// renderStream is render.py's account of one stream.
type renderStream struct {
	Name     string  `json:"name"`
	Service  string  `json:"service"`
	PPS      float64 `json:"pps"`
	Packets  int     `json:"packets"`
	Flows    int     `json:"flows"`
	PgID     *int    `json:"pg_id"`
	Size     int     `json:"size"`
	SrcFirst *string `json:"src_net_first"`
}

// job is one job of testdata/batch.py: a render.render or stubrun.load
// call. out is the pcap a render job writes.
type job struct {
	Render []any `json:"render,omitempty"`
	Stub   []any `json:"stub,omitempty"`
	out    string
}

func profileArgs(c profileCase, cfgPath string) []string {
	args := []string{"--config", cfgPath, "--flows", strconv.Itoa(testFlows), "--src-mac", trexMAC}
	return append(args, c.args...)
}

// renderJob renders c with the config at cfgPath into dir/TAG-NAME.pcap.
func renderJob(dir, tag, cfgPath string, c profileCase) job {
	out := filepath.Join(dir, tag+"-"+c.name+".pcap")
	return job{Render: []any{c.profile, out, c.packets, profileArgs(c, cfgPath)}, out: out}
}

// runBatch runs jobs in one Python process (scapy is slow to import) and
// returns their results in order.
func runBatch(t *testing.T, dir string, jobs []job) []json.RawMessage {
	t.Helper()
	b, err := json.Marshal(jobs)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, fmt.Sprintf("jobs-%d.json", len(jobs)))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, err := pythonCmd("testdata/trexstub", "testdata/batch.py", path).Output()
	if err != nil {
		t.Fatalf("batch.py: %v\n%s", err, stderrOf(err))
	}
	var res []json.RawMessage
	if err := json.Unmarshal(lastLine(stdout), &res); err != nil || len(res) != len(jobs) {
		t.Fatalf("batch.py: %d results for %d jobs (%v): %s", len(res), len(jobs), err, stdout)
	}
	return res
}

func decode(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
}

// checkRender checks the rendered packets against the profile's promise:
// client frames (to the appliance's MAC, DF, TTL 64) to the sample's
// services, of the expected sizes, SYNs and number, as the summary counts
// them, and in clients-64 every flow of every service once.
func checkRender(t *testing.T, c profileCase, pkts [][]byte, sum renderSummary, s *sample) {
	t.Helper()
	n := 0
	for _, st := range sum.Streams {
		n += st.Packets
	}
	if len(pkts) != c.packets || sum.Packets != c.packets || n != c.packets {
		t.Fatalf("%s: %d packets in the pcap, summary %d, streams %d; want %d", c.name, len(pkts), sum.Packets, n, c.packets)
	}
	flows := map[string]map[[6]byte]bool{}
	sizes, syns := map[int]int{}, 0
	for i, p := range pkts {
		sizes[len(p)]++
		if h, _ := parse(p, 14); h.proto == 6 && p[14+20+13] == 0x02 {
			syns++
		}
		h, ok := parse(p, 14)
		if !ok || !bytes.Equal(p[0:6], mustMAC(s.cfg.Dataplane.Ports[0].MAC)) || h.ttl != 64 || !h.df {
			t.Fatalf("%s: packet %d is not a client frame to the appliance (DF, TTL 64): %x", c.name, i, p)
		}
		sv := s.serviceOf(h)
		if sv == nil {
			t.Fatalf("%s: packet %d to %v/%d:%d is for no service", c.name, i, h.dst, h.proto, h.dport)
		}
		if flows[sv.name] == nil {
			flows[sv.name] = map[[6]byte]bool{}
		}
		flows[sv.name][h.client()] = true
	}
	if fmt.Sprint(sizes) != fmt.Sprint(c.sizes) || syns != c.syns {
		t.Errorf("%s: frames by length %v and %d SYNs, want %v and %d", c.name, sizes, syns, c.sizes, c.syns)
	}
	if c.name == "clients-64" {
		for _, sv := range s.services {
			if got := len(flows[sv.name]); got != testFlows {
				t.Errorf("%s: service %s has %d flows, want %d", c.name, sv.name, got, testFlows)
			}
		}
	}
}

// replay runs dsrlb replay and returns its counters (the last stdout line).
func replay(t *testing.T, bin, cfg, in, out string) *nsbed.Stats {
	t.Helper()
	cmd := exec.Command(bin, "replay", "--config", cfg, "--in", in, "--out", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("dsrlb replay: %v\n%s", err, stderr.String())
	}
	var st nsbed.Stats
	if err := json.Unmarshal(lastLine(stdout), &st); err != nil {
		t.Fatalf("replay counters: %v: %s", err, stdout)
	}
	return &st
}

// checkCounters: every packet received and sent, none dropped or for the
// kernel, and each service's and backend's counts those of the input.
func checkCounters(t *testing.T, st *nsbed.Stats, in [][]byte, s *sample) {
	t.Helper()
	n := uint64(len(in))
	if st.Totals.RxPackets != n || st.Totals.TxPackets != n || st.Totals.Dropped != 0 || st.Totals.ToKernel != 0 {
		t.Errorf("counters rx %d tx %d dropped %d kernel %d (drops %v), want rx = tx = %d and nothing else",
			st.Totals.RxPackets, st.Totals.TxPackets, st.Totals.Dropped, st.Totals.ToKernel, nonZero(st.Drops), n)
	}
	want := map[string]uint64{}
	for _, p := range in {
		h, _ := parse(p, 14)
		want[s.serviceOf(h).name]++
	}
	for _, sv := range s.services {
		got := st.Services[sv.name]
		var sum uint64
		for ip, b := range got.Backends {
			if _, ok := sv.weights[ip]; !ok && b.Packets > 0 {
				t.Errorf("service %s: %d packets counted for %s, not its backend", sv.name, b.Packets, ip)
			}
			sum += b.Packets
		}
		if got.Packets != want[sv.name] || sum != want[sv.name] {
			t.Errorf("service %s: %d packets, backends %d, want %d", sv.name, got.Packets, sum, want[sv.name])
		}
	}
}

// checkForwarded compares each output packet with its input (replay keeps
// the order): the inner IP packet byte for byte (TRex's latency IP ID and
// signature included), the right envelope, a backend of the packet's
// service, one backend per flow, and the flows spread by weight.
func checkForwarded(t *testing.T, in, out [][]byte, s *sample) {
	t.Helper()
	mode, overhead := s.mode, overhead[s.mode]
	if len(out) != len(in) {
		t.Fatalf("%d packets out, want every one of the %d in exactly once", len(out), len(in))
	}
	flowBackend := map[string]string{}
	perBackend := map[string]map[string]map[[6]byte]bool{} // service, backend, flows
	bad := 0
	for i, o := range out {
		h, _ := parse(in[i], 14)
		sv := s.serviceOf(h)
		inner := in[i][14 : 14+h.totalLen]
		problem := ""
		be := ""
		switch {
		case len(o) != 14+overhead+len(inner) && !(mode == "l2" && len(o) == len(in[i])):
			problem = fmt.Sprintf("frame of %d bytes, want %d", len(o), 14+overhead+len(inner))
		case !bytes.Equal(o[14+overhead:14+overhead+len(inner)], inner):
			problem = "inner IP packet changed"
		case !bytes.Equal(o[6:12], s.portMAC):
			problem = fmt.Sprintf("source MAC %x, want the port's", o[6:12])
		case mode == "l2":
			be = sv.macs[macString(o[0:6])]
			if be == "" {
				problem = fmt.Sprintf("destination MAC %s is no backend's of %s", macString(o[0:6]), sv.name)
			}
		default:
			outer, ok := parse(o, 14)
			wantProto := map[string]uint8{"ipip": 4, "gre": 47}[mode]
			be = outer.dst.String()
			switch {
			case macString(o[0:6]) != s.gwMAC:
				problem = fmt.Sprintf("destination MAC %s, want the gateway's %s", macString(o[0:6]), s.gwMAC)
			case !ok || outer.proto != wantProto || outer.src != s.portIP || outer.ttl != 64 || outer.totalLen != overhead+len(inner):
				problem = fmt.Sprintf("outer header %+v, want protocol %d from %v, TTL 64", outer, wantProto, s.portIP)
			case mode == "gre" && !bytes.Equal(o[34:38], []byte{0, 0, 0x08, 0x00}):
				problem = fmt.Sprintf("GRE header %x, want 0000 0800", o[34:38])
			case sv.weights[be] == 0:
				problem = fmt.Sprintf("outer destination %s is no backend of %s", be, sv.name)
			}
		}
		if h.id == 0xffff && !bytes.Equal(o[len(o)-16:], in[i][14+h.totalLen-16:14+h.totalLen]) {
			problem = "TRex latency signature changed"
		}
		key := fmt.Sprintf("%s %x", sv.name, h.client())
		if prev, ok := flowBackend[key]; ok && prev != be && problem == "" {
			problem = fmt.Sprintf("flow moved from backend %s to %s", prev, be)
		}
		flowBackend[key] = be
		if problem != "" {
			if bad++; bad <= 10 {
				t.Errorf("packet %d (%v:%d to %s): %s", i, h.src, h.sport, sv.name, problem)
			}
			continue
		}
		if perBackend[sv.name] == nil {
			perBackend[sv.name] = map[string]map[[6]byte]bool{}
		}
		if perBackend[sv.name][be] == nil {
			perBackend[sv.name][be] = map[[6]byte]bool{}
		}
		perBackend[sv.name][be][h.client()] = true
	}
	if bad > 0 {
		t.Fatalf("%d of %d packets not forwarded as they should be", bad, len(out))
	}
	for _, sv := range s.services {
		total, wsum := 0, 0
		for ip, w := range sv.weights {
			total += len(perBackend[sv.name][ip])
			wsum += w
		}
		var spread []string
		for _, ip := range sortedKeys(sv.weights) {
			got := len(perBackend[sv.name][ip])
			share := float64(total) * float64(sv.weights[ip]) / float64(wsum)
			spread = append(spread, fmt.Sprintf("%s %d (weight %d)", ip, got, sv.weights[ip]))
			if float64(got) < share/2 || float64(got) > share*3/2 {
				t.Errorf("service %s: backend %s has %d of %d flows, want %.0f +-50%% by weight",
					sv.name, ip, got, total, share)
			}
		}
		t.Logf("RESULT %s %s: %d flows: %s", s.name, sv.name, total, strings.Join(spread, ", "))
	}
}

// checkTshark dissects the output with tshark, an independent dissector:
// per frame the addresses, protocols and checksums of the envelope (or the
// rewritten frame in l2) and of the client packet inside.
func checkTshark(t *testing.T, path string, in [][]byte, s *sample) {
	t.Helper()
	mode := s.mode
	fields := []string{"eth.dst", "ip.src", "ip.dst", "ip.proto", "ip.checksum.status", "gre.proto"}
	args := []string{"-r", path, "-o", "ip.check_checksum:TRUE", "-T", "fields",
		"-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	outb, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderrOf(err))
	}
	rows := strings.Split(strings.TrimSpace(string(outb)), "\n")
	if len(rows) != len(in) {
		t.Fatalf("tshark saw %d frames, want %d", len(rows), len(in))
	}
	bad := 0
	for i, row := range rows {
		f := strings.Split(row, "|")
		src, dst := strings.Split(f[1], ","), strings.Split(f[2], ",")
		proto, csum := strings.Split(f[3], ","), strings.Split(f[4], ",")
		h, _ := parse(in[i], 14)
		sv := s.serviceOf(h)
		var problem string
		if mode == "l2" {
			if len(dst) != 1 || dst[0] != sv.vip.String() || src[0] != h.src.String() || sv.macs[f[0]] == "" || csum[0] != "1" {
				problem = "want one IPv4 header, client to VIP, valid checksum, to a backend's MAC"
			}
		} else {
			wantProto := map[string]string{"ipip": "4", "gre": "47"}[mode]
			switch {
			case len(dst) != 2 || len(csum) != 2:
				problem = "want two IPv4 headers"
			case src[0] != s.portIP.String() || sv.weights[dst[0]] == 0 || proto[0] != wantProto || csum[0] != "1":
				problem = fmt.Sprintf("outer: want %v to a backend of %s, protocol %s, valid checksum", s.portIP, sv.name, wantProto)
			case src[1] != h.src.String() || dst[1] != sv.vip.String() || csum[1] != "1":
				problem = "inner: want the client to the VIP, valid checksum"
			case mode == "gre" && f[5] != "0x0800":
				problem = "want GRE protocol 0x0800"
			}
		}
		if problem != "" {
			if bad++; bad <= 10 {
				t.Errorf("tshark frame %d: %s: %q", i+1, problem, row)
			}
		}
	}
}

// stubStream is what testdata/stubrun.py reports of one STLStream.
type stubStream struct {
	Name         string           `json:"name"`
	PPS          float64          `json:"pps"`
	PgID         *int             `json:"pg_id"`
	Latency      bool             `json:"latency"`
	Packet       string           `json:"packet"`
	Instructions []map[string]any `json:"instructions"`
}

// checkStubStream compares a stream TRex would get with render.py's
// account of the same stream: name, rate, size, latency group, and a field
// engine that writes the tuple variable's address into IP.src (offset 26,
// 4 bytes) and its port into the source port (34, 2 bytes) over the same
// number of flows, then fixes the checksums.
func checkStubStream(t *testing.T, st stubStream, want renderStream) {
	t.Helper()
	size := len(st.Packet)/2 + 4
	if st.Name != want.Name || st.PPS != want.PPS || size != want.Size {
		t.Errorf("stream %s: %.1f pps, %d bytes; render.py: %s %.1f pps, %d bytes", st.Name, st.PPS, size, want.Name, want.PPS, want.Size)
	}
	if (st.PgID == nil) != (want.PgID == nil) || st.PgID != nil && (*st.PgID != *want.PgID || !st.Latency) {
		t.Errorf("stream %s: flow stats %v (latency %v), render.py group %v", st.Name, st.PgID, st.Latency, want.PgID)
	}
	if want.PgID != nil {
		if len(st.Instructions) != 0 {
			t.Errorf("latency stream %s has a field engine: %v", st.Name, st.Instructions)
		}
		return
	}
	var got []string
	for _, in := range st.Instructions {
		switch in["type"] {
		case "tuple_var":
			ips := int(in["ip_max"].(float64) - in["ip_min"].(float64) + 1)
			first := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, uint32(in["ip_min"].(float64))))).String()
			got = append(got, fmt.Sprintf("tuple %s+%d ips ports %v-%v limit %v", first, ips, in["port_min"], in["port_max"], in["limit_flows"]))
		case "write":
			got = append(got, fmt.Sprintf("write %s at %v size %v", in["fv_name"], in["offset"], in["size"]))
		case "fix_chksum_hw":
			got = append(got, fmt.Sprintf("fix hw l3 %v l4 %v", in["l3_offset"], in["l4_offset"]))
		default:
			got = append(got, fmt.Sprint(in["type"]))
		}
	}
	ports := 1024 + (want.Flows-1)/testFlows
	wantIns := []string{
		fmt.Sprintf("tuple %s+%d ips ports 1024-%d limit %d", *want.SrcFirst, testFlows, ports, want.Flows),
		"write client.ip at 26 size 4", "write client.port at 34 size 2", "fix hw l3 14 l4 34",
	}
	if strings.Join(got, "; ") != strings.Join(wantIns, "; ") {
		t.Errorf("stream %s field engine:\n got %s\nwant %s", st.Name, strings.Join(got, "; "), strings.Join(wantIns, "; "))
	}
}

// header is what the checks read of an IPv4 packet and its ports.
type header struct {
	src, dst     netip.Addr
	proto, ttl   uint8
	df           bool
	id           uint16
	totalLen     int
	sport, dport uint16
}

// client is the flow's client side: source address and port.
func (h header) client() [6]byte {
	var k [6]byte
	a := h.src.As4()
	copy(k[:], a[:])
	binary.BigEndian.PutUint16(k[4:], h.sport)
	return k
}

// parse reads the IPv4 header at off of frame, and the ports of TCP/UDP.
func parse(frame []byte, off int) (header, bool) {
	if len(frame) < off+20 || frame[12] != 0x08 || frame[13] != 0 || frame[off]>>4 != 4 {
		return header{}, false
	}
	ip := frame[off:]
	ihl := int(ip[0]&0x0f) * 4
	h := header{
		src: netip.AddrFrom4([4]byte(ip[12:16])), dst: netip.AddrFrom4([4]byte(ip[16:20])),
		proto: ip[9], ttl: ip[8], df: ip[6]&0x40 != 0, id: binary.BigEndian.Uint16(ip[4:]),
		totalLen: int(binary.BigEndian.Uint16(ip[2:])),
	}
	if (h.proto == 6 || h.proto == 17) && len(ip) >= ihl+4 {
		h.sport, h.dport = binary.BigEndian.Uint16(ip[ihl:]), binary.BigEndian.Uint16(ip[ihl+2:])
	}
	return h, h.totalLen <= len(ip)
}

// serviceOf returns the sample's service of a client packet, or nil.
func (s *sample) serviceOf(h header) *service {
	for i := range s.services {
		sv := &s.services[i]
		if sv.vip == h.dst && sv.proto == h.proto && (sv.port == 0 || sv.port == h.dport) {
			return sv
		}
	}
	return nil
}

func mustMAC(s string) []byte {
	m := make([]byte, 6)
	for i, x := range strings.Split(s, ":") {
		b, err := strconv.ParseUint(x, 16, 8)
		if err != nil {
			panic(err)
		}
		m[i] = byte(b)
	}
	return m
}

func macString(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}

func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
