package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/pipeline"
)

type fakeBGP []v1.BGPSession

func (f fakeBGP) BGPPeers() []v1.BGPSession { return f }

// TestMetricsDescribed holds Describe and Collect to the same set: the
// pedantic registry fails a collected metric that was not described, and
// every described metric must be collected (with a worker, a BGP peer and
// an announcer, each metric has something to show).
func TestMetricsDescribed(t *testing.T) {
	f := newFixture(t, testToken)
	f.setCounters()
	srv := New(Options{Store: f.store, Stats: f.stats, Log: zerolog.Nop(), Announcer: fakeAnnouncer{},
		BGP: fakeBGP{{Address: "192.0.2.1", ASN: 64512, State: "established"}}})
	r := prometheus.NewPedanticRegistry()
	r.MustRegister(collector{srv})
	families, err := r.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	collected := map[string]bool{}
	for _, mf := range families {
		collected[mf.GetName()] = true
	}
	ch := make(chan *prometheus.Desc)
	go func() { collector{srv}.Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	described := 0
	for d := range ch {
		described++
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %v", d)
		}
		if !collected[m[1]] {
			t.Errorf("%s is described but not collected", m[1])
		}
	}
	if described != len(collected) {
		t.Errorf("%d metrics described, %d collected", described, len(collected))
	}
}

// TestEveryCounterExported gives every field of a worker's counters (and
// of one service's and one backend's) its own value and looks for each
// value in the JSON stats and in /metrics: a counter added to
// pipeline.Counters without a row in control's counters tables fails here.
func TestEveryCounterExported(t *testing.T) {
	// notExported are the fields that are no counts, and why.
	notExported := map[string]string{
		"SuperframePorts": "a bit per port, logged by control, not a count",
		"Drops[none]":     "DropNone is no drop",
	}
	f := newFixture(t, testToken)
	snap := f.store.Snapshots().Load()
	web := snap.FindService("web")
	c := pipeline.Counters{
		Services: make([]pipeline.ServiceCounters, snap.MaxServiceID+1),
		Backends: make([]pipeline.BackendCounters, snap.MaxBackendID+1),
	}
	want := map[string]uint64{} // field path: its value
	next := uint64(1_000_000)
	set := func(path string, v reflect.Value) {
		next += 1000
		v.SetUint(next)
		want[path] = next
	}
	cv := reflect.ValueOf(&c).Elem()
	for i := 0; i < cv.NumField(); i++ {
		name, fv := cv.Type().Field(i).Name, cv.Field(i)
		switch {
		case fv.Kind() == reflect.Uint64:
			set(name, fv)
		case fv.Kind() == reflect.Array && fv.Type().Elem().Kind() == reflect.Uint64: // Drops
			for r := 0; r < fv.Len(); r++ {
				set(fmt.Sprintf("%s[%s]", name, pipeline.DropReason(r)), fv.Index(r))
			}
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct: // Services, Backends
			id := web.ID
			if name == "Backends" {
				id = web.Backends[0].ID
			}
			el := fv.Index(int(id))
			for j := 0; j < el.NumField(); j++ {
				set(name+"[]."+el.Type().Field(j).Name, el.Field(j))
			}
		default:
			t.Fatalf("pipeline.Counters.%s: a field of kind %s this test does not know", name, fv.Kind())
		}
	}
	f.stats.workers = []pipeline.Counters{c}

	inJSON := map[uint64]bool{}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case float64:
			inJSON[uint64(v)] = true
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	w := f.do("GET", "/api/v1/stats", "")
	var doc any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatalf("stats: %v: %s", err, w.Body)
	}
	walk(doc)

	inMetrics := map[uint64]bool{}
	for _, l := range strings.Split(f.do("GET", "/metrics", "").Body.String(), "\n") {
		if !strings.HasPrefix(l, "dsrlb_") {
			continue
		}
		if v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64); err == nil {
			inMetrics[uint64(v)] = true
		}
	}

	for path, v := range want {
		if why, ok := notExported[path]; ok {
			if inJSON[v] || inMetrics[v] {
				t.Errorf("%s (%d) is exported, yet listed as not: %s", path, v, why)
			}
			continue
		}
		if !inJSON[v] {
			t.Errorf("pipeline.Counters %s (%d) is not in the JSON stats", path, v)
		}
		if !inMetrics[v] {
			t.Errorf("pipeline.Counters %s (%d) is not in /metrics", path, v)
		}
	}
}
