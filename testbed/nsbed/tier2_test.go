package nsbed

import (
	"bytes"
	"os"
	"strings"
	"testing"

	v1 "github.com/dsrlb/dsrlb/api/v1"
	"gopkg.in/yaml.v3"
)

// TestTier2DocMatchesBed holds docs/tier2.md to what the tier-2 bed runs:
// px1's haproxy.cfg, the service YAML, the dsrctl command and the API call
// that adds px3 must appear in it verbatim.
func TestTier2DocMatchesBed(t *testing.T) {
	doc, err := os.ReadFile("../../docs/tier2.md")
	if err != nil {
		t.Fatal(err)
	}
	var svc bytes.Buffer
	enc := yaml.NewEncoder(&svc)
	enc.SetIndent(2)
	if err := enc.Encode(map[string]any{"services": []v1.Service{Tier2Service(2)}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ what, text string }{
		{"px1's haproxy.cfg", "```\n" + Tier2HAProxyConfig(1, 3).String() + "```\n"},
		{"the service YAML", svc.String() + "```\n"},
		{"the dsrctl command", "dsrctl backend setup --vip " + Tier2VIP.String() + " --mode ipip --dev eth0\n"},
		{"the API call adding px3", `-d '{"ip":"` + Tier2ProxyIP(3).String() + `"}' http://` + DefaultAPI + "/api/v1/services/web/backends"},
	} {
		if !strings.Contains(string(doc), want.text) {
			t.Errorf("docs/tier2.md lacks %s as the bed runs it:\n%s", want.what, want.text)
		}
	}
}
