package nsbed

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// PacketSocket is an AF_PACKET socket bound to one interface of a
// namespace: it sends whole Ethernet frames and receives the frames the
// interface sees, below every kernel stack and tool (a test's own wire).
type PacketSocket struct {
	fd      int
	ifindex int
	proto   uint16 // in network byte order
}

// PacketSocketOptions configure OpenPacketSocket.
type PacketSocketOptions struct {
	// AllProtocols receives every frame (ETH_P_ALL); otherwise IPv4 only.
	AllProtocols bool
	// IgnoreOutgoing leaves out the frames sent from the interface
	// (PACKET_IGNORE_OUTGOING): only arriving ones are received.
	IgnoreOutgoing bool
	// RcvBuf is the receive buffer in bytes (SO_RCVBUFFORCE); 0 keeps
	// the default.
	RcvBuf int
	// Timeout bounds each Recv; 0 means 50 ms.
	Timeout time.Duration
}

// OpenPacketSocket opens a packet socket on ifname inside the namespace.
// The socket belongs to the namespace for its whole life.
func (n *NS) OpenPacketSocket(ifname string, o PacketSocketOptions) (*PacketSocket, error) {
	s := &PacketSocket{fd: -1, proto: htons(unix.ETH_P_IP)}
	if o.AllProtocols {
		s.proto = htons(unix.ETH_P_ALL)
	}
	if o.Timeout == 0 {
		o.Timeout = 50 * time.Millisecond
	}
	err := n.do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		s.ifindex = ifi.Index
		if s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(s.proto)); err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if err := unix.Bind(s.fd, &unix.SockaddrLinklayer{Protocol: s.proto, Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if o.IgnoreOutgoing {
			if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
				return fmt.Errorf("PACKET_IGNORE_OUTGOING: %w", err)
			}
		}
		if o.RcvBuf > 0 {
			if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.RcvBuf); err != nil {
				return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
			}
		}
		tv := unix.NsecToTimeval(int64(o.Timeout))
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("[%s] packet socket on %s: %w", n.Short, ifname, err)
	}
	return s, nil
}

// Send transmits frame, a whole Ethernet frame, on the interface.
func (s *PacketSocket) Send(frame []byte) error {
	sa := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Protocol: s.proto, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	return unix.Sendto(s.fd, frame, 0, sa)
}

// Recv reads the next frame into buf and returns it with its packet type
// (unix.PACKET_HOST, PACKET_OTHERHOST, PACKET_OUTGOING, ...), or a nil
// frame when the timeout passed first.
func (s *PacketSocket) Recv(buf []byte) (frame []byte, pkttype uint8, err error) {
	n, from, err := unix.Recvfrom(s.fd, buf, 0)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return nil, 0, nil
	case err != nil:
		return nil, 0, err
	}
	if ll, ok := from.(*unix.SockaddrLinklayer); ok {
		pkttype = ll.Pkttype
	}
	return buf[:n], pkttype, nil
}

// Close closes the socket. Call it once no Recv or Send is under way.
func (s *PacketSocket) Close() error {
	if s.fd < 0 {
		return nil
	}
	fd := s.fd
	s.fd = -1
	return unix.Close(fd)
}

// htons converts a 16-bit value to network byte order.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
