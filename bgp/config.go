package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Role says whether this appliance attracts traffic first (active) or only
// when the active appliance is gone (standby).
type Role string

const (
	// RoleActive announces VIPs with the best attributes: MED 0, no prepend.
	RoleActive Role = "active"
	// RoleStandby announces VIPs made less preferred with StandbyBy.
	RoleStandby Role = "standby"
)

// StandbyMethod is how a standby appliance makes its announcements worse.
type StandbyMethod string

const (
	// StandbyMED sets MULTI_EXIT_DISC to StandbyMEDValue (RFC 4271 §5.1.4).
	// Routers compare MED only between paths from the same neighbouring AS
	// (unless configured with "always-compare-med"), so every appliance
	// of a group MUST use the same ASN for MED to decide.
	StandbyMED StandbyMethod = "med"
	// StandbyPrepend prepends the local ASN PrependCount extra times to
	// the AS_PATH, which every router compares.
	StandbyPrepend StandbyMethod = "prepend"
)

// Numbers the speaker uses. Appliances of one group compare each other's
// announcements through them, so they MUST NOT differ between versions
// that run side by side.
const (
	// ActiveMED is the MED of an active appliance's announcements.
	ActiveMED uint32 = 0
	// StandbyMEDValue is the MED of a standby appliance's announcements
	// when StandbyBy is StandbyMED.
	StandbyMEDValue uint32 = 100
	// PrependCount is how many extra copies of the local ASN a standby
	// appliance prepends when StandbyBy is StandbyPrepend.
	PrependCount = 3
)

// Defaults that New fills in for zero fields.
const (
	// DefaultHoldTime is the hold time offered in OPEN when Peer.HoldTime
	// is 0: the value suggested by RFC 4271 §10 and the default of FRR
	// and GoBGP. The session uses the smaller of both sides' offers, so a
	// router configured with short timers (e.g. 9 s / 3 s keepalive) gets
	// them without changing the appliance.
	DefaultHoldTime = 90 * time.Second
	// DefaultConnectRetry is the interval between connection attempts to a
	// peer when Peer.ConnectRetry is 0. GoBGP's own default (120 s) would
	// leave a VIP unannounced for minutes after a router restart.
	DefaultConnectRetry = 5 * time.Second
	// DefaultPort is the BGP port (RFC 4271 §8.2.1).
	DefaultPort = 179
)

// Config is the speaker's configuration. The zero values of optional
// fields mean "default" as documented on each field.
type Config struct {
	// ASN is the local autonomous system number (4-byte ASNs allowed).
	ASN uint32
	// RouterID is the BGP identifier, an IPv4 address. If invalid (unset)
	// it defaults to NextHop when that is IPv4.
	RouterID netip.Addr
	// ListenPort is the TCP port to accept BGP sessions on. 0 and -1 both
	// mean "do not listen": the speaker only dials its peers, which is
	// all an appliance needs and needs no port 179 on the host.
	//
	// Listening together with Peer.Password needs GODEBUG=multipathtcp=0
	// (or "//go:debug multipathtcp=0" in package main): since Go 1.24 a
	// listener is Multipath TCP where the kernel has it, and MPTCP sockets
	// refuse TCP_MD5SIG, so GoBGP logs "failed to set md5" and signed SYNs
	// from the router are dropped. Dialing is unaffected.
	ListenPort int
	// ListenAddresses restrict the listening sockets when ListenPort > 0;
	// empty means all addresses.
	ListenAddresses []netip.Addr
	// Peers are the BGP neighbours; usually the upstream routers.
	Peers []Peer
	// Role is RoleActive (default when empty) or RoleStandby.
	Role Role
	// StandbyBy is how RoleStandby worsens announcements: StandbyMED
	// (default when empty) or StandbyPrepend.
	StandbyBy StandbyMethod
	// NextHop is the IPv4 next hop of announced IPv4 prefixes, normally
	// the appliance's data-port address. Unset means "the local address
	// of each session" (RFC 4271 next-hop-self), which is the same thing
	// when the sessions run over the data port.
	NextHop netip.Addr
	// NextHop6 is the IPv6 next hop of announced IPv6 prefixes. Unset
	// means the session's local address, which works only over IPv6
	// sessions; announcing IPv6 prefixes over IPv4-only sessions needs it.
	NextHop6 netip.Addr
}

// Peer is one BGP neighbour.
type Peer struct {
	// Address is the neighbour's address; the speaker dials it.
	Address netip.Addr
	// ASN is the neighbour's AS; equal to Config.ASN makes it iBGP.
	ASN uint32
	// Port is the neighbour's TCP port; 0 means DefaultPort.
	Port int
	// HoldTime is the hold time offered in OPEN, whole seconds, 0 meaning
	// DefaultHoldTime; otherwise 3 s to 65535 s (RFC 4271 §4.2). The
	// keepalive interval is a third of it.
	HoldTime time.Duration
	// ConnectRetry is the delay between connection attempts; 0 means
	// DefaultConnectRetry. GoBGP adds up to the same amount of jitter.
	ConnectRetry time.Duration
	// Password enables TCP MD5 signatures (RFC 2385) with this key.
	Password string
	// LocalAddress is the source address to dial from; unset lets the
	// kernel choose by route.
	LocalAddress netip.Addr
	// Multihop is the TTL of eBGP packets when the neighbour is not
	// directly connected; 0 means 1 (directly connected).
	Multihop uint8
}

