package nsbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"gopkg.in/yaml.v3"
)

// The testbed knows dsrlb only from the outside: its binary, its YAML
// config and its REST API, whose documents are those of package api/v1.

// BedIdleSleep is the dataplane.idle_sleep of every bed's appliances:
// several appliances, FRR, backends and clients share two CPUs, so an
// idle worker gives its CPU back (see testbed/README.md).
const BedIdleSleep = v1.Duration(50 * time.Microsecond)

// DefaultAPI is where dsrlb's REST API listens unless configured: loopback
// of the appliance's namespace.
const DefaultAPI = "127.0.0.1:8080"

// EALArgs returns the testbed's EAL arguments for an appliance in host:
// no hugepages, no PCI, 512 MB, a file prefix unique to the bed and host,
// and lcores (e.g. "0,1": main lcore 0, one worker on lcore 1).
func (b *Bed) EALArgs(host, lcores string) []string {
	return []string{"--no-huge", "--no-pci", "-m", "512", "--file-prefix", b.prefix + host, "-l", lcores}
}

// Appliance is a running `dsrlb run`.
type Appliance struct {
	NS     *NS
	Proc   *Proc
	Config v1.Config
	// ConfigPath is the YAML file dsrlb was started with.
	ConfigPath string
	// API is the base URL of the REST API, reachable from NS.
	API    string
	client *http.Client
}

// StatePath is the state file of dsrlb on host, in a directory of its own:
// at start dsrlb removes the temp files of any state write in that
// directory (a crash's leftovers), which would break the writes of another
// appliance sharing it.
func (b *Bed) StatePath(host string) string {
	return b.Path(filepath.Join(host+"-state", "state.json"))
}

// StartDsrlb writes cfg and starts `dsrlb run` in ns, then waits until its
// API answers /healthz (at most 60 s). If dsrlb exits first, the error
// carries the end of its log.
func StartDsrlb(ctx context.Context, ns *NS, bin string, cfg v1.Config) (*Appliance, error) {
	return StartDsrlbCommand(ctx, ns, cfg, func(config, state string) []string {
		return []string{bin, "run", "--config", config, "--state", state, "--log-level", "debug"}
	})
}

