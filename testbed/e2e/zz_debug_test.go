package e2e

import (
	"testing"
	"time"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"github.com/dsrlb/dsrlb/testbed/nsbed"
)

func TestZZDebug6(t *testing.T) {
	l := startL2(t, nsbed.L2Options{IPv6: true, Backends: 1, Config: func(c *v1.Config) {
		for i := range c.Services {
			if c.Services[i].Name == "web6" || c.Services[i].Name == "echo6" {
				c.Services[i].Health = nil
			}
		}
	}})
	appl := l.Host("appl")
	for _, argv := range [][]string{
		{"ip", "-6", "addr"}, {"ip", "-6", "route"}, {"ip", "-6", "route", "get", "fd00:99::11"}, {"ip", "-6", "neigh"},
		{"curl", "-sS", "-m", "2", "http://[fd00:99::11]/"},
		{"ip", "-6", "neigh"},
	} {
		out, err := appl.Run(argv...)
		t.Logf("appl %v: %v\n%s", argv, err, out)
	}
	be := l.Host("be1")
	c, _ := be.StartCapture("eth0", "ip6", 200)
	out, err := appl.Run("curl", "-sS", "-m", "2", "http://[fd00:99::11]/")
	t.Logf("curl again: %v %s", err, out)
	time.Sleep(200 * time.Millisecond)
	c.Stop()
	rows, _ := c.Fields(t.Context(), "", "eth.src", "ipv6.src", "ipv6.dst", "_ws.col.Info")
	for _, r := range rows {
		t.Logf("be1: %v", r)
	}
	out, _ = be.Run("ip", "-6", "neigh")
	t.Logf("be1 neigh: %s", out)
	st, _ := l.Appliance.Stats(t.Context())
	t.Logf("stats: %+v drops %v", st.Totals, st.NonZeroDrops())
}
