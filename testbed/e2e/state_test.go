package e2e

// The state-file rule against the real `dsrlb run` (the appliance of
// crash_test.go): changes made over the API survive a restart while the
// YAML's services stay the same; an edit of the YAML's services wins; a
// state file that does not validate never stops a start.

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

func TestStateFileRuleDaemon(t *testing.T) {
	c := crSetup(t, "sf")
	yamlCfg := c.cfg
	services := func() string {
		t.Helper()
		return crJSON(c.services())
	}
	restart := func(cfg v1.Config) {
		t.Helper()
		if err := c.appl.Stop(); err != nil {
			t.Fatalf("dsrlb run after SIGTERM: %v", err)
		}
		c.cfg = cfg
		c.start()
	}
	logHas := func(event string) bool {
		b, _ := os.ReadFile(c.appl.Proc.Log)
		return strings.Contains(string(b), `"event":"`+event+`"`)
	}
	setAside := func(kind string) []string {
		m, _ := filepath.Glob(c.statePath() + "." + kind + "-*")
		return m
	}

	c.start()
	if code, body, err := c.appl.Do(context.Background(), http.MethodPost, "/api/v1/services/web/backends",
		v1.Backend{IP: "10.1.0.9"}); err != nil || code != http.StatusCreated {
		t.Fatalf("add a backend: %d %v %s", code, err, body)
	}
	changed := services()

	t.Run("same YAML: the API's change survives", func(t *testing.T) {
		restart(yamlCfg)
		if got := services(); got != changed {
			t.Errorf("services after restart:\n%s\nwant the API's:\n%s", got, changed)
		}
	})

	edited := yamlCfg
	edited.Services = crClone(yamlCfg.Services)
	edited.Services[0].Port = 8080 // web
	t.Run("YAML services edited: the YAML wins", func(t *testing.T) {
		restart(edited)
		if got := services(); got != crJSON(edited.Services) {
			t.Errorf("services after the edit:\n%s\nwant the YAML's:\n%s", got, crJSON(edited.Services))
		}
		aside := setAside("superseded")
		if !logHas("state_superseded") || len(aside) != 1 {
			t.Fatalf("superseded state not logged or not set aside: %v", aside)
		}
		if svcs, err := crReadState(aside[0]); err != nil || crJSON(svcs) != changed {
			t.Errorf("the file set aside holds %v (%v), want the API's services", svcs, err)
		}
	})

	// The case: another config on another subnet, with a state file
	// of an older dsrlb (no record of its YAML) whose l2 backends are not on
	// that subnet. Before, dsrlb exited with
	// services[dns].backends[192.0.2.21].ip: l2 mode needs the backend on a port's subnet.
	t.Run("a state file that does not validate: set aside, the YAML used", func(t *testing.T) {
		old, err := json.Marshal(map[string]any{"version": 1, "services": yamlCfg.Services})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.appl.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.statePath(), old, 0o644); err != nil {
			t.Fatal(err)
		}
		y, err := yaml.Marshal(yamlCfg)
		if err != nil {
			t.Fatal(err)
		}
		var other v1.Config
		if err := yaml.Unmarshal([]byte(strings.NewReplacer("192.0.2.", "198.51.100.", "203.0.113.1", "203.0.113.2").Replace(string(y))), &other); err != nil {
			t.Fatal(err)
		}
		c.cfg = other
		c.start()
		if got := services(); got != crJSON(other.Services) {
			t.Errorf("services:\n%s\nwant the YAML's:\n%s", got, crJSON(other.Services))
		}
		if !logHas("state_invalid") || len(setAside("invalid")) != 1 {
			t.Errorf("invalid state not logged or not set aside: %v", setAside("invalid"))
		}
		b, _ := os.ReadFile(c.appl.Proc.Log)
		if want := "services[dns].backends[192.0.2.21].ip: l2 mode needs the backend on a port's subnet"; !strings.Contains(string(b), want) {
			t.Errorf("log lacks the reason %q", want)
		}
	})
	if err := c.appl.Stop(); err != nil {
		t.Errorf("dsrlb run after SIGTERM: %v", err)
	}
}
