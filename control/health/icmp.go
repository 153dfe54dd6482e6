package health

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/rs/zerolog"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ICMP socket kinds for ICMPSockets.Network and Options.ICMPNetwork. They
// name the IPv4 socket; an IPv6 target gets the same kind of ICMPv6 socket
// ("ip6:ipv6-icmp" or "udp6").
const (
	ICMPRaw          = "ip4:icmp" // raw socket, needs CAP_NET_RAW
	ICMPUnprivileged = "udp4"     // ping socket, needs net.ipv4.ping_group_range
)

// icmpFamily is what differs between ICMP and ICMPv6 sockets.
type icmpFamily struct {
	raw, unprivileged string // the networks of icmp.ListenPacket
	any               string // the wildcard address to listen on
	proto             int    // IANA protocol number, for icmp.ParseMessage
	echo, reply       icmp.Type
}

var (
	icmp4 = icmpFamily{ICMPRaw, ICMPUnprivileged, "0.0.0.0", 1, ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply}
	// ICMPv6 (RFC 4443): the kernel fills in the checksum, whose pseudo
	// header needs the source address, on raw and ping sockets alike.
	icmp6 = icmpFamily{"ip6:ipv6-icmp", "udp6", "::", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply}
)

// familyOf returns the ICMP family for ip.
func familyOf(ip netip.Addr) *icmpFamily {
	if ip.Unmap().Is4() {
		return &icmp4
	}
	return &icmp6
}

// ICMPSockets opens the ICMP and ICMPv6 sockets of ICMPCheckers: of kind
// Network (ICMPRaw or ICMPUnprivileged), or when Network is "" the raw one
// with a fallback to the unprivileged ping socket, remembering per family
// which worked. It is safe for concurrent use and shared by every ICMP
// monitor.
type ICMPSockets struct {
	Network string
	// Log gets one line when the raw socket is denied and the fallback used.
	Log zerolog.Logger

	mode, mode6 atomic.Value // string: the network that worked
}

// Listen opens one ICMP (IPv4) socket and reports whether it is raw.
func (s *ICMPSockets) Listen() (*icmp.PacketConn, bool, error) {
	return s.listen(&icmp4, &s.mode)
}

// Listen6 opens one ICMPv6 socket and reports whether it is raw.
func (s *ICMPSockets) Listen6() (*icmp.PacketConn, bool, error) {
	return s.listen(&icmp6, &s.mode6)
}

func (s *ICMPSockets) listen(f *icmpFamily, mode *atomic.Value) (*icmp.PacketConn, bool, error) {
	var network string
	switch s.Network {
	case ICMPRaw:
		network = f.raw
	case ICMPUnprivileged:
		network = f.unprivileged
	case "":
		network, _ = mode.Load().(string)
	default:
		return nil, false, fmt.Errorf("icmp socket: unknown kind %q", s.Network)
	}
	if network != "" {
		c, err := icmp.ListenPacket(network, f.any)
		if err != nil {
			return nil, false, fmt.Errorf("icmp socket %s: %w", network, err)
		}
		return c, network == f.raw, nil
	}
	c, rawErr := icmp.ListenPacket(f.raw, f.any)
	if rawErr == nil {
		mode.Store(f.raw)
		return c, true, nil
	}
	c, err := icmp.ListenPacket(f.unprivileged, f.any)
	if err != nil {
		return nil, false, fmt.Errorf("icmp socket: raw: %v; unprivileged: %w (allow the group in sysctl net.ipv4.ping_group_range)", rawErr, err)
	}
	mode.Store(f.unprivileged)
	s.Log.Info().Str("event", "health_icmp_socket").Str("network", f.unprivileged).Str("reason", rawErr.Error()).Msg("raw ICMP denied, using unprivileged ping sockets")
	return c, false, nil
}

// ICMPChecker sends one echo request (RFC 792; RFC 4443 4.1 for an IPv6
// IP) to IP per check and waits for the matching reply: same sequence
// number and payload, and same identifier ID on a raw socket (a ping
// socket's kernel rewrites the identifier and delivers only its own
// replies). A raw socket sees every ICMP packet of the host, including
// other monitors' replies, hence the matching.
type ICMPChecker struct {
	IP      netip.Addr
	ID      uint16
	Sockets *ICMPSockets

	seq atomic.Uint32
}

// Check sends one echo request with the next sequence number.
func (c *ICMPChecker) Check(ctx context.Context) error {
	seq := uint16(c.seq.Add(1))
	ip := c.IP.Unmap()
	f := familyOf(ip)
	listen := c.Sockets.Listen
	if f == &icmp6 {
		listen = c.Sockets.Listen6
	}
	conn, raw, err := listen()
	if err != nil {
		return err
	}
	defer conn.Close()
	defer deadlineFromContext(ctx, conn)()

	payload := make([]byte, 16)
	copy(payload, "dsrlb-hc")
	_, _ = crand.Read(payload[8:])
	msg := icmp.Message{Type: f.echo, Body: &icmp.Echo{ID: int(c.ID), Seq: int(seq), Data: payload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	var dst net.Addr = &net.IPAddr{IP: ip.AsSlice(), Zone: ip.Zone()}
	if !raw {
		dst = &net.UDPAddr{IP: ip.AsSlice(), Zone: ip.Zone()}
	}
	if _, err := conn.WriteTo(b, dst); err != nil {
		return fmt.Errorf("icmp send: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("icmp receive: %w", err)
		}
		if peerAddr(peer) != ip.WithZone("") {
			continue
		}
		rm, err := icmp.ParseMessage(f.proto, buf[:n])
		if err != nil || rm.Type != f.reply {
			continue
		}
		e, ok := rm.Body.(*icmp.Echo)
		if !ok || uint16(e.Seq) != seq || (raw && uint16(e.ID) != c.ID) || !bytes.Equal(e.Data, payload) {
			continue
		}
		return nil
	}
}

func peerAddr(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	p, _ := netip.AddrFromSlice(ip)
	return p.Unmap()
}
