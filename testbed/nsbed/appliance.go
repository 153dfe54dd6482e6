package nsbed

import (
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

	"gopkg.in/yaml.v3"
)

// The testbed knows dsrlb only from the outside: its binary, its YAML
// config and its REST API. These types mirror the parts it uses.

// DsrlbConfig is a dsrlb config file (see control.Config).
type DsrlbConfig struct {
	Dataplane DsrlbDataplane `yaml:"dataplane"`
	Services  []DsrlbService `yaml:"services,omitempty"`
	API       *DsrlbAPI      `yaml:"api,omitempty"`
	// Flows, Maglev and BGP are passed through as written.
	Flows  map[string]any `yaml:"flows,omitempty"`
	Maglev map[string]any `yaml:"maglev,omitempty"`
	BGP    map[string]any `yaml:"bgp,omitempty"`
}

// DsrlbDataplane is the config's dataplane section.
type DsrlbDataplane struct {
	EALArgs   []string    `yaml:"eal_args"`
	Workers   int         `yaml:"workers,omitempty"`
	IdleSleep string      `yaml:"idle_sleep,omitempty"`
	Ports     []DsrlbPort `yaml:"ports"`
}

// BedIdleSleep is the dataplane.idle_sleep of every bed's appliances:
// several appliances, FRR, backends and clients share two CPUs, so an
// idle worker gives its CPU back (see testbed/README.md).
const BedIdleSleep = "50us"

// DsrlbPort is one dataplane port.
type DsrlbPort struct {
	Name    string `yaml:"name"`
	Device  string `yaml:"device"`
	IP      string `yaml:"ip"`
	Gateway string `yaml:"gateway,omitempty"`
	MTU     int    `yaml:"mtu,omitempty"`
}

// DsrlbService is one virtual service.
type DsrlbService struct {
	Name       string         `yaml:"name"`
	VIP        string         `yaml:"vip"`
	Protocol   string         `yaml:"protocol"`
	Port       int            `yaml:"port"`
	Mode       string         `yaml:"mode"`
	Backends   []DsrlbBackend `yaml:"backends"`
	MinHealthy int            `yaml:"min_healthy,omitempty"`
	Health     *DsrlbHealth   `yaml:"health,omitempty"`
}

// DsrlbBackend is one backend of a service.
type DsrlbBackend struct {
	IP     string `yaml:"ip"`
	Weight *int   `yaml:"weight,omitempty"`
	State  string `yaml:"state,omitempty"`
}

// DsrlbHealth is a service's health monitor.
type DsrlbHealth struct {
	Type     string `yaml:"type"`
	Port     int    `yaml:"port,omitempty"`
	Path     string `yaml:"path,omitempty"`
	Expect   []int  `yaml:"expect,omitempty"`
	Interval string `yaml:"interval,omitempty"`
	Timeout  string `yaml:"timeout,omitempty"`
	Rise     int    `yaml:"rise,omitempty"`
	Fall     int    `yaml:"fall,omitempty"`
}

// DsrlbAPI is the config's api section.
type DsrlbAPI struct {
	Listen string `yaml:"listen,omitempty"`
	Token  string `yaml:"token,omitempty"`
}

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
	Config DsrlbConfig
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
func StartDsrlb(ctx context.Context, ns *NS, bin string, cfg DsrlbConfig) (*Appliance, error) {
	return StartDsrlbCommand(ctx, ns, cfg, func(config, state string) []string {
		return []string{bin, "run", "--config", config, "--state", state, "--log-level", "debug"}
	})
}

