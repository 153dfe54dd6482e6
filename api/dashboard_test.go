package api

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricRef matches a metric name in a PromQL expression: dsrlb's own and
// the Go and process collectors' the registry also exports.
var metricRef = regexp.MustCompile(`\b(?:dsrlb|go|process)_[a-zA-Z0-9_]+`)

// exportedMetrics returns the name of every metric /metrics can export:
// each description of dsrlb's collector (whether or not a value exists
// now, e.g. BGP sessions without a speaker) and every family the
// registry gathers (the Go and process collectors).
func exportedMetrics(t *testing.T, s *Server) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc)
	go func() { collector{s}.Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names[m[1]] = true
	}
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// TestGrafanaDashboard: docs/grafana-dashboard.json is a dashboard whose
// every query (panel targets and template variables) names only metrics
// that /metrics exports. dsrlb metrics on no panel are logged (a metric
// added since the dashboard was last edited), not failed.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard title %q uid %q with %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	known := exportedMetrics(t, newFixture(t, testToken).srv)
	used := map[string]bool{}
	check := func(where, expr string) {
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: query %q names no metric", where, expr)
		}
		for _, m := range refs {
			used[m] = true
			if !known[m] {
				t.Errorf("%s: query %q names %s, which /metrics does not export", where, expr, m)
			}
		}
	}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
			queries++
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			check("variable "+v.Name, v.Definition)
			queries++
		}
	}
	var unused []string
	for m := range known {
		if strings.HasPrefix(m, "dsrlb_") && !used[m] {
			unused = append(unused, m)
		}
	}
	sort.Strings(unused)
	if len(unused) != 0 {
		t.Logf("dsrlb metrics on no panel of the dashboard: %v", unused)
	}
	t.Logf("%d panels, %d queries, %d metrics", len(dash.Panels), queries, len(used))
}
