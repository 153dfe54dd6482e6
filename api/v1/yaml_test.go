package v1

import (
	"strings"
	"testing"
)

func TestDecodeYAML(t *testing.T) {
	for _, tc := range []struct {
		desc, yaml string
		want       []string // errors as f.yaml:LINE: field: message
	}{
		{"syntax error", "dataplane:\n  ports: [\n", []string{"f.yaml:2: did not find expected node content"}},
		{"tab indentation", "dataplane:\n\tports: []\n", []string{"f.yaml:2: found character that cannot start any token"}},
		{"not a mapping", "- a\n", []string{`f.yaml:1: want a mapping, got a list`}},
		{"unknown top-level key", "bogus: 1\nservices: []\n", []string{
			"f.yaml:1: bogus: field bogus not found; want one of api, bgp, dataplane, flows, maglev, neighbors, services"}},
		{"wrong types", "dataplane: {workers: many, eal_args: -l}\nmaglev: {seed: -1}\n", []string{
			`f.yaml:1: dataplane.workers: want an integer, got "many"`,
			`f.yaml:1: dataplane.eal_args: want a list, got "-l"`,
			`f.yaml:2: maglev.seed: want an integer 0..4294967295, got "-1"`}},
		{"an anchor under an unknown key", "x: &b {ip: 10.0.0.1, bogus: 1}\n", []string{
			"f.yaml:1: x: field x not found; want one of api, bgp, dataplane, flows, maglev, neighbors, services"}},
		{"items named as Validate names them, whatever the key order", "services:\n  - health: {type: tcp, interval: 1x}\n    name: web\n" +
			"    backends: [{weight: x, ip: 10.0.0.1}, {ip: 10.0.0.300, weight: y}]\n  - name: a\n    x.y[0]: 1\n", []string{
			`f.yaml:2: services[web].health.interval: invalid duration "1x"`,
			`f.yaml:4: services[web].backends[10.0.0.1].weight: want an integer, got "x"`,
			`f.yaml:4: services[web].backends[1].weight: want an integer, got "y"`,
			`f.yaml:6: services[a].x.y[0]: field x.y[0] not found; want one of backends, health, limits, min_healthy, mode, name, port, protocol, vip`}},
		{"empty file", "", nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, _, err := DecodeYAML([]byte(tc.yaml))
			var got []string
			for _, e := range AllFieldErrors(err) {
				got = append(got, e.In("f.yaml"))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestDecodeYAMLMerge: merge keys and aliases decode as yaml.v3 decodes
// them, and their errors are found.
func TestDecodeYAMLMerge(t *testing.T) {
	y := `services:
  - &web {name: web, vip: 203.0.113.10, protocol: tcp, port: 80, mode: ipip, backends: [{ip: 10.0.0.1}]}
  - <<: *web
    name: web2
    port: 81
`
	c, lines, err := DecodeYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != 2 || c.Services[1].VIP != "203.0.113.10" || c.Services[1].Port != 81 || len(c.Services[1].Backends) != 1 {
		t.Errorf("services %+v", c.Services)
	}
	if l := lines.Of("services[web2].port"); l != 5 {
		t.Errorf("line of services[web2].port = %d, want 5", l)
	}
	if l := lines.Of("services[web].backends[10.0.0.1].weight"); l != 2 {
		t.Errorf("line of an absent field = %d, want its backend's 2", l)
	}
	_, _, err = DecodeYAML([]byte(strings.Replace(y, "port: 80,", "port: 80, bogus: 1,", 1)))
	if fe, ok := AsFieldError(err); !ok || fe.Line != 2 || fe.Field != "services[web].bogus" {
		t.Errorf("error in an anchor: %v", err)
	}
}
