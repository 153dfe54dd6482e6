package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// UDPChecker sends Send to Addr (IPv4 or IPv6) and passes on any reply, or on one that
// contains Receive when Receive is set. An ICMP or ICMPv6 port unreachable (read as
// ECONNREFUSED on the connected socket) fails at once.
type UDPChecker struct {
	Addr          netip.AddrPort
	Send, Receive string
	// Dial, when set, opens the socket (probes through the VIP).
	Dial DialFunc
}

// Check sends one request and waits for one reply.
func (c UDPChecker) Check(ctx context.Context) error {
	dial := c.Dial
	if dial == nil {
		dial = dialDirect
	}
	conn, err := dial(ctx, network("udp", c.Addr.Addr()), c.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer deadlineFromContext(ctx, conn)()
	if _, err := conn.Write([]byte(c.Send)); err != nil {
		return fmt.Errorf("udp send: %w", err)
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("udp %s: port unreachable (%w)", c.Addr, syscall.ECONNREFUSED)
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("udp receive: %w", err)
	}
	if c.Receive != "" && !bytes.Contains(buf[:n], []byte(c.Receive)) {
		return fmt.Errorf("udp reply %q does not contain %q", truncate(buf[:n], 64), c.Receive)
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
