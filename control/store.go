package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/pipeline"
)

// State is what the state file holds: the services, the part of the config
// the REST API changes. Ports, BGP and API settings always come from the
// YAML config.
type State struct {
	Version  int       `json:"version"`
	Services []Service `json:"services"`
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

	rejected atomic.Uint64
	accepted atomic.Uint64
}

// ErrNotFound is returned (wrapped) for a missing service or backend.
var ErrNotFound = errors.New("not found")

// NewStore starts from cfg, replaced by the state file's services when that
// file exists, and publishes the first snapshot.
func NewStore(cfg *Config, opts StoreOptions) (*Store, error) {
	s := &Store{cfg: cfg.Clone(), ids: NewIDs(), opts: opts}
	if opts.StatePath != "" {
		removeStaleTemps(opts.StatePath, opts.Log)
		st, err := ReadState(opts.StatePath)
		switch {
		case err == nil:
			s.cfg.Services = st.Services
			opts.Log.Info().Str("event", "state_loaded").Str("path", opts.StatePath).Int("services", len(st.Services)).Msg("state file restored")
		case errors.Is(err, os.ErrNotExist):
		default:
			return nil, err
		}
	}
	t, err := s.cfg.Validate()
	if err != nil {
		return nil, err
	}
	s.typed = t
	if opts.StatePath != "" {
		if err := WriteState(opts.StatePath, s.cfg); err != nil {
			return nil, err
		}
	}
	if err := s.publishLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

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
		if err := WriteState(s.opts.StatePath, n); err != nil {
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
			if werr := WriteState(s.opts.StatePath, oldCfg); werr != nil {
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

// WriteState persists c's services to path atomically: a temp file in the
// same directory, fsync, rename over path, fsync of the directory. A crash
// at any point leaves either the old or the new file, never a torn one.
func WriteState(path string, c *Config) error {
	b, err := json.MarshalIndent(State{Version: 1, Services: c.Services}, "", "  ")
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
