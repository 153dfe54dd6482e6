package main

// The state-file rule against the real `dsrlb run` (helpers in
// hitless_test.go and crash_test.go): changes made over the API survive a
// restart while the YAML's services stay the same; an edit of the YAML's
// services wins; a state file that does not validate never stops a start.

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
)

func TestStateFileRuleDaemon(t *testing.T) {
	api, yamlCfg, app := crSetup(t, "sf")
	cfgText, err := os.ReadFile(app.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	services := func() string {
		t.Helper()
		var l v1.ServiceList
		api.getJSON(t, "/api/v1/services", &l)
		return crJSON(l.Services)
	}
	restart := func(config string) {
		t.Helper()
		if err := app.stop(syscall.SIGTERM, 20*time.Second); err != nil {
			t.Fatalf("dsrlb run after SIGTERM: %v", err)
		}
		if err := os.WriteFile(app.cfgPath, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		app.start()
	}
	logHas := func(event string) bool {
		b, _ := os.ReadFile(app.logPath)
		return strings.Contains(string(b), `"event":"`+event+`"`)
	}
	setAside := func(kind string) []string {
		m, _ := filepath.Glob(app.statePath + "." + kind + "-*")
		return m
	}

	app.start()
	if code, body, err := api.do(http.MethodPost, "/api/v1/services/web/backends", control.Backend{IP: "10.1.0.9"}); err != nil || code != http.StatusCreated {
		t.Fatalf("add a backend: %d %v %s", code, err, body)
	}
	changed := services()

	t.Run("same YAML: the API's change survives", func(t *testing.T) {
		restart(string(cfgText))
		if got := services(); got != changed {
			t.Errorf("services after restart:\n%s\nwant the API's:\n%s", got, changed)
		}
	})

	edited := strings.Replace(string(cfgText), "port: 80, mode: ipip", "port: 8080, mode: ipip", 1)
	t.Run("YAML services edited: the YAML wins", func(t *testing.T) {
		restart(edited)
		want, err := control.ParseYAML([]byte(edited))
		if err != nil {
			t.Fatal(err)
		}
		if got := services(); got != crJSON(want.Services) {
			t.Errorf("services after the edit:\n%s\nwant the YAML's:\n%s", got, crJSON(want.Services))
		}
		aside := setAside("superseded")
		if !logHas("state_superseded") || len(aside) != 1 {
			t.Fatalf("superseded state not logged or not set aside: %v", aside)
		}
		if st, err := control.ReadState(aside[0]); err != nil || crJSON(st.Services) != changed {
			t.Errorf("the file set aside holds %v (%v), want the API's services", st, err)
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
		if err := app.stop(syscall.SIGTERM, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(app.statePath, old, 0o644); err != nil {
			t.Fatal(err)
		}
		other := strings.NewReplacer("192.0.2.", "198.51.100.", "203.0.113.1", "203.0.113.2").Replace(string(cfgText))
		want, err := control.ParseYAML([]byte(other))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(app.cfgPath, []byte(other), 0o644); err != nil {
			t.Fatal(err)
		}
		app.start()
		if got := services(); got != crJSON(want.Services) {
			t.Errorf("services:\n%s\nwant the YAML's:\n%s", got, crJSON(want.Services))
		}
		if !logHas("state_invalid") || len(setAside("invalid")) != 1 {
			t.Errorf("invalid state not logged or not set aside: %v", setAside("invalid"))
		}
		b, _ := os.ReadFile(app.logPath)
		if want := "services[dns].backends[192.0.2.21].ip: l2 mode needs the backend on a port's subnet"; !strings.Contains(string(b), want) {
			t.Errorf("log lacks the reason %q", want)
		}
	})
	if err := app.stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Errorf("dsrlb run after SIGTERM: %v", err)
	}
}
