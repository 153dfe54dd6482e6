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

// exportedMetrics returns the name of every metric /metrics can export,
// with its labels: each description of dsrlb's collector (whether or not
// a value exists now, e.g. BGP sessions without a speaker) and every
// family the registry gathers (the Go and process collectors).
func exportedMetrics(t *testing.T, s *Server) map[string]map[string]bool {
	t.Helper()
	names := map[string]map[string]bool{}
	ch := make(chan *prometheus.Desc)
	go func() { collector{s}.Describe(ch); close(ch) }()
	desc := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	for d := range ch {
		m := desc.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name and labels of %s", d)
		}
		names[m[1]] = map[string]bool{}
		for _, l := range strings.Split(m[2], ",") {
			if l != "" {
				names[m[1]][l] = true
			}
		}
	}
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if names[mf.GetName()] == nil {
			names[mf.GetName()] = map[string]bool{}
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				names[mf.GetName()][l.GetName()] = true
			}
		}
	}
	return names
}

// Label names a query uses: in by (...) or without (...), and in
// matchers (name="...", name=~"...").
var (
	labelGroup   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	labelMatcher = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	legendLabel  = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
)

// queryLabels returns the label names expr and its legend use.
func queryLabels(expr, legend string) []string {
	var out []string
	for _, g := range labelGroup.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	for _, m := range labelMatcher.FindAllStringSubmatch(expr, -1) {
		out = append(out, m[1])
	}
	for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
		out = append(out, m[1])
	}
	return out
}

// onDashboard are the metrics the dashboard must show: the flood
// protection's (docs/flood.md), which an operator under a flood looks for.
var onDashboard = []string{
	"dsrlb_flow_stateless_total",
	"dsrlb_flow_table_full_total",
	"dsrlb_flow_evictions_total",
	"dsrlb_service_new_flow_limit_drops_total",
}

// TestGrafanaDashboard: docs/grafana-dashboard.json is a dashboard whose
// every query (panel targets and template variables) names only metrics
// that /metrics exports, and only labels those metrics have; its panels
// have distinct ids and do not overlap on the grid; the metrics of
// onDashboard are on a panel. Other dsrlb metrics on no panel are logged
// (a metric added since the dashboard was last edited), not failed.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Type    string `json:"type"`
			GridPos struct {
				X, Y, W, H int
			} `json:"gridPos"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
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
	// check checks that expr names exported metrics only, and that every
	// label it or its legend uses is one of theirs, or a target label
	// Prometheus adds (job, instance).
	check := func(where, expr, legend string) {
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: query %q names no metric", where, expr)
		}
		labels := map[string]bool{"job": true, "instance": true}
		for _, m := range refs {
			used[m] = true
			if known[m] == nil {
				t.Errorf("%s: query %q names %s, which /metrics does not export", where, expr, m)
			}
			for l := range known[m] {
				labels[l] = true
			}
		}
		for _, l := range queryLabels(expr, legend) {
			if !labels[l] {
				t.Errorf("%s: query %q (legend %q) uses label %q, which none of %v has", where, expr, legend, l, refs)
			}
		}
	}
	ids := map[int]string{}
	for i, p := range dash.Panels {
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v, want inside the 24 columns", p.Title, g)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		for _, q := range dash.Panels[:i] {
			o := q.GridPos
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panels %q %+v and %q %+v overlap", q.Title, o, p.Title, g)
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
			check("panel "+p.Title, tg.Expr, tg.Legend)
			queries++
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			check("variable "+v.Name, v.Definition, "")
			queries++
		}
	}
	for _, m := range onDashboard {
		if known[m] == nil || !used[m] {
			t.Errorf("%s is on no panel of the dashboard (or not exported)", m)
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
