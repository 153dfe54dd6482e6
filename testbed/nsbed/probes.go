package nsbed

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// The data plane's range of health probe source ports (probes through the
// VIP, `health.via: vip`): blocks of ProbeBlock ports from ProbePortBase,
// one block per backend probed, up to 32767.
const (
	ProbePortBase = 16384
	ProbeBlock    = 4
	probePortLast = 32767
)

// ProbeWatch records, on each backend, the health probes through the VIP
// it receives: an nftables set per backend of (VIP, TCP source port) of
// the packets from the appliance's address to a VIP with a source port of
// the probe range, read after the inner packet is decapsulated (prerouting).
type ProbeWatch struct {
	bes Backends
	fam string // nftables family: ip or ip6
}

// probeTable is the nftables table of ProbeWatch on each backend.
const probeTable = "dsrlb_probes"

// WatchProbes installs the recording on every backend of bes, for probes
// from appl to vips, all of appl's family (WatchProbes6 for IPv6).
func WatchProbes(bes Backends, appl netip.Addr, vips ...netip.Addr) (*ProbeWatch, error) {
	return watchProbes(bes, "ip", appl, vips)
}

// WatchProbes6 is WatchProbes for IPv6: probes from the appliance's IPv6
// address appl to IPv6 VIPs (a table of family ip6 beside the ip one).
func WatchProbes6(bes Backends, appl netip.Addr, vips ...netip.Addr) (*ProbeWatch, error) {
	return watchProbes(bes, "ip6", appl, vips)
}

func watchProbes(bes Backends, fam string, appl netip.Addr, vips []netip.Addr) (*ProbeWatch, error) {
	var vs []string
	for _, v := range vips {
		vs = append(vs, v.String())
	}
	typ := "ipv4_addr"
	if fam == "ip6" {
		typ = "ipv6_addr"
	}
	rules := fmt.Sprintf(`table %[1]s %[2]s {
	set seen { type %[3]s . inet_service; flags dynamic; }
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		%[1]s saddr %[4]s %[1]s daddr { %[5]s } tcp sport %[6]d-%[7]d add @seen { %[1]s daddr . tcp sport } counter
	}
}
`, fam, probeTable, typ, appl, strings.Join(vs, ", "), ProbePortBase, probePortLast)
	for _, b := range bes {
		path := b.NS.bed.Path(b.Name + "-probes-" + fam + ".nft")
		if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
			return nil, err
		}
		if _, err := b.NS.Run("nft", "-f", path); err != nil {
			return nil, err
		}
	}
	return &ProbeWatch{bes: bes, fam: fam}, nil
}

// Seen returns, per backend name and VIP, the sorted source ports of the
// probes it received so far.
func (w *ProbeWatch) Seen() (map[string]map[netip.Addr][]int, error) {
	out := map[string]map[netip.Addr][]int{}
	for _, b := range w.bes {
		j, err := b.NS.Run("nft", "-j", "list", "set", w.fam, probeTable, "seen")
		if err != nil {
			return nil, err
		}
		var doc struct {
			Nftables []struct {
				Set *struct {
					Elem []json.RawMessage `json:"elem"`
				} `json:"set"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal([]byte(j), &doc); err != nil {
			return nil, fmt.Errorf("[%s] nft -j list set: %w", b.Name, err)
		}
		m := map[netip.Addr][]int{}
		for _, o := range doc.Nftables {
			if o.Set == nil {
				continue
			}
			for _, raw := range o.Set.Elem {
				vip, port, err := probeElem(raw)
				if err != nil {
					return nil, fmt.Errorf("[%s] set element %s: %w", b.Name, raw, err)
				}
				m[vip] = append(m[vip], port)
			}
		}
		for v := range m {
			slices.Sort(m[v])
		}
		out[b.Name] = m
	}
	return out, nil
}

// probeElem decodes one element of the set: {"concat": [vip, port]},
// possibly wrapped as {"elem": {"val": ...}}.
func probeElem(raw json.RawMessage) (netip.Addr, int, error) {
	var e struct {
		Concat []json.RawMessage `json:"concat"`
		Elem   *struct {
			Val json.RawMessage `json:"val"`
		} `json:"elem"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return netip.Addr{}, 0, err
	}
	if e.Elem != nil {
		return probeElem(e.Elem.Val)
	}
	if len(e.Concat) != 2 {
		return netip.Addr{}, 0, fmt.Errorf("want a (vip, port) pair")
	}
	var vip string
	var port int
	if err := json.Unmarshal(e.Concat[0], &vip); err != nil {
		return netip.Addr{}, 0, err
	}
	if err := json.Unmarshal(e.Concat[1], &port); err != nil {
		return netip.Addr{}, 0, err
	}
	a, err := netip.ParseAddr(vip)
	return a, port, err
}

// ProbeProblems checks what Seen returned: every backend received the
// probes of each of vips, all from one block of source ports of its own,
// and no source port of a VIP's probes reached two backends (a probe
// reaches the one backend it is for).
func ProbeProblems(seen map[string]map[netip.Addr][]int, vips ...netip.Addr) []string {
	var probs []string
	owner := map[netip.Addr]map[int]string{}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, v := range vips {
			ports := seen[name][v]
			if len(ports) == 0 {
				probs = append(probs, fmt.Sprintf("%s received no probe through the VIP %s", name, v))
				continue
			}
			lo := ports[0] - (ports[0]-ProbePortBase)%ProbeBlock
			if ports[len(ports)-1] >= lo+ProbeBlock {
				probs = append(probs, fmt.Sprintf("%s received probes to %s from ports %v: more than one backend's block", name, v, ports))
			}
			if owner[v] == nil {
				owner[v] = map[int]string{}
			}
			for _, p := range ports {
				if o, ok := owner[v][p]; ok {
					probs = append(probs, fmt.Sprintf("the probe to %s from port %d reached both %s and %s", v, p, o, name))
				}
				owner[v][p] = name
			}
		}
	}
	return probs
}
