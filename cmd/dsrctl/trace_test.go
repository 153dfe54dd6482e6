package main

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

// TestTrace: dsrctl trace prints the verdict, service, Maglev slot and
// backends (here the one backend is down: its gateway has no MAC); -o json
// the API's document; a bad request names the fields.
func TestTrace(t *testing.T) {
	e := newEnv(t)
	out := e.mustRun("trace", "--vip", "198.51.100.9", "--proto", "tcp", "--src", "203.0.113.50:40000", "--dport", "22")
	for _, want := range []string{
		"verdict   drop (no_backend)\n",
		"reason    dropped: no_backend (service old)\n",
		"service   old (ipip)\n",
		"flow      no worker holds it (0 of 0 workers answered)\n",
		"maglev    hash 0x",
		" of 65537: no backend takes new flows\n",
		"backends  203.0.113.9 weight 1 down, no new flows\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("trace output lacks %q:\n%s", want, out)
		}
	}
	var res v1.TraceResult
	if err := json.Unmarshal([]byte(e.mustRun("trace", "--vip", "198.51.100.9", "--proto", "udp", "--src", "203.0.113.50:1", "--dport", "22", "-o", "json")), &res); err != nil ||
		res.Verdict != "drop" || res.DropReason != "no_service" {
		t.Errorf("udp trace -o json = %+v, %v; want a no_service drop", res, err)
	}
	code, _, errOut := e.run("trace", "--vip", "198.51.100.9", "--proto", "tcp", "--src", "203.0.113.50", "--dport", "22", "--flags", "syn,xmas")
	if code != 1 || !strings.Contains(errOut, "src: want IP:PORT") || !strings.Contains(errOut, `flags: unknown TCP flag "xmas"`) {
		t.Errorf("bad trace = exit %d: %s", code, errOut)
	}
	if code, _, _ := e.run("trace", "--vip", "198.51.100.9"); code != 2 {
		t.Errorf("trace without --src = exit %d, want 2", code)
	}
}
