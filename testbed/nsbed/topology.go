package nsbed

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
)

// Topology describes a testbed as data: L2 segments (each a Linux bridge in
// one switch namespace) and hosts (each a namespace) with links onto the
// segments. Presets such as L2Topology build one; Build brings it up.
type Topology struct {
	Segments []Segment
	Hosts    []Host
}

// Segment is one broadcast domain.
type Segment struct {
	Name string // short: becomes bridge br-<Name>
	MTU  int    // 0: 1500
}

// Host is one namespace.
type Host struct {
	Name  string // short name: client, appl, be1, rtr, ...
	Links []Link
	// Routes are installed after the links' addresses.
	Routes []Route
	// Forwarding turns the host into a router (net.ipv4.ip_forward=1, and
	// net.ipv6.conf.all.forwarding=1 with IPv6).
	Forwarding bool
	// IPv6 keeps IPv6 enabled (it is disabled by default). IPv6 addresses
	// of its links skip duplicate address detection.
	IPv6 bool
	// Sysctls are extra key/value pairs set after the links are up.
	Sysctls []string
	// PID, when set, makes the host the network namespace of that process
	// (a container's; see Bed.AttachNS) instead of a new one.
	PID int
}

// Link is a veth from a host onto a segment.
type Link struct {
	Name    string // interface name in the host; default eth<index>
	Segment string
	Addrs   []netip.Prefix
	MTU     int // 0: the segment's
	// Raw marks a link that a user-space data plane (DPDK net_af_packet)
	// drives: it gets no address and its kernel ignores it (IPv6 off,
	// rp_filter=1, arp_ignore=8). The switch port facing it keeps the
	// kernel's default offloads, so the data plane receives what every
	// peer's kernel sends: partial checksums and TSO/GSO super-frames.
	Raw bool
	// Access, if set, makes the switch port an 802.1Q access port: it
	// tags every frame from the host with this VLAN and untags every frame
	// to it (see vlanport.go). Not on Raw links, which are trunks.
	Access *Access
	// Untag makes the switch port remove the tag of every frame to the
	// host: the host takes part in every VLAN, untagged.
	Untag bool
	// PeerOffloadsOff turns checksum and segmentation offloads off on the
	// switch port facing the link (ethtool -K tx off tso off gso off gro
	// off): frames then arrive complete and at most MTU-sized, as from a
	// real NIC. The exception, for a test that needs it.
	PeerOffloadsOff bool
}

// WithPeerOffloadsOff returns t with PeerOffloadsOff set on every raw link
// of host.
func (t Topology) WithPeerOffloadsOff(host string) Topology {
	hosts := append([]Host(nil), t.Hosts...)
	for i := range hosts {
		if hosts[i].Name != host {
			continue
		}
		links := append([]Link(nil), hosts[i].Links...)
		for j := range links {
			links[j].PeerOffloadsOff = links[j].PeerOffloadsOff || links[j].Raw
		}
		hosts[i].Links = links
	}
	t.Hosts = hosts
	return t
}

// Host returns the host called name (nil if none), for editing a preset.
func (t *Topology) Host(name string) *Host {
	for i := range t.Hosts {
		if t.Hosts[i].Name == name {
			return &t.Hosts[i]
		}
	}
	return nil
}

// Route is one route of a host: Dst (default when invalid) via Via.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
	Dev string // optional
}

// Net is a built Topology.
type Net struct {
	Bed    *Bed
	Switch *NS
	Hosts  map[string]*NS
	topo   Topology
}

// Host returns the namespace of host name (nil if none).
func (n *Net) Host(name string) *NS { return n.Hosts[name] }

// PeerOffloads returns the offloads (NS.Offloads) of the switch port facing
// host's link: what decides the frames that link receives.
func (n *Net) PeerOffloads(host, link string) (map[string]string, error) {
	return n.Switch.Offloads(portName(host, link))
}