// validate checks c and returns a copy with defaults filled in. Errors name
// the offending field.
//
// These checks are the package's contract, not the appliance's config
// validation: Config is a public API, New may be called with any value
// (by tools and tests, with fields dsrlb's config never sets), and GoBGP
// takes some bad values silently or fails only after it started. dsrlb's
// control.Validate checks every field it maps here, with the config's
// field names and lines, so a config that validated never fails here.
func (c Config) validate() (Config, error) {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("bgp: %s: %s", field, fmt.Sprintf(format, a...)))
	}
	if c.ASN == 0 {
		bad("asn", "must be set")
	}
	if !c.RouterID.IsValid() && c.NextHop.Is4() {
		c.RouterID = c.NextHop
	}
	switch {
	case !c.RouterID.IsValid():
		bad("router_id", "must be set (an IPv4 address)")
	case !c.RouterID.Is4() || c.RouterID.IsUnspecified():
		bad("router_id", "%s is not a usable IPv4 address", c.RouterID)
	}
	switch {
	case c.ListenPort == 0 || c.ListenPort == -1:
		c.ListenPort = -1
	case c.ListenPort < -1 || c.ListenPort > 65535:
		bad("listen_port", "%d out of range (1..65535, or 0/-1 for none)", c.ListenPort)
	}
	for i, a := range c.ListenAddresses {
		if !a.IsValid() {
			bad(fmt.Sprintf("listen_addresses[%d]", i), "invalid address")
		}
	}
	switch c.Role {
	case "":
		c.Role = RoleActive
	case RoleActive, RoleStandby:
	default:
		bad("role", "%q is not active or standby", c.Role)
	}
	switch c.StandbyBy {
	case "":
		c.StandbyBy = StandbyMED
	case StandbyMED, StandbyPrepend:
	default:
		bad("standby_by", "%q is not med or prepend", c.StandbyBy)
	}
	if c.NextHop.IsValid() && (!c.NextHop.Is4() || c.NextHop.IsUnspecified()) {
		bad("next_hop", "%s is not a usable IPv4 address", c.NextHop)
	}
	if c.NextHop6.IsValid() && (!c.NextHop6.Is6() || c.NextHop6.Is4In6() || c.NextHop6.IsUnspecified()) {
		bad("next_hop6", "%s is not a usable IPv6 address", c.NextHop6)
	}
	peers := make([]Peer, len(c.Peers))
	seen := make(map[netip.Addr]bool)
	for i, p := range c.Peers {
		f := fmt.Sprintf("peers[%s]", p.Address)
		if !p.Address.IsValid() {
			f = fmt.Sprintf("peers[%d]", i)
			bad(f+".address", "must be set")
		} else {
			p.Address = p.Address.Unmap()
			if p.Address.IsUnspecified() || p.Address.IsMulticast() {
				bad(f+".address", "%s is not a unicast address", p.Address)
			}
			if seen[p.Address] {
				bad(f+".address", "duplicate peer")
			}
			seen[p.Address] = true
		}
		if p.ASN == 0 {
			bad(f+".asn", "must be set")
		}
		switch {
		case p.Port == 0:
			p.Port = DefaultPort
		case p.Port < 0 || p.Port > 65535:
			bad(f+".port", "%d out of range", p.Port)
		}
		switch {
		case p.HoldTime == 0:
			p.HoldTime = DefaultHoldTime
		case p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second:
			bad(f+".hold_time", "%s out of range (3s..65535s, RFC 4271 §4.2)", p.HoldTime)
		}
		p.HoldTime = p.HoldTime.Truncate(time.Second)
		switch {
		case p.ConnectRetry == 0:
			p.ConnectRetry = DefaultConnectRetry
		case p.ConnectRetry < time.Second:
			bad(f+".connect_retry", "%s is below 1s", p.ConnectRetry)
		}
		if p.LocalAddress.IsValid() && p.Address.IsValid() && p.LocalAddress.Unmap().Is4() != p.Address.Is4() {
			bad(f+".local_address", "%s is not of the peer's address family", p.LocalAddress)
		}
		if len(p.Password) > 80 {
			bad(f+".password", "longer than the 80 bytes TCP MD5 keys allow")
		}
		peers[i] = p
	}
	c.Peers = peers
	c.ListenAddresses = append([]netip.Addr(nil), c.ListenAddresses...)
	return c, errors.Join(errs...)
}
