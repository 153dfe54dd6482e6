package health

import (
	"context"
	"net"
	"net/netip"
)

// TCPChecker passes when a TCP connection to Addr (IPv4 or IPv6) is
// established. The
// connection is reset rather than closed (linger 0), as HAProxy does, so
// that frequent checks leave no TIME_WAIT sockets on the appliance.
type TCPChecker struct {
	Addr netip.AddrPort
	// Dial, when set, opens the connection (probes through the VIP).
	Dial DialFunc
}

// Check connects to c.Addr once.
func (c TCPChecker) Check(ctx context.Context) error {
	dial := c.Dial
	if dial == nil {
		dial = dialDirect
	}
	conn, err := dial(ctx, network("tcp", c.Addr.Addr()), c.Addr)
	if err != nil {
		return err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return conn.Close()
}
