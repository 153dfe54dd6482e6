package nsbed

import (
	"encoding/json"
	"strings"
	"testing"
)

// apiStats is GET /api/v1/stats as v1.Stats writes it.
const apiStats = `{"generation":8,"totals":{"rx_packets":122,"rx_bytes":11352,"tx_packets":162,"tx_bytes":12090,
"to_kernel_packets":92,"from_kernel_packets":132,"dropped_packets":0},"drops":{"no_backend":0,"not_ip":0},
"flows":{"entries":30},"services":[{"name":"web","packets":30,"bytes":1800,"no_backend_drops":0,"new_flow_limit_drops":4,"backends":[
{"ip":"10.99.0.11","packets":12,"bytes":720,"new_flows":12},{"ip":"10.99.0.12","packets":18,"bytes":900,"new_flows":15}]}]}`

// controlStats is the same in the shape before v1.
const controlStats = `{"generation":8,"totals":{"rx_packets":122,"tx_packets":162,"to_kernel":92,"from_kernel":132,"dropped":0},
"drops":{"no_backend":0,"not_ip":0},"flows":{"entries":30},"services":{"web":{"packets":30,"no_backend":0,"backends":{
"10.99.0.11":{"packets":12,"new_flows":12,"state":"active"},"10.99.0.12":{"packets":18,"new_flows":15,"state":"active"}}}}}`

func TestStatsDecodesBothShapes(t *testing.T) {
	for _, tc := range []struct {
		desc, body string
		limited    uint64 // web's new_flow_limit_drops (not in the shape before v1)
	}{{"v1", apiStats, 4}, {"before v1", controlStats, 0}} {
		t.Run(tc.desc, func(t *testing.T) {
			var s Stats
			if err := json.Unmarshal([]byte(tc.body), &s); err != nil {
				t.Fatal(err)
			}
			want := Totals{RxPackets: 122, TxPackets: 162, ToKernel: 92, FromKernel: 132}
			if s.Totals != want {
				t.Errorf("got totals %+v, want %+v", s.Totals, want)
			}
			web := s.Services["web"]
			if web.Packets != 30 || web.Backends["10.99.0.12"] != (BackendStats{Packets: 18, NewFlows: 15}) {
				t.Errorf("got web %+v", web)
			}
			if web.NewFlowLimited != tc.limited || s.NewFlows("web") != 27 {
				t.Errorf("got web's new flow limit drops %d, new flows %d; want %d, 27", web.NewFlowLimited, s.NewFlows("web"), tc.limited)
			}
		})
	}
}

func TestCounterProblems(t *testing.T) {
	var before, after Stats
	if err := json.Unmarshal([]byte(apiStats), &before); err != nil {
		t.Fatal(err)
	}
	after = before
	after.Totals.RxPackets += 1000 + 5
	after.Totals.ToKernel += 5
	after.Services = map[string]ServiceStats{"web": {Packets: 30 + 1000}}
	if p := CounterProblems(after.Sub(&before), 900); len(p) != 0 {
		t.Errorf("clean run: got problems %v, want none", p)
	}
	// Answers reaching the appliance are neither for a service nor for
	// its kernel: they show up as drops.
	after.Totals.RxPackets += 700
	after.Totals.Dropped += 700
	after.Drops = map[string]uint64{"no_service": 700, "not_ip": 0}
	p := CounterProblems(after.Sub(&before), 900)
	if len(p) != 1 || !strings.Contains(p[0], "dropped 700") || !strings.Contains(p[0], "no_service=700") {
		t.Errorf("answers through the appliance: got %v, want one drop problem", p)
	}
	if p := CounterProblems(after.Sub(&before), 5000); len(p) != 2 {
		t.Errorf("too few service packets: got %v, want two problems", p)
	}
}

func TestDSRReportProblems(t *testing.T) {
	const mac = "02:00:00:00:00:01"
	good := DSRReport{ClientFromVIP: 10, ByBackend: map[string]int{"be1": 10}, VIPNeighbor: mac, ApplianceMAC: mac}
	if p := good.Problems(); len(p) != 0 {
		t.Errorf("got %v, want none", p)
	}
	bad := DSRReport{ApplianceFromVIP: 3, ClientFromVIP: 10, FromAppliance: 3, VIPNeighbor: "02:00:00:00:00:09", ApplianceMAC: mac}
	if p := bad.Problems(); len(p) != 3 {
		t.Errorf("got %v, want 3 problems (appliance saw VIP packets, answers from its MAC, VIP resolved elsewhere)", p)
	}
}