// StartDsrlbCommand is StartDsrlb with the command line that argv makes
// from the paths of the config file and of the state file (in a directory
// of its own): `dsrlb run` in a container, for one. The process it starts
// stands for dsrlb: its output is dsrlb's log, its exit dsrlb's.
func StartDsrlbCommand(ctx context.Context, ns *NS, cfg DsrlbConfig, argv func(config, state string) []string) (*Appliance, error) {
	b := ns.bed
	listen := DefaultAPI
	if cfg.API != nil && cfg.API.Listen != "" {
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
	cmd := argv(a.ConfigPath, state)
	a.Proc, err = ns.Start(ns.Short+"-dsrlb", cmd...)
	if err != nil {
		return nil, err
	}
	b.Logf("%s: %s (log %s)", ns.Short, strings.Join(cmd, " "), a.Proc.Log)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if a.Proc.Exited() {
			return nil, fmt.Errorf("dsrlb in %s exited (%v); log:\n%s", ns.Short, a.Proc.Err(), a.Proc.Tail(30))
		}
		var h map[string]any
		if err := a.Get(ctx, "/healthz", &h); err == nil {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dsrlb in %s: API %s not up: %w; log:\n%s", ns.Short, a.API, ctx.Err(), a.Proc.Tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
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
func (a *Appliance) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := a.Get(ctx, "/api/v1/status", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// WaitActive waits until every backend of every service forwards
// ("active": healthy and its MAC resolved).
func (a *Appliance) WaitActive(ctx context.Context) (*Status, error) {
	var last string
	for {
		if a.Proc.Exited() {
			return nil, fmt.Errorf("dsrlb in %s exited (%v); log:\n%s", a.NS.Short, a.Proc.Err(), a.Proc.Tail(30))
		}
		st, err := a.Status(ctx)
		if err == nil {
			if pending := st.NotActive(); len(pending) == 0 {
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

// Status is the body of GET /api/v1/status (the fields the testbed uses).
type Status struct {
	Generation uint64          `json:"generation"`
	Services   []ServiceStatus `json:"services"`
}

// ServiceStatus is one service's live state.
type ServiceStatus struct {
	Name     string          `json:"name"`
	VIP      string          `json:"vip"`
	Protocol string          `json:"protocol"`
	Port     int             `json:"port"`
	Mode     string          `json:"mode"`
	Usable   int             `json:"usable_backends"`
	Backends []BackendStatus `json:"backends"`
	// Announced tells whether BGP announces the VIP; Reason says why (not).
	Announced bool   `json:"announced"`
	Reason    string `json:"announce_reason"`
}

// BackendStatus is one backend's live state.
type BackendStatus struct {
	IP         string `json:"ip"`
	Forwarding string `json:"forwarding"`
	Health     string `json:"health"`
	NextHopMAC string `json:"next_hop_mac"`
	NewFlows   uint64 `json:"new_flows"`
}

// NotActive lists "service/backend=state" for every backend that does not
// forward yet.
func (s *Status) NotActive() []string {
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

// Stats is the body of GET /api/v1/stats. It decodes both shapes dsrlb has
// used for it (api/types.Stats: services as a list, *_packets totals;
// control.Stats: services as an object keyed by name).
type Stats struct {
	Totals   Totals
	Drops    map[string]uint64
	Services map[string]ServiceStats
}

// Totals are appliance-wide packet counters.
type Totals struct {
	RxPackets, TxPackets, ToKernel, FromKernel, Dropped uint64
	// FragNeededSent counts ICMP fragmentation-needed replies the
	// appliance generated, ICMPErrorsForwarded ICMP errors about VIP
	// flows sent on to their backend, IPOptions forwarded packets with
	// IPv4 options.
	FragNeededSent, ICMPErrorsForwarded, IPOptions uint64
}

// ServiceStats are one service's counters.
type ServiceStats struct {
	Packets, NoBackend uint64
	Backends           map[string]BackendStats // by backend IP
}

// BackendStats are one backend's counters.
type BackendStats struct {
	Packets, NewFlows uint64
}

// UnmarshalJSON decodes either shape of the stats body.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var raw struct {
		Totals   map[string]uint64 `json:"totals"`
		Drops    map[string]uint64 `json:"drops"`
		Services json.RawMessage   `json:"services"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if raw.Totals == nil {
		return errors.New("stats: no totals")
	}
	pick := func(names ...string) uint64 {
		for _, n := range names {
			if v, ok := raw.Totals[n]; ok {
				return v
			}
		}
		return 0
	}
	s.Totals = Totals{
		RxPackets:  pick("rx_packets"),
		TxPackets:  pick("tx_packets"),
		ToKernel:   pick("to_kernel_packets", "to_kernel"),
		FromKernel: pick("from_kernel_packets", "from_kernel"),
		Dropped:    pick("dropped_packets", "dropped"),

		FragNeededSent:      pick("frag_needed_sent"),
		ICMPErrorsForwarded: pick("icmp_errors_forwarded"),
		IPOptions:           pick("ip_options"),
	}
	s.Drops = raw.Drops
	s.Services = map[string]ServiceStats{}
	type backend struct {
		IP       string `json:"ip"`
		Packets  uint64 `json:"packets"`
		NewFlows uint64 `json:"new_flows"`
	}
	type service struct {
		Name        string          `json:"name"`
		Packets     uint64          `json:"packets"`
		NoBackend   uint64          `json:"no_backend_drops"`
		NoBackendV0 uint64          `json:"no_backend"`
		Backends    json.RawMessage `json:"backends"`
	}
	add := func(name string, sv service) error {
		ss := ServiceStats{Packets: sv.Packets, NoBackend: sv.NoBackend + sv.NoBackendV0, Backends: map[string]BackendStats{}}
		var list []backend
		var byIP map[string]backend
		switch {
		case len(sv.Backends) == 0 || string(sv.Backends) == "null":
		case json.Unmarshal(sv.Backends, &list) == nil:
			for _, b := range list {
				ss.Backends[b.IP] = BackendStats{Packets: b.Packets, NewFlows: b.NewFlows}
			}
		case json.Unmarshal(sv.Backends, &byIP) == nil:
			for ip, b := range byIP {
				ss.Backends[ip] = BackendStats{Packets: b.Packets, NewFlows: b.NewFlows}
			}
		default:
			return fmt.Errorf("stats: service %s: cannot decode backends", name)
		}
		s.Services[name] = ss
		return nil
	}
	var list []service
	var byName map[string]service
	switch {
	case len(raw.Services) == 0 || string(raw.Services) == "null":
	case json.Unmarshal(raw.Services, &list) == nil:
		for _, sv := range list {
			if err := add(sv.Name, sv); err != nil {
				return err
			}
		}
	case json.Unmarshal(raw.Services, &byName) == nil:
		for name, sv := range byName {
			if err := add(name, sv); err != nil {
				return err
			}
		}
	default:
		return errors.New("stats: cannot decode services")
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
		},
		Drops:    map[string]uint64{},
		Services: map[string]ServiceStats{},
	}
	for r, v := range s.Drops {
		d.Drops[r] = v - before.Drops[r]
	}
	for name, sv := range s.Services {
		bs := before.Services[name]
		ds := ServiceStats{Packets: sv.Packets - bs.Packets, NoBackend: sv.NoBackend - bs.NoBackend, Backends: map[string]BackendStats{}}
		for ip, b := range sv.Backends {
			bb := bs.Backends[ip]
			ds.Backends[ip] = BackendStats{Packets: b.Packets - bb.Packets, NewFlows: b.NewFlows - bb.NewFlows}
		}
		d.Services[name] = ds
	}
	return d
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
