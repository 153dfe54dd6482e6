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
)

// ICMP socket kinds for ICMPSockets.Network and Options.ICMPNetwork.
const (
	ICMPRaw          = "ip4:icmp" // raw socket, needs CAP_NET_RAW
	ICMPUnprivileged = "udp4"     // ping socket, needs net.ipv4.ping_group_range
)

// ICMPSockets opens the ICMP sockets of ICMPCheckers: of kind Network
// (ICMPRaw or ICMPUnprivileged), or when Network is "" the raw one with a
// fallback to the unprivileged ping socket, remembering which worked. It is
// safe for concurrent use and shared by every ICMP monitor.
type ICMPSockets struct {
	Network string
	// Log gets one line when the raw socket is denied and the fallback used.
	Log zerolog.Logger

	mode atomic.Value // string: the network that worked
}

// Listen opens one socket and reports whether it is raw.
func (s *ICMPSockets) Listen() (*icmp.PacketConn, bool, error) {
	network := s.Network
	if network == "" {
		network, _ = s.mode.Load().(string)
	}
	if network != "" {
		c, err := icmp.ListenPacket(network, "0.0.0.0")
		if err != nil {
			return nil, false, fmt.Errorf("icmp socket %s: %w", network, err)
		}
		return c, network == ICMPRaw, nil
	}
	c, rawErr := icmp.ListenPacket(ICMPRaw, "0.0.0.0")
	if rawErr == nil {
		s.mode.Store(ICMPRaw)
		return c, true, nil
	}
	c, err := icmp.ListenPacket(ICMPUnprivileged, "0.0.0.0")
	if err != nil {
		return nil, false, fmt.Errorf("icmp socket: raw: %v; unprivileged: %w (allow the group in sysctl net.ipv4.ping_group_range)", rawErr, err)
	}
	s.mode.Store(ICMPUnprivileged)
	s.Log.Info().Str("event", "health_icmp_socket").Str("reason", rawErr.Error()).Msg("raw ICMP denied, using unprivileged ping sockets")
	return c, false, nil
}

// ICMPChecker sends one echo request (RFC 792) to IP per check and waits
// for the matching reply: same sequence number and payload, and same
// identifier ID on a raw socket (a ping socket's kernel rewrites the
// identifier and delivers only its own replies). A raw socket sees every
// ICMP packet of the host, including other monitors' replies, hence the
// matching.
type ICMPChecker struct {
	IP      netip.Addr
	ID      uint16
	Sockets *ICMPSockets

	seq atomic.Uint32
}

// Check sends one echo request with the next sequence number.
func (c *ICMPChecker) Check(ctx context.Context) error {
	seq := uint16(c.seq.Add(1))
	conn, raw, err := c.Sockets.Listen()
	if err != nil {
		return err
	}
	defer conn.Close()
	defer deadlineFromContext(ctx, conn)()
	payload := make([]byte, 16)
	copy(payload, "dsrlb-hc")
	_, _ = crand.Read(payload[8:])
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(c.ID), Seq: int(seq), Data: payload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	var dst net.Addr = &net.IPAddr{IP: c.IP.AsSlice()}
	if !raw {
		dst = &net.UDPAddr{IP: c.IP.AsSlice()}
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
		if peerAddr(peer) != c.IP {
			continue
		}
		rm, err := icmp.ParseMessage(1, buf[:n]) // 1: IANA protocol number of ICMPv4
		if err != nil || rm.Type != ipv4.ICMPTypeEchoReply {
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
