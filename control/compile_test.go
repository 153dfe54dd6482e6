package control

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dsrlb/dsrlb/control/health"
)

// TestHealthTargets checks the monitors control hands to health.Monitors:
// one per backend of each monitored service, with the defaults filled in.
func TestHealthTargets(t *testing.T) {
	y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: {type: http, rise: 3}", 1) +
		"  - {name: dns, vip: 203.0.113.11, protocol: udp, port: 53, mode: ipip, backends: [{ip: 10.0.0.2}]}\n"
	c, err := ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	mon := health.Config{Type: health.TypeHTTP, Port: 80, Path: "/", Expect: []int{200},
		Interval: 2 * time.Second, Timeout: time.Second, Rise: 3, Fall: 2}
	want := map[health.Target]health.Config{
		{Service: "web", Backend: netip.MustParseAddr("10.0.0.1")}:   mon,
		{Service: "web", Backend: netip.MustParseAddr("192.0.2.21")}: mon,
	}
	if got := tc.HealthTargets(); !reflect.DeepEqual(got, want) {
		t.Errorf("got targets %+v, want %+v", got, want)
	}
	if got := (*Typed)(nil).HealthTargets(); got != nil {
		t.Errorf("nil config: got %v, want none", got)
	}
}

func TestValidateHealthType(t *testing.T) {
	for _, tc := range []struct {
		typ   string
		want  health.Type
		field string // the error's field; "" for none
	}{
		{"tcp", health.TypeTCP, ""},
		{"http", health.TypeHTTP, ""},
		{"udp", health.TypeUDP, ""},
		{"icmp", health.TypeICMP, ""},
		{"TCP", 0, "services[web].health.type"},
		{"sctp", 0, "services[web].health.type"},
		{"", 0, "services[web].health.type"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			y := strings.Replace(baseYAML, "mode: ipip", "mode: ipip\n    health: {type: '"+tc.typ+"'}", 1)
			typed, err := ParseYAML([]byte(y))
			if tc.field != "" {
				fe, ok := AsFieldError(err)
				if !ok || fe.Field != tc.field {
					t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tv, err := typed.Validate()
			if err != nil {
				t.Fatal(err)
			}
			if got := tv.Services[0].Health.Type; got != tc.want || got.String() != tc.typ {
				t.Errorf("got type %v, want %v", got, tc.want)
			}
		})
	}
}
