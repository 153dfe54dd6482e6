package control

import (
	"net/netip"

	"github.com/dsrlb/dsrlb/control/health"
	"github.com/dsrlb/dsrlb/pipeline"
)

// Neighbors resolves next-hop MACs (the kernel's neighbour table,
// kernel.Neighbors, or a fake). Lookup must not block. The MAC is a plain
// [6]byte (what pipeline.MAC is) so that control/kernel implements Neighbors
// without importing pipeline.
type Neighbors interface {
	Lookup(ip netip.Addr) ([6]byte, bool)
}

// HealthView tells whether a backend passes its service's health monitor.
// Backends of services without a monitor are healthy. *health.Monitors is
// one.
type HealthView interface {
	Healthy(service string, backend netip.Addr) bool
}

// PassiveView tells a backend held down by passive detection, which
// keeps its established flows, from one that failed its monitor, whose
// flows move. *health.Monitors is one; Compile asks a HealthView that is
// one about every backend it does not find healthy.
type PassiveView interface {
	Held(service string, backend netip.Addr) bool
}

// HealthTargets returns the monitor of every backend of every service of t
// that has one, for health.Monitors.Update (Store.Subscribe). A nil t has
// none, which stops every monitor.
func (t *Typed) HealthTargets() map[health.Target]health.Config {
	if t == nil {
		return nil
	}
	want := map[health.Target]health.Config{}
	for i := range t.Services {
		s := &t.Services[i]
		if s.Health == nil {
			continue
		}
		for _, b := range s.Backends {
			want[health.Target{Service: s.Name, Backend: b.IP}] = *s.Health
		}
	}
	return want
}

// BackendKey names a backend of a service.
type BackendKey struct {
	Service string
	IP      netip.Addr
}

// IDs hands out the stable counter IDs of services and backends. An ID stays
// with its object for as long as the object exists, so per-worker counters
// survive snapshot swaps. IDs are not safe for concurrent use (the Store
// serialises changes).
type IDs struct {
	services map[string]uint32
	backends map[BackendKey]uint32
	nextS    uint32
	nextB    uint32
	// probes holds the probe block (0..pipeline.MaxProbeTargets-1) of
	// every backend probed through the VIP; nextP is where the search
	// for a free one starts.
	probes map[BackendKey]int
	usedP  map[int]bool
	nextP  int
}

// NewIDs returns an empty allocator.
func NewIDs() *IDs {
	return &IDs{services: map[string]uint32{}, backends: map[BackendKey]uint32{},
		probes: map[BackendKey]int{}, usedP: map[int]bool{}}
}

// ProbePort returns the first source port of the probes through the VIP
// of backend k, allocating a block if new; 0 when every block is taken. A
// block stays with its backend while it is probed through the VIP; a freed
// one is handed out again only after every other (the search goes round),
// so that a late packet of a removed backend's probe finds no new owner
// (the data plane drops it).
func (ids *IDs) ProbePort(k BackendKey) uint16 {
	if b, ok := ids.probes[k]; ok {
		return uint16(pipeline.ProbePortBase + b*pipeline.ProbePortsPerTarget)
	}
	for range pipeline.MaxProbeTargets {
		b := ids.nextP
		ids.nextP = (ids.nextP + 1) % pipeline.MaxProbeTargets
		if !ids.usedP[b] {
			ids.usedP[b] = true
			ids.probes[k] = b
			return uint16(pipeline.ProbePortBase + b*pipeline.ProbePortsPerTarget)
		}
	}
	return 0
}

// Service returns the ID of service name, allocating one if new.
func (ids *IDs) Service(name string) uint32 {
	if id, ok := ids.services[name]; ok {
		return id
	}
	id := ids.nextS
	ids.nextS++
	ids.services[name] = id
	return id
}

// Backend returns the ID of backend k, allocating one if new.
func (ids *IDs) Backend(k BackendKey) uint32 {
	if id, ok := ids.backends[k]; ok {
		return id
	}
	id := ids.nextB
	ids.nextB++
	ids.backends[k] = id
	return id
}

// LookupService returns the ID of service name if it has one.
func (ids *IDs) LookupService(name string) (uint32, bool) {
	id, ok := ids.services[name]
	return id, ok
}

// LookupBackend returns the ID of backend k if it has one.
func (ids *IDs) LookupBackend(k BackendKey) (uint32, bool) {
	id, ok := ids.backends[k]
	return id, ok
}