// Build creates the switch namespace with one bridge per segment, then every
// host with its links, addresses, routes and sysctls.
func (b *Bed) Build(t Topology) (*Net, error) {
	if hasPeerOffloadsOff(t) {
		if _, err := exec.LookPath("ethtool"); err != nil {
			return nil, fmt.Errorf("nsbed: ethtool is needed to turn a switch port's offloads off: %w", err)
		}
	}
	n := &Net{Bed: b, Hosts: map[string]*NS{}, topo: t}
	sw, err := b.NewNS("sw", false)
	if err != nil {
		return nil, err
	}
	n.Switch = sw
	segs := map[string]Segment{}
	for _, s := range t.Segments {
		if _, dup := segs[s.Name]; dup {
			return nil, fmt.Errorf("nsbed: duplicate segment %q", s.Name)
		}
		segs[s.Name] = s
		br := bridgeName(s.Name)
		if _, err := sw.Run("ip", "link", "add", br, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"); err != nil {
			return nil, err
		}
		if s.MTU > 0 {
			if _, err := sw.Run("ip", "link", "set", br, "mtu", strconv.Itoa(s.MTU)); err != nil {
				return nil, err
			}
		}
		if _, err := sw.Run("ip", "link", "set", br, "up"); err != nil {
			return nil, err
		}
	}
	ports := map[string]string{}
	for _, h := range t.Hosts {
		if _, dup := n.Hosts[h.Name]; dup {
			return nil, fmt.Errorf("nsbed: duplicate host %q", h.Name)
		}
		var ns *NS
		if h.PID != 0 {
			ns, err = b.AttachNS(h.Name, h.PID, h.IPv6)
		} else {
			ns, err = b.NewNS(h.Name, h.IPv6)
		}
		if err != nil {
			return nil, err
		}
		n.Hosts[h.Name] = ns
		for i, l := range h.Links {
			seg, ok := segs[l.Segment]
			if !ok {
				return nil, fmt.Errorf("nsbed: host %s: unknown segment %q", h.Name, l.Segment)
			}
			if l.Name == "" {
				l.Name = "eth" + strconv.Itoa(i)
			}
			for _, a := range l.Addrs {
				if a.Addr().Is6() && !h.IPv6 {
					return nil, fmt.Errorf("nsbed: host %s: IPv6 address %s on %s, but the host has IPv6 off (Host.IPv6)", h.Name, a, l.Name)
				}
			}
			port := portName(h.Name, l.Name)
			if other, dup := ports[port]; dup {
				return nil, fmt.Errorf("nsbed: switch port name %s of %s/%s clashes with %s", port, h.Name, l.Name, other)
			}
			ports[port] = h.Name + "/" + l.Name
			if err := n.addLink(ns, l, seg, port); err != nil {
				return nil, err
			}
		}
		if err := n.configureHost(ns, h); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func hasPeerOffloadsOff(t Topology) bool {
	for _, h := range t.Hosts {
		for _, l := range h.Links {
			if l.PeerOffloadsOff {
				return true
			}
		}
	}
	return false
}

// addLink creates the veth pair ns:l.Name <-> switch:port and attaches port
// to the segment's bridge.
func (n *Net) addLink(ns *NS, l Link, seg Segment, port string) error {
	sw := n.Switch
	mtu := l.MTU
	if mtu == 0 {
		mtu = seg.MTU
	}
	if mtu == 0 {
		mtu = 1500
	}
	if _, err := run(nil, "ip", "link", "add", l.Name, "netns", ns.Name, "mtu", strconv.Itoa(mtu),
		"type", "veth", "peer", "name", port, "netns", sw.Name, "mtu", strconv.Itoa(mtu)); err != nil {
		return err
	}
	if _, err := sw.Run("ip", "link", "set", port, "master", bridgeName(seg.Name), "up"); err != nil {
		return err
	}
	if l.Raw && (l.Access != nil || l.Untag) {
		return fmt.Errorf("nsbed: host %s: raw link %s is a trunk: no Access or Untag", ns.Short, l.Name)
	}
	if err := n.portVLAN(port, l); err != nil {
		return err
	}
	if l.PeerOffloadsOff {
		// Compute checksums and segment before frames reach the link.
		if _, err := sw.Run("ethtool", "-K", port, "tx", "off", "tso", "off", "gso", "off", "gro", "off"); err != nil {
			return err
		}
	}
	if l.Raw {
		if _, err := ns.Run("sysctl", "-q", "-e", "-w", "net.ipv6.conf."+l.Name+".disable_ipv6=1"); err != nil {
			return err
		}
		if err := ns.Sysctl(
			"net.ipv4.conf."+l.Name+".rp_filter", "1",
			"net.ipv4.conf."+l.Name+".arp_ignore", "8",
		); err != nil {
			return err
		}
		if len(l.Addrs) > 0 {
			return fmt.Errorf("nsbed: host %s: raw link %s cannot have addresses", ns.Short, l.Name)
		}
	}
	for _, a := range l.Addrs {
		argv := []string{"ip", "addr", "add", a.String(), "dev", l.Name}
		if a.Addr().Is6() {
			argv = append(argv, "nodad") // usable at once, not tentative for a second
		}
		if _, err := ns.Run(argv...); err != nil {
			return err
		}
	}
	_, err := ns.Run("ip", "link", "set", l.Name, "up")
	return err
}

func (n *Net) configureHost(ns *NS, h Host) error {
	if h.Forwarding {
		if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
		if h.IPv6 {
			if err := ns.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
				return err
			}
		}
	}
	for _, r := range h.Routes {
		dst := "default"
		if r.Dst.IsValid() {
			dst = r.Dst.String()
		}
		argv := []string{"ip", "route", "add", dst, "via", r.Via.String()}
		if r.Dev != "" {
			argv = append(argv, "dev", r.Dev)
		}
		if _, err := ns.Run(argv...); err != nil {
			return err
		}
	}
	if len(h.Sysctls) > 0 {
		return ns.Sysctl(h.Sysctls...)
	}
	return nil
}

// SwitchPort is the name, in the switch namespace, of the bridge port that
// link of host plugs into.
func (n *Net) SwitchPort(host, link string) string { return portName(host, link) }

func bridgeName(seg string) string { return trunc("br-" + seg) }

func portName(host, link string) string { return trunc(host + "-" + link) }

// trunc cuts an interface name to the kernel's 15 characters.
func trunc(s string) string {
	if len(s) > 15 {
		return s[:15]
	}
	return s
}
