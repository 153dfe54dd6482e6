package control

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/pipeline"
)

// State is what the state file holds: the services, the part of the config
// the REST API changes, and which YAML services they started from. Ports,
// BGP and API settings always come from the YAML config.
type State struct {
	Version int `json:"version"`
	// YAMLServices is the ServicesDigest of the YAML config's services the
	// appliance that wrote the file started with. NewStore restores the
	// file's services only while the YAML's services are still those; an
	// edit of them in the YAML wins. Empty in files of dsrlb versions that
	// did not record it.
	YAMLServices string    `json:"yaml_services_sha256,omitempty"`
	Services     []Service `json:"services"`
}

// ServicesDigest returns the SHA-256, in hex, of the canonical JSON of
// svcs (an absent and an empty list alike). It tells whether the services
// of a YAML config changed: formatting, comments, key order and the way a
// duration is written ("1s", "1000ms") do not count. New fields of Service,
// Backend and Health MUST be omitempty, or the digest of every existing
// config changes and the next start sets aside the API's changes.
func ServicesDigest(svcs []Service) string {
	norm := make([]Service, len(svcs))
	for i, s := range svcs {
		norm[i] = s.Clone() // backends: an empty list, never null
	}
	b, err := json.Marshal(norm)
	if err != nil {
		panic("control: services do not encode: " + err.Error()) // plain data: cannot happen
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// StoreOptions are the Store's dependencies.
type StoreOptions struct {
	// StatePath is where accepted changes are persisted; "" disables it.
	StatePath string
	PortMACs  []pipeline.MAC
	Neighbors Neighbors
	Health    HealthView
	Log       zerolog.Logger
	// KernelFrames treats every port as reading a kernel's frames
	// (TypedPort.KernelFrames) whatever its device: `dsrlb replay`, whose
	// captures, taken on a host, hold what its kernel sent.
	KernelFrames bool
}

// Store owns the live config. Every change is validated as a whole,
// persisted atomically, compiled into a new snapshot and published; readers
// of the snapshot never wait.
type Store struct {
	mu    sync.Mutex
	cfg   *Config
	typed *Typed
	ids   *IDs
	gen   uint64
	opts  StoreOptions
	snap  atomic.Pointer[pipeline.Snapshot]
	subs  []func(*Typed)
	// published are the channels of Published, each signalled after
	// every snapshot published.
	published []chan struct{}
	// yamlServices is the ServicesDigest of the YAML config's services,
	// recorded in every state file this store writes.
	yamlServices string
	// started is where the services came from at start (StartedFrom).
	started StateChoice

	rejected atomic.Uint64
	accepted atomic.Uint64
}

// ErrNotFound is returned (wrapped) for a missing service or backend.
var ErrNotFound = errors.New("not found")

// NewStore starts from cfg, the YAML config, and publishes the first
// snapshot. With a state file its services are decided by the state-file
// rule (see startServices): the state file's services while the YAML's
// services are those it started from, else the YAML's; a state file that
// cannot be read, or does not validate with cfg, is set aside with the
// reason logged. The state file never keeps the appliance from starting:
// only an invalid cfg does.
func NewStore(cfg *Config, opts StoreOptions) (*Store, error) {
	s := &Store{cfg: cfg.Clone(), ids: NewIDs(), opts: opts, yamlServices: ServicesDigest(cfg.Services)}
	if opts.StatePath != "" {
		removeStaleTemps(opts.StatePath, opts.Log)
		start := ChooseState(cfg, opts.StatePath)
		start.log(opts.Log, opts.StatePath)
		if start.SetAside {
			kind := strings.TrimPrefix(start.Event, "state_") // superseded or invalid
			moved, err := setAside(opts.StatePath, kind, time.Now())
			if err != nil {
				opts.Log.Error().Err(err).Str("event", "state_set_aside_failed").Str("path", opts.StatePath).Msg("could not set the state file aside; it will be overwritten")
			} else {
				opts.Log.Warn().Str("event", "state_set_aside").Str("path", opts.StatePath).Str("moved_to", moved).Msg("old state file kept next to the new one")
			}
		}
		s.cfg.Services = start.Services
		s.started = start
		s.started.Services = nil
	} else {
		s.started = StateChoice{Event: "state_none", Reason: "no state file kept"}
	}
	t, err := s.cfg.Validate()
	if err != nil {
		return nil, err
	}
	s.typed = t
	if opts.StatePath != "" {
		// Record what the services start from. Failing that, the appliance
		// still forwards; API changes then fail until the file is writable.
		if err := s.writeState(s.cfg); err != nil {
			opts.Log.Error().Err(err).Str("event", "state_write_failed").Str("path", opts.StatePath).Msg("could not write the state file")
		}
	}
	if err := s.publishLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// StateChoice is where a start takes its services from, and why.
type StateChoice struct {
	// Event names the case in the log: state_none (no state file),
	// state_loaded (restored), state_superseded (the YAML's services
	// changed) or state_invalid (unreadable, or does not validate).
	Event    string
	Services []Service
	// SetAside tells that the state file is to be renamed out of the way,
	// as PATH.superseded-TIME or PATH.invalid-TIME.
	SetAside bool
	Reason   string
	Errors   []string // why the state's services do not validate
}

// ChooseState applies the state-file rule (see startServices) to cfg, the
// YAML config, and the state file at path, without changing anything.
func ChooseState(cfg *Config, path string) StateChoice {
	st, err := ReadState(path)
	return startServices(cfg, st, err)
}

// startServices is the state-file rule. yaml is the YAML config; st and
// readErr are what ReadState returned.
//
//   - No state file: the YAML's services.
//   - A state file that cannot be read or decoded: set aside as invalid;
//     the YAML's services.
//   - A state file that recorded other YAML services than yaml's (the YAML
//     was edited, or another config is used with the same state file): the
//     YAML's services win; the state file is set aside as superseded,
//     unless its services are the YAML's anyway.
//   - Otherwise (the same YAML services, or a state file of an older dsrlb
//     that recorded none: restored as before, so an upgrade keeps the API's
//     changes): the state file's services, if they validate with the rest
//     of yaml; if not, it is set aside as invalid and the YAML's are used.
func startServices(yaml *Config, st *State, readErr error) StateChoice {
	fromYAML := func(event, reason string, setAside bool) StateChoice {
		return StateChoice{Event: event, Services: yaml.Clone().Services, SetAside: setAside, Reason: reason}
	}
	switch {
	case errors.Is(readErr, os.ErrNotExist):
		return fromYAML("state_none", "no state file", false)
	case readErr != nil:
		return fromYAML("state_invalid", readErr.Error(), true)
	}
	digest := ServicesDigest(yaml.Services)
	if st.YAMLServices != "" && st.YAMLServices != digest {
		if ServicesDigest(st.Services) == digest {
			return fromYAML("state_superseded", "the YAML config's services changed since the state file was written, to the state file's own: nothing is lost", false)
		}
		return fromYAML("state_superseded", "the YAML config's services changed since the state file was written", true)
	}
	full := yaml.Clone()
	full.Services = st.Services
	if _, err := full.Validate(); err != nil {
		c := fromYAML("state_invalid", "the state file's services do not validate with the YAML config", true)
		for _, fe := range AllFieldErrors(err) {
			c.Errors = append(c.Errors, fe.Error())
		}
		if len(c.Errors) == 0 {
			c.Errors = []string{err.Error()}
		}
		return c
	}
	reason := "the YAML config's services are those the state file started from"
	if st.YAMLServices == "" {
		reason = "the state file does not record the YAML services it started from (written by an older dsrlb)"
	}
	return StateChoice{Event: "state_loaded", Services: full.Services, Reason: reason}
}

// log reports the choice under its event key.
func (c StateChoice) log(log zerolog.Logger, path string) {
	var e *zerolog.Event
	msg := "starting from the YAML config's services"
	switch {
	case c.Event == "state_loaded":
		e, msg = log.Info().Int("services", len(c.Services)), "state file restored"
	case c.Event == "state_invalid":
		e, msg = log.Error().Strs("errors", c.Errors), "state file not usable: "+msg
	case c.SetAside:
		e, msg = log.Warn(), msg+"; the state file's (with changes made over the API) are set aside"
	default:
		e = log.Info()
	}
	e.Str("event", c.Event).Str("path", path).Str("reason", c.Reason).Msg(msg)
}

// setAside renames the state file at path to path.KIND-TIME (TIME in
// RFC 3339, UTC; -2, -3... if that exists) and returns the new name.
func setAside(path, kind string, now time.Time) (string, error) {
	base := path + "." + kind + "-" + now.UTC().Format(time.RFC3339)
	to := base
	for n := 2; ; n++ {
		if _, err := os.Lstat(to); err != nil {
			break // free (or unusable: Rename says why)
		}
		to = base + "-" + strconv.Itoa(n)
	}
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	return to, nil
}

// StartedFrom tells where the services came from at start: Event and
// Reason of the state-file rule (ChooseState); Services is not kept.
func (s *Store) StartedFrom() StateChoice { return s.started }

// Snapshots returns the pointer workers load their snapshot from.
func (s *Store) Snapshots() *atomic.Pointer[pipeline.Snapshot] { return &s.snap }

// Config returns a deep copy of the live config.
func (s *Store) Config() *Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Clone()
}

// Typed returns the live validated config. It must not be modified.
func (s *Store) Typed() *Typed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.typed
}

// IDs calls fn with the ID allocator under the store's lock.
func (s *Store) IDs(fn func(*IDs)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.ids)
}