// retain forgets the IDs of objects not in t. IDs are never reused, so a
// re-added object starts with fresh counters; the cost is counter arrays that
// grow by a few bytes per worker for every backend ever added.
func (ids *IDs) retain(t *Typed) {
	liveS := map[string]bool{}
	liveB := map[BackendKey]bool{}
	for _, s := range t.Services {
		liveS[s.Name] = true
		for _, b := range s.Backends {
			liveB[BackendKey{s.Name, b.IP}] = true
		}
	}
	for n := range ids.services {
		if !liveS[n] {
			delete(ids.services, n)
		}
	}
	for k := range ids.backends {
		if !liveB[k] {
			delete(ids.backends, k)
		}
	}
	viaVIP := map[BackendKey]bool{}
	for _, s := range t.Services {
		if s.Health != nil && s.Health.ProbesVia() == health.ViaVIP {
			for _, b := range s.Backends {
				viaVIP[BackendKey{s.Name, b.IP}] = true
			}
		}
	}
	for k, b := range ids.probes {
		if !viaVIP[k] {
			delete(ids.probes, k)
			delete(ids.usedP, b)
		}
	}
}

// NextHop returns the address whose MAC a packet to backend ip is sent to,
// and the port index: ip itself when on a port's subnet of its family,
// else the port's gateway of that family (gateway, gateway6).
func (t *Typed) NextHop(ip netip.Addr) (netip.Addr, int) {
	i := t.portFor(ip, true)
	if i < 0 {
		return netip.Addr{}, -1
	}
	p := &t.Ports[i]
	switch {
	case p.onLink(ip):
		return ip, i
	case ip.Is6():
		return p.Gateway6, i
	}
	return p.Gateway, i
}

// NextHops returns the next hop (NextHop) of every backend of every
// service: the addresses whose MACs the kernel must resolve
// (kernel.Neighbors.Want).
func (t *Typed) NextHops() []netip.Addr {
	var addrs []netip.Addr
	for _, s := range t.Services {
		for _, b := range s.Backends {
			if nh, port := t.NextHop(b.IP); port >= 0 && nh.IsValid() {
				addrs = append(addrs, nh)
			}
		}
	}
	return addrs
}

// Compile builds the snapshot spec for t: stable IDs, next-hop MACs (static
// backend MAC, then static neighbors, then nb), and backend states from the
// config state and health. portMACs are the ports' actual MACs.
func Compile(gen uint64, t *Typed, ids *IDs, portMACs []pipeline.MAC, nb Neighbors, hv HealthView) pipeline.SnapshotSpec {
	ids.retain(t)
	spec := pipeline.SnapshotSpec{Generation: gen, MaglevSize: t.MaglevSz, MaglevSeed: t.Seed, NewFlowsPerSecond: t.FlowRate}
	spec.ICMPErrorsPerSecond = t.ICMPErrorRate // per worker, like FlowRate
	for i, p := range t.Ports {
		mac := p.MAC
		if mac.IsZero() && i < len(portMACs) {
			mac = portMACs[i]
		}
		spec.Ports = append(spec.Ports, pipeline.PortSpec{MAC: mac, IP: p.Addr, IP6: p.IP6.Addr(), MTU: p.MTU, PartialChecksums: p.KernelFrames})
	}
	for _, s := range t.Services {
		ss := pipeline.ServiceSpec{ID: ids.Service(s.Name), Name: s.Name, VIP: s.VIP, Proto: s.Proto, Port: s.Port, Mode: s.Mode}
		viaVIP := s.Health != nil && s.Health.ProbesVia() == health.ViaVIP
		if s.Health != nil && s.Health.Passive.On() {
			ss.SynRetries = uint8(s.Health.Passive.SynRetries)
		}
		if s.NewFlowLimit > 0 { // split over the workers, rounded up
			w := uint32(max(t.Workers, 1))
			ss.NewFlowsPerSecond = (s.NewFlowLimit + w - 1) / w
		}
		for _, b := range s.Backends {
			hop, port := t.NextHop(b.IP)
			bs := pipeline.BackendSpec{ID: ids.Backend(BackendKey{s.Name, b.IP}), IP: b.IP, Weight: b.Weight, Port: port}
			if viaVIP {
				bs.ProbePort = ids.ProbePort(BackendKey{s.Name, b.IP})
			}
			bs.NextHop = t.resolve(b, hop, nb)
			switch {
			case b.State == AdminDisabled:
				bs.State = pipeline.BackendDown
			case hv != nil && !hv.Healthy(s.Name, b.IP):
				bs.State = pipeline.BackendDown
				if pv, ok := hv.(PassiveView); ok && pv.Held(s.Name, b.IP) {
					bs.State = pipeline.BackendHeld
				}
			case b.State == AdminDrain || b.Weight == 0:
				bs.State = pipeline.BackendDrain
			}
			ss.Backends = append(ss.Backends, bs)
		}
		spec.Services = append(spec.Services, ss)
	}
	return spec
}

func (t *Typed) resolve(b TypedBackend, hop netip.Addr, nb Neighbors) pipeline.MAC {
	if !b.MAC.IsZero() && hop == b.IP {
		return b.MAC
	}
	if m, ok := t.Neighbors[hop]; ok {
		return m
	}
	if nb != nil {
		if m, ok := nb.Lookup(hop); ok {
			return m
		}
	}
	return pipeline.MAC{}
}