// StartDsrlbCommand is StartDsrlb with the command line that argv makes
// from the paths of the config file and of the state file (in a directory
// of its own): `dsrlb run` in a container, for one. The process it starts
// stands for dsrlb: its output is dsrlb's log, its exit dsrlb's.
func StartDsrlbCommand(ctx context.Context, ns *NS, cfg v1.Config, argv func(config, state string) []string) (*Appliance, error) {
	b := ns.bed
	listen := DefaultAPI
	if cfg.API.Listen != "" {
		listen = cfg.API.Listen
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	a := &Appliance{NS: ns, Config: cfg, ConfigPath: b.Path(ns.Short + "-dsrlb.yaml"),
		API: "http://" + listen, client: ns.HTTPClient(true)}
	if err := os.WriteFile(a.ConfigPath, y, 0o644); err != nil {
		return nil, err
	}
	state := b.StatePath(ns.Short)
	if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
		return nil, err
	}
	// A restart appends to the same log: look for the listener's line
	// past what is there now.
	logPath := b.Path(ns.Short + "-dsrlb.log")
	var logFrom int64
	if fi, err := os.Stat(logPath); err == nil {
		logFrom = fi.Size()
	}
	cmd := argv(a.ConfigPath, state)
	a.Proc, err = ns.Start(ns.Short+"-dsrlb", cmd...)
	if err != nil {
		return nil, err
	}
	b.Logf("%s: %s (log %s)", ns.Short, strings.Join(cmd, " "), a.Proc.Log)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for listening := false; ; {
		if a.Proc.Exited() {
			return nil, fmt.Errorf("dsrlb in %s exited (%v); log:\n%s", ns.Short, a.Proc.Err(), a.Proc.Tail(30))
		}
		// Wait for the API listener's log line before touching the
		// network: DPDK 22.11's net_af_packet opens its socket on every
		// interface and binds it to its own only later, so a connection
		// attempt to the API during start (a SYN and a reset on lo)
		// would land in the data plane's receive ring and count as a drop.
		if !listening {
			listening = logHas(logPath, logFrom, `"event":"api_listening"`)
		}
		var h map[string]any
		if listening && a.Get(ctx, "/healthz", &h) == nil {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dsrlb in %s: API %s not up: %w; log:\n%s", ns.Short, a.API, ctx.Err(), a.Proc.Tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logHas reports whether the file at path holds sub past offset from.
func logHas(path string, from int64, sub string) bool {
	b, err := os.ReadFile(path)
	return err == nil && int64(len(b)) > from && bytes.Contains(b[from:], []byte(sub))
}

// roundTrip sends req with the appliance's HTTP client and reads the
// whole answer body.
func (a *Appliance) roundTrip(req *http.Request) (*http.Response, []byte, error) {
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, body, nil
}

// Get fetches path from the API and decodes the JSON answer into v.
func (a *Appliance) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.API+path, nil)
	if err != nil {
		return err
	}
	resp, body, err := a.roundTrip(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// Stats returns GET /api/v1/stats.
func (a *Appliance) Stats(ctx context.Context) (*Stats, error) {
	var s Stats
	if err := a.Get(ctx, "/api/v1/stats", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Status returns GET /api/v1/status.
func (a *Appliance) Status(ctx context.Context) (*v1.Status, error) {
	var s v1.Status
	if err := a.Get(ctx, "/api/v1/status", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// WaitActive waits until every backend of every service forwards
// ("active": healthy and its MAC resolved).
func (a *Appliance) WaitActive(ctx context.Context) (*v1.Status, error) {
	var last string
	for {
		if a.Proc.Exited() {
			return nil, fmt.Errorf("dsrlb in %s exited (%v); log:\n%s", a.NS.Short, a.Proc.Err(), a.Proc.Tail(30))
		}
		st, err := a.Status(ctx)
		if err == nil {
			if pending := NotActive(st); len(pending) == 0 {
				return st, nil
			} else {
				last = strings.Join(pending, ", ")
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dsrlb in %s: backends not active: %s", a.NS.Short, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits for dsrlb to exit (at most 15 s); it
// returns an error unless dsrlb exited with status 0.
func (a *Appliance) Stop() error {
	if !a.Proc.Exited() {
		if err := a.Proc.Stop(15 * time.Second); err != nil {
			return err
		}
	}
	if err := a.Proc.Err(); err != nil {
		return fmt.Errorf("dsrlb in %s: %w; log:\n%s", a.NS.Short, err, a.Proc.Tail(20))
	}
	return nil
}

// LogEvents counts the lines of dsrlb's log with the given event key.
func (a *Appliance) LogEvents(event string) (int, error) {
	b, err := os.ReadFile(a.Proc.Log)
	if err != nil {
		return 0, err
	}
	return strings.Count(string(b), `"event":"`+event+`"`), nil
}

// NotActive lists "service/backend=state" for every backend of s that does
// not forward yet.
func NotActive(s *v1.Status) []string {
	var out []string
	if len(s.Services) == 0 {
		return []string{"no services"}
	}
	for _, svc := range s.Services {
		for _, b := range svc.Backends {
			if b.Forwarding != "active" {
				out = append(out, fmt.Sprintf("%s/%s=%s(health %s)", svc.Name, b.IP, b.Forwarding, b.Health))
			}
		}
	}
	return out
}

// Stats is the body of GET /api/v1/stats (v1.Stats) with services and
// backends indexed by name and IP, for the testbed's counter checks. It
// also decodes the body's shape before v1 (services as an object keyed by
// name, totals without the _packets suffix).
type Stats struct {
	Totals   Totals
	Drops    map[string]uint64
	Services map[string]ServiceStats
}

// Totals are the appliance-wide packet counters the testbed checks.
type Totals struct {
	RxPackets, TxPackets, ToKernel, FromKernel, Dropped uint64
	// FragNeededSent counts ICMP fragmentation-needed replies the
	// appliance generated, ICMPErrorsForwarded ICMP errors about VIP
	// flows sent on to their backend, IPOptions forwarded packets with
	// IPv4 options.
	FragNeededSent, ICMPErrorsForwarded, IPOptions uint64
	// PacketTooBigSent counts ICMPv6 Packet Too Big replies the appliance
	// generated.
	PacketTooBigSent uint64
	// L4ChecksumsCompleted counts partial TCP/UDP checksums the appliance
	// completed; GSOSegmented the TCP super-frames it cut into
	// GSOSegments segments.
	L4ChecksumsCompleted, GSOSegmented, GSOSegments uint64
	// ProbeReplies counts the backends' answers to the health probes
	// through the VIP the appliance handed to its probe port.
	ProbeReplies uint64
}

// ServiceStats are one service's counters.
type ServiceStats struct {
	Packets, NoBackend uint64
	// NewFlowLimited counts new flows dropped over the service's
	// limits.new_flows_per_second.
	NewFlowLimited uint64
	Backends       map[string]BackendStats // by backend IP
}

// BackendStats are one backend's counters.
type BackendStats struct {
	Packets, NewFlows uint64
	// Probes counts the health probes through the VIP sent to it.
	Probes uint64
}

// UnmarshalJSON decodes a v1.Stats body, or one of the shape before v1.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var probe struct {
		Totals   json.RawMessage `json:"totals"`
		Services json.RawMessage `json:"services"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return err
	}
	if len(probe.Totals) == 0 || string(probe.Totals) == "null" {
		return errors.New("stats: no totals")
	}
	if svc := bytes.TrimSpace(probe.Services); len(svc) > 0 && svc[0] == '{' {
		return s.unmarshalPreV1(b)
	}
	var st v1.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	t := st.Totals
	s.Totals = Totals{RxPackets: t.RxPackets, TxPackets: t.TxPackets, ToKernel: t.ToKernel, FromKernel: t.FromKernel,
		Dropped: t.Dropped, FragNeededSent: t.FragNeededSent, ICMPErrorsForwarded: t.ICMPErrorsForwarded, IPOptions: t.IPOptions,
		L4ChecksumsCompleted: t.L4ChecksumsCompleted, GSOSegmented: t.GSOSegmented, GSOSegments: t.GSOSegments,
		PacketTooBigSent: t.PacketTooBigSent, ProbeReplies: t.ProbeReplies}
	s.Drops = st.Drops
	s.Services = map[string]ServiceStats{}
	for _, sv := range st.Services {
		ss := ServiceStats{Packets: sv.Packets, NoBackend: sv.NoBackend, NewFlowLimited: sv.NewFlowLimited, Backends: map[string]BackendStats{}}
		for _, b := range sv.Backends {
			ss.Backends[b.IP] = BackendStats{Packets: b.Packets, NewFlows: b.NewFlows, Probes: b.Probes}
		}
		s.Services[sv.Name] = ss
	}
	return nil
}

// unmarshalPreV1 decodes the stats body of dsrlb before v1: services as
// an object keyed by name, backends keyed by IP, totals named to_kernel,
// from_kernel and dropped.
func (s *Stats) unmarshalPreV1(b []byte) error {
	var old struct {
		Totals   map[string]uint64 `json:"totals"`
		Drops    map[string]uint64 `json:"drops"`
		Services map[string]struct {
			Packets   uint64 `json:"packets"`
			NoBackend uint64 `json:"no_backend"`
			Backends  map[string]struct {
				Packets  uint64 `json:"packets"`
				NewFlows uint64 `json:"new_flows"`
			} `json:"backends"`
		} `json:"services"`
	}
	if err := json.Unmarshal(b, &old); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	t := old.Totals
	s.Totals = Totals{RxPackets: t["rx_packets"], TxPackets: t["tx_packets"], ToKernel: t["to_kernel"],
		FromKernel: t["from_kernel"], Dropped: t["dropped"]}
	s.Drops = old.Drops
	s.Services = map[string]ServiceStats{}
	for name, sv := range old.Services {
		ss := ServiceStats{Packets: sv.Packets, NoBackend: sv.NoBackend, Backends: map[string]BackendStats{}}
		for ip, b := range sv.Backends {
			ss.Backends[ip] = BackendStats{Packets: b.Packets, NewFlows: b.NewFlows}
		}
		s.Services[name] = ss
	}
	return nil
}

// Sub returns s minus before: the counters of what happened in between.
func (s *Stats) Sub(before *Stats) *Stats {
	d := &Stats{
		Totals: Totals{
			RxPackets:  s.Totals.RxPackets - before.Totals.RxPackets,
			TxPackets:  s.Totals.TxPackets - before.Totals.TxPackets,
			ToKernel:   s.Totals.ToKernel - before.Totals.ToKernel,
			FromKernel: s.Totals.FromKernel - before.Totals.FromKernel,
			Dropped:    s.Totals.Dropped - before.Totals.Dropped,

			FragNeededSent:      s.Totals.FragNeededSent - before.Totals.FragNeededSent,
			ICMPErrorsForwarded: s.Totals.ICMPErrorsForwarded - before.Totals.ICMPErrorsForwarded,
			IPOptions:           s.Totals.IPOptions - before.Totals.IPOptions,

			L4ChecksumsCompleted: s.Totals.L4ChecksumsCompleted - before.Totals.L4ChecksumsCompleted,
			GSOSegmented:         s.Totals.GSOSegmented - before.Totals.GSOSegmented,
			GSOSegments:          s.Totals.GSOSegments - before.Totals.GSOSegments,

			PacketTooBigSent: s.Totals.PacketTooBigSent - before.Totals.PacketTooBigSent,
			ProbeReplies:     s.Totals.ProbeReplies - before.Totals.ProbeReplies,
		},
		Drops:    map[string]uint64{},
		Services: map[string]ServiceStats{},
	}
	for r, v := range s.Drops {
		d.Drops[r] = v - before.Drops[r]
	}
	for name, sv := range s.Services {
		bs := before.Services[name]
		ds := ServiceStats{Packets: sv.Packets - bs.Packets, NoBackend: sv.NoBackend - bs.NoBackend,
			NewFlowLimited: sv.NewFlowLimited - bs.NewFlowLimited, Backends: map[string]BackendStats{}}
		for ip, b := range sv.Backends {
			bb := bs.Backends[ip]
			ds.Backends[ip] = BackendStats{Packets: b.Packets - bb.Packets, NewFlows: b.NewFlows - bb.NewFlows, Probes: b.Probes - bb.Probes}
		}
		d.Services[name] = ds
	}
	return d
}

// ServiceProbes is the sum of the health probes through the VIP sent to
// the backends of service name.
func (s *Stats) ServiceProbes(name string) uint64 {
	var n uint64
	for _, b := range s.Services[name].Backends {
		n += b.Probes
	}
	return n
}

// NewFlows is the sum of the new flows of service name's backends.
func (s *Stats) NewFlows(name string) uint64 {
	var n uint64
	for _, b := range s.Services[name].Backends {
		n += b.NewFlows
	}
	return n
}

// ServicePackets is the sum of every service's packets.
func (s *Stats) ServicePackets() uint64 {
	var n uint64
	for _, sv := range s.Services {
		n += sv.Packets
	}
	return n
}

// NonZeroDrops lists "reason=count" for every drop reason with a count.
func (s *Stats) NonZeroDrops() []string {
	var out []string
	for r, v := range s.Drops {
		if v != 0 {
			out = append(out, fmt.Sprintf("%s=%d", r, v))
		}
	}
	return out
}