// Subscribe registers fn to be called (under the store lock, keep it short)
// with every newly accepted config, and once now.
func (s *Store) Subscribe(fn func(*Typed)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, fn)
	fn(s.typed)
}

// Published returns a channel that receives after every snapshot the store
// publishes from now on, for a config change, a recompile (neighbours,
// health) or new port MACs. Signals coalesce: a reader that was busy finds
// one value for any number of snapshots and reads the latest with
// Snapshots().Load(). The store never blocks on the channel.
func (s *Store) Published() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.published = append(s.published, ch)
	return ch
}

// Update applies fn to a copy of the config; if the result validates it is
// persisted, compiled and published, else nothing changes and the error
// (often a *FieldError) is returned.
func (s *Store) Update(fn func(c *Config) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.cfg.Clone()
	if err := fn(n); err != nil {
		s.rejected.Add(1)
		return err
	}
	t, err := n.Validate()
	if err != nil {
		s.rejected.Add(1)
		return err
	}
	if s.opts.StatePath != "" {
		if err := s.writeState(n); err != nil {
			s.rejected.Add(1)
			return err
		}
	}
	oldCfg, oldTyped := s.cfg, s.typed
	s.cfg, s.typed = n, t
	// Subscribers (health monitors, kernel VIPs, neighbours) see the new
	// config before it is compiled, so a new monitored backend is compiled
	// as not yet healthy rather than briefly taking flows.
	for _, fn := range s.subs {
		fn(t)
	}
	if err := s.publishLocked(); err != nil {
		s.cfg, s.typed = oldCfg, oldTyped
		if s.opts.StatePath != "" {
			if werr := s.writeState(oldCfg); werr != nil {
				s.opts.Log.Error().Err(werr).Str("event", "state_restore_failed").Msg("could not restore the state file")
			}
		}
		for _, fn := range s.subs {
			fn(oldTyped)
		}
		s.rejected.Add(1)
		return err
	}
	s.accepted.Add(1)
	return nil
}

