package nsbed

import (
	"context"
	"net"
)

// DialFrom is DialContext for TCP (network tcp, tcp4 or tcp6) from local
// address laddr (host:port; an empty host or port 0 lets the kernel pick),
// e.g. to open a connection from a given client port again.
func (n *NS) DialFrom(ctx context.Context, network, laddr, addr string) (net.Conn, error) {
	la, err := net.ResolveTCPAddr(network, laddr)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	err = n.do(func() error {
		var err error
		c, err = (&net.Dialer{LocalAddr: la}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
