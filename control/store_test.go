package control

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
)

// TestStateFileRule: where a start takes its services from, for each kind
// of state file found next to each kind of YAML config.
func TestStateFileRule(t *testing.T) {
	yamlA := mustParse(t, baseYAML)
	// A second config on another subnet: the l2 service of the first does
	// not validate with it (the a.yaml then b.yaml).
	l2A := strings.Replace(baseYAML, "mode: ipip", "mode: l2", 1)
	l2A = strings.Replace(l2A, "{ip: 10.0.0.1, weight: 1}", "{ip: 192.0.2.22, weight: 1}", 1)
	otherB := strings.NewReplacer("192.0.2.", "198.51.100.", "203.0.113.10", "203.0.113.20", "10.0.0.1", "10.0.0.2").Replace(baseYAML)
	edited := strings.Replace(baseYAML, "port: 80", "port: 8080", 1)
	addBackend := func(c *Config) error {
		c.Services[0].Backends = append(c.Services[0].Backends, Backend{IP: "10.0.0.9"})
		return nil
	}
	withAPIChange := func(c *Config) []Service {
		n := c.Clone()
		_ = addBackend(n)
		return n.Services
	}
	// An l2 service added over the API, and a YAML config with the same
	// services whose port moved to a subnet without that backend.
	addL2 := func(c *Config) error {
		c.Services = append(c.Services, Service{Name: "local", VIP: "203.0.113.11", Protocol: "tcp", Port: 80, Mode: "l2",
			Backends: []Backend{{IP: "192.0.2.30"}}})
		return nil
	}
	ports2 := strings.Replace(baseYAML, "ip: 192.0.2.10/24, gateway: 192.0.2.1", "ip: 192.0.2.130/25, gateway: 192.0.2.129", 1)

	for _, tc := range []struct {
		desc string
		// prepare writes the state file a previous run left (nothing if nil).
		prepare func(t *testing.T, path string)
		yaml    string
		want    func() []Service // the services the store starts with
		event   string           // the log's event for the choice
		aside   string           // "superseded", "invalid" or "" for none
	}{
		{"no state file", nil, baseYAML, func() []Service { return yamlA.Services }, "state_none", ""},
		{"API change, same YAML: the change survives",
			runWith(baseYAML, addBackend), baseYAML, func() []Service { return withAPIChange(yamlA) }, "state_loaded", ""},
		{"API change, YAML services edited: the YAML wins",
			runWith(baseYAML, addBackend), edited, func() []Service { return mustParse(t, edited).Services }, "state_superseded", "superseded"},
		{"another config, same state file: its services win although the state does not validate with it",
			runWith(l2A, nil), otherB, func() []Service { return mustParse(t, otherB).Services }, "state_superseded", "superseded"},
		{"YAML edited to what the API made: nothing set aside",
			runWith(baseYAML, addBackend), yamlWith(yamlA, addBackend), func() []Service { return withAPIChange(yamlA) }, "state_superseded", ""},
		{"same YAML services, port moved: the API's service no longer validates",
			runWith(baseYAML, addL2), ports2, func() []Service { return mustParse(t, ports2).Services }, "state_invalid", "invalid"},
		{"older dsrlb's state file (no digest) that validates: restored",
			oldState(withAPIChange(yamlA)), baseYAML, func() []Service { return withAPIChange(yamlA) }, "state_loaded", ""},
		{"older dsrlb's state file that does not validate: set aside",
			oldState(mustParse(t, l2A).Services), otherB, func() []Service { return mustParse(t, otherB).Services }, "state_invalid", "invalid"},
		{"corrupt state file", rawState("{\"version\":1,\"services\":[{"), baseYAML, func() []Service { return yamlA.Services }, "state_invalid", "invalid"},
		{"state file of an unknown version", rawState(`{"version":7,"services":[]}`), baseYAML, func() []Service { return yamlA.Services }, "state_invalid", "invalid"},
		{"state file that is a directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, baseYAML, func() []Service { return yamlA.Services }, "state_invalid", "invalid"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			var before []byte
			if tc.prepare != nil {
				tc.prepare(t, path)
				before, _ = os.ReadFile(path)
			}
			var logs bytes.Buffer
			cfg := mustParse(t, tc.yaml)
			s, err := NewStore(cfg, StoreOptions{StatePath: path, Log: zerolog.New(&logs)})
			if err != nil {
				t.Fatalf("NewStore: %v\n%s", err, logs.String())
			}
			want := tc.want()
			if got := s.Config().Services; ServicesDigest(got) != ServicesDigest(want) {
				t.Errorf("services\n%s\nwant\n%s", jsonOf(got), jsonOf(want))
			}
			if ev := `"event":"` + tc.event + `"`; !strings.Contains(logs.String(), ev) {
				t.Errorf("log lacks %s:\n%s", ev, logs.String())
			}
			// The state file now records the YAML the services started from.
			st, err := ReadState(path)
			if err != nil {
				t.Fatalf("state file after start: %v", err)
			}
			if st.YAMLServices != ServicesDigest(cfg.Services) || ServicesDigest(st.Services) != ServicesDigest(want) {
				t.Errorf("state file after start records %s and %s, want %s and the services", st.YAMLServices,
					jsonOf(st.Services), ServicesDigest(cfg.Services))
			}
			aside, _ := filepath.Glob(path + ".*-*")
			switch {
			case tc.aside == "" && len(aside) > 0:
				t.Errorf("state file set aside as %v, want it left", aside)
			case tc.aside != "" && len(aside) != 1:
				t.Errorf("set aside: %v, want one %s file", aside, tc.aside)
			case tc.aside != "":
				name := filepath.Base(aside[0])
				if !strings.HasPrefix(name, "state.json."+tc.aside+"-") {
					t.Errorf("set aside as %s, want state.json.%s-TIME", name, tc.aside)
				}
				if fi, err := os.Stat(aside[0]); err == nil && !fi.IsDir() {
					if got, _ := os.ReadFile(aside[0]); !bytes.Equal(got, before) {
						t.Errorf("the file set aside holds\n%s\nwant the old state file\n%s", got, before)
					}
				}
				if !strings.Contains(logs.String(), `"event":"state_set_aside"`) || !strings.Contains(logs.String(), aside[0]) {
					t.Errorf("log does not say where the state file went:\n%s", logs.String())
				}
			}
			// A restart with the same YAML comes back with the same services.
			again, err := NewStore(cfg, StoreOptions{StatePath: path, Log: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			if got := again.Config().Services; !reflect.DeepEqual(got, s.Config().Services) {
				t.Errorf("second start: %s, want %s", jsonOf(got), jsonOf(s.Config().Services))
			}
		})
	}
}

// TestStateInvalidLogsEveryError: the log of a state file that does not
// validate names each of its errors.
func TestStateInvalidLogsEveryError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	bad := mustParse(t, baseYAML).Services
	weight := 5000
	bad[0].Backends[0].Weight = &weight
	bad[0].Backends[1].State = "sleeping"
	oldState(bad)(t, path)
	var logs bytes.Buffer
	if _, err := NewStore(mustParse(t, baseYAML), StoreOptions{StatePath: path, Log: zerolog.New(&logs)}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"event":"state_invalid"`, `"level":"error"`,
		`services[web].backends[10.0.0.1].weight: must be 0..1000, got 5000`,
		`services[web].backends[192.0.2.21].state: must be enabled, drain or disabled, got \"sleeping\"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

// TestStateUnwritable: a state file that can be neither read, set aside
// nor written does not stop the start; changes then fail.
func TestStateUnwritable(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := NewStore(mustParse(t, baseYAML), StoreOptions{StatePath: filepath.Join(notDir, "state.json"), Log: zerolog.New(&logs)})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	for _, want := range []string{`"event":"state_invalid"`, `"event":"state_set_aside_failed"`, `"event":"state_write_failed"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
	if err := s.Update(func(c *Config) error { return nil }); err == nil {
		t.Error("a change was acknowledged without a state file")
	}
}

// TestSetAsideNames: two set-asides in the same second keep both files.
func TestSetAsideNames(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	now, err := time.Parse(time.RFC3339, "2026-12-01T10:00:00+01:00")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 3 {
		if err := os.WriteFile(path, []byte{byte('a' + i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		to, err := setAside(path, "superseded", now)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, filepath.Base(to))
	}
	want := []string{"state.json.superseded-2026-12-01T09:00:00Z", "state.json.superseded-2026-12-01T09:00:00Z-2",
		"state.json.superseded-2026-12-01T09:00:00Z-3"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("names %v, want %v", got, want)
	}
}

func TestServicesDigest(t *testing.T) {
	a := mustParse(t, baseYAML).Services
	same := mustParse(t, "# a comment\n"+strings.Replace(baseYAML, "{ip: 10.0.0.1, weight: 1}", "{weight: 1, ip: 10.0.0.1}", 1)).Services
	if ServicesDigest(a) != ServicesDigest(same) {
		t.Error("comments and key order changed the digest")
	}
	if ServicesDigest(nil) != ServicesDigest([]Service{}) {
		t.Error("no services and an empty list differ")
	}
	b := mustParse(t, strings.Replace(baseYAML, "weight: 1}", "weight: 2}", 1)).Services
	if ServicesDigest(a) == ServicesDigest(b) {
		t.Error("a weight change kept the digest")
	}
}

// runWith returns a prepare step: a run of yaml that applied change (if
// any) over the API.
func runWith(yaml string, change func(*Config) error) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		t.Helper()
		s, err := NewStore(mustParse(t, yaml), StoreOptions{StatePath: path, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		if change != nil {
			if err := s.Update(change); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// oldState writes a state file as dsrlb wrote it before it recorded the
// YAML's digest.
func oldState(svcs []Service) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		t.Helper()
		b, err := json.Marshal(map[string]any{"version": 1, "services": svcs})
		if err != nil {
			t.Fatal(err)
		}
		rawState(string(b))(t, path)
	}
}

func rawState(content string) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// yamlWith returns the YAML of c after change, services and all.
func yamlWith(c *Config, change func(*Config) error) string {
	n := c.Clone()
	_ = change(n)
	b, err := yaml.Marshal(n)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func mustParse(t *testing.T, y string) *Config {
	t.Helper()
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatalf("config does not parse: %v\n%s", err, y)
	}
	return c
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestPublishedSignals: every published snapshot (an accepted change, a
// recompile) signals Published's channel; signals coalesce, a rejected
// change sends none, and the store never blocks on a reader.
func TestPublishedSignals(t *testing.T) {
	s, err := NewStore(mustParse(t, baseYAML), StoreOptions{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ch := s.Published()
	pending := func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	if pending() {
		t.Fatal("signal before any publication")
	}
	gen := s.Generation()
	s.Recompile()
	s.Recompile() // coalesces with the first: nobody read it
	if !pending() {
		t.Fatal("no signal after Recompile")
	}
	if pending() {
		t.Error("two signals for two unread publications, want one")
	}
	if got := s.Generation(); got != gen+2 {
		t.Errorf("generation %d, want %d", got, gen+2)
	}
	if err := s.Update(func(c *Config) error { c.Services[0].Port++; return nil }); err != nil {
		t.Fatal(err)
	}
	if !pending() {
		t.Error("no signal after an accepted Update")
	}
	if err := s.Update(func(c *Config) error { c.Services[0].VIP = "not an address"; return nil }); err == nil {
		t.Fatal("invalid change accepted")
	}
	if pending() {
		t.Error("signal after a rejected Update")
	}
}