// Recompile rebuilds and publishes the snapshot from the live config, for
// when neighbours or health changed.
func (s *Store) Recompile() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.publishLocked(); err != nil {
		s.opts.Log.Error().Err(err).Str("event", "compile_failed").Msg("recompile failed")
	}
}

// SetPortMACs records the ports' actual MACs and recompiles.
func (s *Store) SetPortMACs(macs []pipeline.MAC) {
	s.mu.Lock()
	s.opts.PortMACs = macs
	s.mu.Unlock()
	s.Recompile()
}

// SetNeighbors and SetHealth install resolvers after construction (they
// often need the store themselves) and recompile.
func (s *Store) SetNeighbors(nb Neighbors) {
	s.mu.Lock()
	s.opts.Neighbors = nb
	s.mu.Unlock()
	s.Recompile()
}

// SetHealth installs the health view and recompiles.
func (s *Store) SetHealth(hv HealthView) {
	s.mu.Lock()
	s.opts.Health = hv
	s.mu.Unlock()
	s.Recompile()
}

// Generation returns the generation of the published snapshot.
func (s *Store) Generation() uint64 { return s.snap.Load().Generation }

// Changes returns the numbers of accepted and rejected changes.
func (s *Store) Changes() (accepted, rejected uint64) {
	return s.accepted.Load(), s.rejected.Load()
}

func (s *Store) publishLocked() error {
	s.gen++
	spec := Compile(s.gen, s.typed, s.ids, s.opts.PortMACs, s.opts.Neighbors, s.opts.Health)
	for i := range spec.Ports {
		spec.Ports[i].PartialChecksums = spec.Ports[i].PartialChecksums || s.opts.KernelFrames
	}
	snap, err := pipeline.NewSnapshot(spec)
	if err != nil {
		return fmt.Errorf("compile snapshot: %w", err)
	}
	s.snap.Store(snap)
	for _, ch := range s.published {
		select {
		case ch <- struct{}{}:
		default: // a signal is pending: the reader will load this snapshot
		}
	}
	return nil
}

// ReadState reads a state file.
func ReadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("state file %s: unsupported version %d", path, st.Version)
	}
	return &st, nil
}

// writeState persists c's services to the state file.
func (s *Store) writeState(c *Config) error {
	return WriteState(s.opts.StatePath, State{Version: 1, YAMLServices: s.yamlServices, Services: c.Services})
}

// WriteState persists st to path atomically: a temp file in the same
// directory, fsync, rename over path, fsync of the directory. A crash at
// any point leaves either the old or the new file, never a torn one.
func WriteState(path string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, tempPattern(path))
	if err != nil {
		return fmt.Errorf("state temp file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync state dir: %w", err)
	}
	return nil
}

// removeStaleTemps deletes temp files a crash (kill -9) left between
// CreateTemp and Rename in WriteState. The state file itself is never a
// temp file, so this cannot lose an acknowledged change.
func removeStaleTemps(path string, log zerolog.Logger) {
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(path), tempPattern(path)))
	for _, f := range stale {
		if err := os.Remove(f); err == nil {
			log.Info().Str("event", "state_temp_removed").Str("path", f).Msg("removed a temp file left by a crash")
		}
	}
}

// tempPattern names WriteState's temp files after the state file, so that
// processes with other state files in the same directory are left alone.
func tempPattern(path string) string { return "." + filepath.Base(path) + ".*.tmp" }
