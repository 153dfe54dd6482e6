package api

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/pipeline"
)

// fakeFlows answers flow lookups for two workers: worker 1 holds the flows
// in held, worker 0 nothing; asked records the keys.
type fakeFlows struct {
	held  map[pipeline.TraceKey]pipeline.FlowProbe
	asked []pipeline.TraceKey
}

func (f *fakeFlows) LookupFlow(k pipeline.TraceKey) []control.FlowAnswer {
	f.asked = append(f.asked, k)
	return []control.FlowAnswer{{Answered: true}, {Probe: f.held[k], Answered: true}}
}

func u32(a string) uint32 {
	b := netip.MustParseAddr(a).As4()
	return binary.BigEndian.Uint32(b[:])
}

// TestTrace: POST /api/v1/trace names the service, the backend and why
// (Maglev for a new flow, a worker's flow table entry for a held one, even
// against Maglev), the envelope, or the drop reason; bad requests name
// each field.
func TestTrace(t *testing.T) {
	f := newFixture(t, testToken) // trace() sends no token: a trace changes nothing
	flows := &fakeFlows{held: map[pipeline.TraceKey]pipeline.FlowProbe{}}
	f.srv.opts.Flows = flows
	trace := func(body string) (int, v1.TraceResult, string) {
		w := f.do("POST", "/api/v1/trace", body, header("Authorization", ""))
		var res v1.TraceResult
		_ = json.Unmarshal(w.Body.Bytes(), &res)
		return w.Code, res, w.Body.String()
	}

	// dns (ipip, one backend behind the gateway): a new flow by Maglev.
	code, res, body := trace(`{"vip":"198.51.100.2","protocol":"udp","src":"203.0.113.77:5353","dport":53}`)
	if code != 200 || res.Verdict != "forward" || res.Service != "dns" || res.Mode != "ipip" || res.Backend != "203.0.113.5" ||
		res.Decision != "maglev" || res.Flow != nil || res.Workers != 2 || res.WorkersAnswered != 2 {
		t.Fatalf("dns trace = %d %s", code, body)
	}
	if m := res.Maglev; m == nil || m.TableSize != 65537 || m.Slot != m.Hash%65537 || m.Backend != "203.0.113.5" {
		t.Errorf("maglev = %+v", res.Maglev)
	}
	env := res.Envelope
	if env == nil || env.Mode != "ipip" || env.OuterSrc != "192.0.2.10" || env.OuterDst != "203.0.113.5" || env.OuterProto != 4 ||
		env.DstMAC != "02:00:00:00:00:01" || env.NextHop != "192.0.2.1" || env.EgressPort != "eth0" || env.Length != 14+20+20+8 {
		t.Errorf("envelope = %+v", env)
	}
	if len(res.Backends) != 1 || !res.Backends[0].Usable || res.Backends[0].Forwarding != "active" {
		t.Errorf("backends = %+v", res.Backends)
	}
	if want := (pipeline.TraceKey{V4: pipeline.FlowKey{Src: u32("203.0.113.77"), Dst: u32("198.51.100.2"), SrcPort: 5353, DstPort: 53, Proto: 17}}); flows.asked[0] != want {
		t.Errorf("asked the workers for %+v, want %+v", flows.asked[0], want)
	}

	// A flow worker 1 holds on web's backend 192.0.2.21: the flow table
	// decides, even where Maglev would pick 192.0.2.22.
	web := f.store.Snapshots().Load().FindService("web")
	k := pipeline.TraceKey{V4: pipeline.FlowKey{Src: u32("203.0.113.78"), Dst: u32("198.51.100.1"), SrcPort: 40000, DstPort: 80, Proto: 6}}
	flows.held[k] = pipeline.FlowProbeForTest(web, web.BackendIndex(u32("192.0.2.21")), "established", 29e9)
	webFlow := `{"vip":"198.51.100.1","protocol":"tcp","src":"203.0.113.78:40000","dport":80,"flags":"ack"}`
	_, res, body = trace(webFlow)
	if res.Decision != "flow_table" || res.Backend != "192.0.2.21" || res.Flow == nil || res.Flow.Remapped || res.Flow.ExpiresInMS != 29000 ||
		res.Flow.State != "established" || res.Reason != "established flow: worker 1's flow table holds it on 192.0.2.21 (active)" {
		t.Errorf("held trace = %s", body)
	}
	// Once that backend is disabled, the entry no longer counts (remapped)
	// and Maglev has no backend left: 192.0.2.22's MAC is unknown.
	if w := f.do("PATCH", "/api/v1/services/web/backends/192.0.2.21", `{"state":"disabled"}`); w.Code != 200 {
		t.Fatal(w.Body)
	}
	_, res, body = trace(webFlow)
	if res.Verdict != "drop" || res.DropReason != "no_backend" || res.Flow == nil || !res.Flow.Remapped || res.Flow.Worker != 1 ||
		res.Flow.Backend != "192.0.2.21" || res.Maglev == nil || res.Maglev.Backend != "" || res.Backends[0].Forwarding != "down" {
		t.Errorf("remapped trace = %s", body)
	}

	for _, tc := range []struct{ desc, body, verdict, reason string }{
		{"no service on the port", `{"vip":"198.51.100.1","protocol":"tcp","src":"203.0.113.77:40000","dport":81}`, "drop", "no_service"},
		{"to the appliance", `{"vip":"192.0.2.10","protocol":"tcp","src":"203.0.113.77:40000","dport":22}`, "kernel", ""},
		{"too big for gre-less ipip with DF", `{"vip":"198.51.100.2","protocol":"udp","src":"203.0.113.77:1","dport":53,"size":1460}`, "frag_needed", ""},
	} {
		code, res, body := trace(tc.body)
		if code != 200 || res.Verdict != tc.verdict || res.DropReason != tc.reason {
			t.Errorf("%s: %d %s, want verdict %s reason %q", tc.desc, code, body, tc.verdict, tc.reason)
		}
	}

	w := f.do("POST", "/api/v1/trace", `{"vip":"nope","protocol":"sctp","src":"1.2.3.4","dport":70000,"flags":"syn,urg","port":"eth9"}`)
	er := decodeJSON[v1.ErrorResponse](t, w)
	var fields []string
	for _, e := range er.Errors {
		fields = append(fields, e.Field)
	}
	if w.Code != 400 || strings.Join(fields, " ") != "vip protocol src dport port" {
		t.Errorf("bad request = %d, fields %v: %s", w.Code, fields, w.Body)
	}
}
