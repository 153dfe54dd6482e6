package nsbed

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestECMPConfigsAgree checks the invariant the ECMP bed rests on: the two
// appliances' configs differ only in their identity (address, router id,
// EAL file prefix and lcores) and role, so both build the same Maglev
// tables and a flow gets the same backend from either.
func TestECMPConfigsAgree(t *testing.T) {
	b := &Bed{prefix: "dsrtb1-1-"}
	var docs [2]map[string]any
	for i := range docs {
		cfg := ECMPConfig(b, i, 3, []string{"-l", "0," + string(rune('1'+i))}, []string{"active", "standby"}[i], "med", 3*time.Second, 9)
		y, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(y, &docs[i]); err != nil {
			t.Fatal(err)
		}
	}
	identity := func(d map[string]any) map[string]any {
		dp := d["dataplane"].(map[string]any)
		port := dp["ports"].([]any)[0].(map[string]any)
		bgp := d["bgp"].(map[string]any)
		out := map[string]any{"eal": dp["eal_args"], "ip": port["ip"], "router_id": bgp["router_id"], "role": bgp["role"]}
		delete(dp, "eal_args")
		delete(port, "ip")
		delete(bgp, "router_id")
		delete(bgp, "role")
		return out
	}
	idA, idB := identity(docs[0]), identity(docs[1])
	if !reflect.DeepEqual(docs[0], docs[1]) {
		t.Errorf("configs differ beyond identity and role:\nA %v\nB %v", docs[0], docs[1])
	}
	if idA["ip"] != "10.97.0.2/24" || idB["ip"] != "10.97.0.3/24" || idA["router_id"] != "10.97.0.2" || idB["router_id"] != "10.97.0.3" {
		t.Errorf("identities: got A %v, B %v", idA, idB)
	}
	if ealA, ealB := idA["eal"].([]any), idB["eal"].([]any); !strings.Contains(strings.Join(anyStrings(ealA), " "), "--file-prefix dsrtb1-1-applA") ||
		!strings.Contains(strings.Join(anyStrings(ealB), " "), "--file-prefix dsrtb1-1-applB") {
		t.Errorf("EAL args: got A %v, B %v, want a file prefix per appliance", ealA, ealB)
	}
	svc := docs[0]["services"].([]any)[0].(map[string]any)
	h := svc["health"].(map[string]any)
	if svc["vip"] != ECMPVIP.String() || svc["mode"] != "l2" || svc["min_healthy"] != 1 ||
		h["type"] != "http" || h["interval"] != "1s" || h["timeout"] != "500ms" || h["rise"] != 2 || h["fall"] != 2 {
		t.Errorf("service: got %v", svc)
	}
	if seed := docs[0]["maglev"].(map[string]any)["seed"]; seed != 7 {
		t.Errorf("maglev seed: got %v, want 7", seed)
	}
	bgp := docs[0]["bgp"].(map[string]any)
	peer := bgp["peers"].([]any)[0].(map[string]any)
	if bgp["asn"] != ECMPApplianceASN || bgp["drain"] != "3s" || peer["address"] != ECMPRouterLan.String() || peer["asn"] != ECMPRouterASN || peer["hold_time"] != 9 {
		t.Errorf("bgp: got %v", bgp)
	}
}

func TestECMPRouterConfig(t *testing.T) {
	got := ECMPRouterConfig()
	for _, want := range []string{
		"router bgp 65000\n",
		" bgp bestpath as-path multipath-relax\n",
		" neighbor 10.97.0.2 remote-as 65010\n",
		" neighbor 10.97.0.2 passive\n",
		" neighbor 10.97.0.3 remote-as 65010\n",
		"  maximum-paths 4\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("router config lacks %q:\n%s", want, got)
		}
	}
}

func TestECMPTopology(t *testing.T) {
	topo := ECMPTopology(3)
	hosts := map[string]Host{}
	for _, h := range topo.Hosts {
		hosts[h.Name] = h
	}
	for _, name := range []string{"client", "rtr", "applA", "applB", "probe", "be1", "be2", "be3"} {
		if _, ok := hosts[name]; !ok {
			t.Errorf("no host %s", name)
		}
	}
	for _, name := range []string{"applA", "applB"} {
		if l := hosts[name].Links; len(l) != 1 || !l[0].Raw || l[0].Segment != "lan" {
			t.Errorf("%s links %+v, want one raw link on lan", name, l)
		}
	}
	rtr := hosts["rtr"]
	if !rtr.Forwarding || !strings.Contains(strings.Join(rtr.Sysctls, " "), "net.ipv4.fib_multipath_hash_policy 1") {
		t.Errorf("rtr: forwarding %v, sysctls %v; want forwarding and the L4 multipath hash", rtr.Forwarding, rtr.Sysctls)
	}
	for _, h := range topo.Hosts {
		for _, l := range h.Links {
			for _, a := range l.Addrs {
				if a.Contains(ECMPVIP) {
					t.Errorf("%s has %s, which holds the VIP: it must be reachable by BGP only", h.Name, a)
				}
			}
		}
	}
}

func anyStrings(v []any) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i], _ = x.(string)
	}
	return out
}
