package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/dsrlb/dsrlb/control"
)

const checkConfig = `dataplane:
  ports:
    - {name: eth0, device: "net_null0", ip: 192.0.2.10/24, gateway: 192.0.2.1}
services:
  - name: web
    vip: 203.0.113.10
    protocol: tcp
    port: 80
    mode: ipip
    backends:
      - {ip: 10.0.0.1, weight: 2}
      - {ip: 192.0.2.21}
bgp:
  asn: 65010
  router_id: 192.0.2.10
  peers: [{address: 192.0.2.1, asn: 65000}]
`

// TestCheck: dsrlb check prints every error of a file as
// FILE:LINE: field: message (exit 1), or a summary (exit 0).
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", checkConfig)
	bad := write("bad.yaml", strings.NewReplacer("weight: 2", "weight: 2000", "{ip: 192.0.2.21}", "{ip: 192.0.2.21, wieght: 1}",
		"mode: ipip", "mode: l2", "asn: 65010", "asn: x").Replace(checkConfig))
	for _, tc := range []struct {
		desc           string
		args           []string
		code           int
		stdout, stderr string // {F} stands for the file
	}{
		{"valid", []string{"--config", good}, 0, "{F}: ok: 1 port, 1 service, 2 backends, BGP with 1 peer\n", ""},
		{"every error", []string{"--config", bad}, 1, "", `{F}:11: services[web].backends[10.0.0.1].weight: must be 0..1000, got 2000
{F}:11: services[web].backends[10.0.0.1].ip: l2 mode needs the backend on a port's subnet
{F}:12: services[web].backends[192.0.2.21].wieght: field wieght not found; want one of ip, mac, state, weight
{F}:14: bgp.asn: want an integer 0..4294967295, got "x"
{F}: 4 errors
`},
		{"duplicate BGP peer", []string{"--config", write("peers.yaml", strings.Replace(checkConfig, "peers: [{address: 192.0.2.1, asn: 65000}]",
			"peers: [{address: 192.0.2.1, asn: 65000}, {address: 192.0.2.1, asn: 65001}]", 1))}, 1, "",
			"{F}:16: bgp.peers[192.0.2.1].address: duplicate peer\n{F}: 1 error\n"},
		{"not YAML", []string{"--config", write("tab.yaml", "dataplane:\n\tports: []\n")}, 1, "",
			"{F}:2: found character that cannot start any token\n{F}: 1 error\n"},
		{"no such file", []string{"--config", filepath.Join(dir, "none.yaml")}, 1, "", "dsrlb check: read config: open {F}: no such file or directory\n"},
		{"no --config", nil, 2, "", "usage: dsrlb check --config FILE [--state FILE]\n"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := runCheck(tc.args, &out, &errOut)
			f := ""
			if len(tc.args) > 1 {
				f = tc.args[1]
			}
			if code != tc.code || out.String() != strings.ReplaceAll(tc.stdout, "{F}", f) || errOut.String() != strings.ReplaceAll(tc.stderr, "{F}", f) {
				t.Errorf("exit %d, stdout\n%s\nstderr\n%s\nwant exit %d, stdout\n%s\nstderr\n%s", code, &out, &errOut,
					tc.code, strings.ReplaceAll(tc.stdout, "{F}", f), strings.ReplaceAll(tc.stderr, "{F}", f))
			}
		})
	}
}

// TestCheckState: with --state, check tells what run would start from and
// leaves the state file and its directory as they were.
func TestCheckState(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "dsrlb.yaml")
	state := filepath.Join(dir, "state.json")
	edited := strings.Replace(checkConfig, "port: 80", "port: 8080", 1)
	check := func(config string) string {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(state)
		files := func() []string {
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			return names
		}
		inDir := files()
		var out, errOut bytes.Buffer
		if code := runCheck([]string{"--config", cfgPath, "--state", state}, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, &errOut)
		}
		if after, _ := os.ReadFile(state); !bytes.Equal(before, after) {
			t.Error("check changed the state file")
		}
		if got := files(); !reflect.DeepEqual(got, inDir) {
			t.Errorf("files %v after check, %v before", got, inDir)
		}
		_, last, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		return last
	}
	if got, want := check(checkConfig), state+": none: run starts from the config's services"; got != want {
		t.Errorf("no state file: %q, want %q", got, want)
	}
	cfg, err := control.ParseYAML([]byte(checkConfig))
	if err != nil {
		t.Fatal(err)
	}
	s, err := control.NewStore(cfg, control.StoreOptions{StatePath: state, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(c *control.Config) error { return c.RemoveService("web") }); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ desc, config, want string }{
		{"same YAML", checkConfig, "run restores its 0 services: the YAML config's services are those the state file started from"},
		{"edited YAML", edited, "run starts from the config's services: the YAML config's services changed since the state file was written; " +
			"run sets the state file, and the changes made over the API in it, aside"},
	} {
		if got := check(tc.config); got != state+": "+tc.want {
			t.Errorf("%s: %q, want %q", tc.desc, got, state+": "+tc.want)
		}
	}
}
