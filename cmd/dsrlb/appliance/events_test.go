package appliance

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/bgp"
	"github.com/dsrlb/dsrlb/control"
	"github.com/dsrlb/dsrlb/control/health"
)

// eventLines renders events as "seq kind object: reason [k=v ...]".
func eventLines(evs []v1.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%d %s %s: %s", e.Seq, e.Kind, e.Object, e.Reason)
		for _, k := range []string{"state", "from", "previous", "available_backends"} {
			if v, ok := e.Data[k]; ok {
				fmt.Fprintf(&b, " %s=%s", k, v)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestApplianceEvents: the announce loop publishes a bgp event when a VIP
// is announced or withdrawn (a change that leaves too few backends, a
// service removed), health transitions and BGP sessions their own, each
// with its object and reason.
func TestApplianceEvents(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	y := strings.Replace(bgpTestConfig, "peers: [{address: 192.0.2.1, asn: 65000}]",
		"peers: [{address: 127.0.0.1, asn: 65000, port: "+port+"}]", 1) + `neighbors:
  - {ip: 192.0.2.21, mac: "02:00:00:00:00:21"}
services:
  - {name: web, vip: 198.51.100.1, protocol: tcp, port: 80, mode: l2, backends: [{ip: 192.0.2.21}]}
  - {name: dns, vip: 198.51.100.2, protocol: udp, port: 53, mode: l2, backends: [{ip: 192.0.2.21}]}
`
	cfg, err := control.ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	store, err := control.NewStore(cfg, control.StoreOptions{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	typed := store.Typed()
	speaker, err := bgp.New(bgpConfig(typed), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer speaker.Close()
	a := &Appliance{log: zerolog.Nop(), store: store, speaker: speaker, board: &control.AnnounceBoard{},
		events: control.NewEvents(control.DefaultEventHistory), announced: map[netip.Addr]bool{}}

	a.announce()
	if err := store.Update(func(c *control.Config) error {
		c.Services[0].Backends[0].State = "disabled"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a.announce()
	a.announce() // the same snapshot: nothing new
	if err := store.Update(func(c *control.Config) error { return c.RemoveService("dns") }); err != nil {
		t.Fatal(err)
	}
	a.announce()
	a.healthEvent(health.Target{Service: "web", Backend: netip.MustParseAddr("192.0.2.21")}, health.TypeTCP,
		health.Up, health.Down, "dial tcp 192.0.2.21:80: connection refused")
	a.peerEvent(bgp.PeerChange{Address: "127.0.0.1", ASN: 65000, State: "established", Previous: "openconfirm"})
	a.peerEvent(bgp.PeerChange{Address: "127.0.0.1", ASN: 65000, State: "idle", Previous: "established"})

	want := `1 bgp vip 198.51.100.1: announced: service web has 1 of 1 backends available (min_healthy 1) state=announced available_backends=1
2 bgp vip 198.51.100.2: announced: service dns has 1 of 1 backends available (min_healthy 1) state=announced available_backends=1
3 bgp vip 198.51.100.1: withdrawn: service web has 0 of 1 backends available, below min_healthy 1 state=withdrawn available_backends=0
4 bgp vip 198.51.100.2: withdrawn: no service has this VIP any more state=withdrawn
5 health service web/backend 192.0.2.21: down (tcp check): dial tcp 192.0.2.21:80: connection refused state=down from=up
6 bgp peer 127.0.0.1: session established state=established previous=openconfirm
7 bgp peer 127.0.0.1: session down: idle state=idle previous=established
`
	if got := eventLines(a.events.Since(0)); got != want {
		t.Errorf("events\n got:\n%s\nwant:\n%s", got, want)
	}
	if got := speaker.Announced(); len(got) != 0 {
		t.Errorf("speaker still announces %v", got)
	}
}
