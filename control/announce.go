package control

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/dsrlb/dsrlb/pipeline"
)

// VIPStatus says whether a VIP should be announced, and why.
type VIPStatus struct {
	VIP       netip.Addr `json:"vip"`
	Announce  bool       `json:"announce"`
	Reason    string     `json:"reason"`
	Available int        `json:"available_backends"`
}

// Announcements decides, from a published snapshot and its config, which
// VIPs to announce: a VIP is announced while at least one of its services
// has min_healthy or more backends taking new flows (enabled, healthy,
// next hop resolved, weight > 0). The reason is meant for logs and the API.
func Announcements(snap *pipeline.Snapshot, t *Typed) []VIPStatus {
	byVIP := map[netip.Addr]*VIPStatus{}
	var order []netip.Addr
	for _, ts := range t.Services {
		st, ok := byVIP[ts.VIP]
		if !ok {
			st = &VIPStatus{VIP: ts.VIP}
			byVIP[ts.VIP] = st
			order = append(order, ts.VIP)
		}
		svc := snap.FindService(ts.Name)
		if svc == nil {
			continue
		}
		n := 0
		for _, b := range svc.Backends {
			if b.State == pipeline.BackendActive && b.Weight > 0 {
				n++
			}
		}
		if n > st.Available {
			st.Available = n
		}
		switch {
		case n >= ts.MinHealthy:
			if !st.Announce {
				st.Announce = true
				st.Reason = fmt.Sprintf("service %s has %d of %d backends available (min_healthy %d)", ts.Name, n, len(svc.Backends), ts.MinHealthy)
			}
		case !st.Announce:
			st.Reason = fmt.Sprintf("service %s has %d of %d backends available, below min_healthy %d", ts.Name, n, len(svc.Backends), ts.MinHealthy)
		}
	}
	sort.Slice(order, func(i, j int) bool { return order[i].Less(order[j]) })
	out := make([]VIPStatus, 0, len(order))
	for _, v := range order {
		out = append(out, *byVIP[v])
	}
	return out
}

// AnnounceBoard holds the latest announcement decisions for the API.
type AnnounceBoard struct {
	mu sync.RWMutex
	m  map[netip.Addr]VIPStatus
}

// Set replaces the decisions.
func (b *AnnounceBoard) Set(st []VIPStatus) {
	m := make(map[netip.Addr]VIPStatus, len(st))
	for _, s := range st {
		m[s.VIP] = s
	}
	b.mu.Lock()
	b.m = m
	b.mu.Unlock()
}

// Status reports whether vip is announced and why.
func (b *AnnounceBoard) Status(vip netip.Addr) (bool, string) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	s, ok := b.m[vip]
	if !ok {
		return false, "no BGP decision yet"
	}
	return s.Announce, s.Reason
}
