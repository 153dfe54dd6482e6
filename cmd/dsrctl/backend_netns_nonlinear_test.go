//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// txRing is an AF_PACKET socket with a PACKET_TX_RING (TPACKET_V2), the way
// DPDK's net_af_packet transmits: the kernel builds each skb with only the
// link-layer header in its linear part and the rest of the frame in page
// fragments.
type txRing struct {
	fd    int
	ring  []byte
	frame int // next frame to fill
}

const (
	txFrameSize = 2048
	txFrames    = 2
	// The frame data starts at TPACKET2_HDRLEN - sizeof(struct
	// sockaddr_ll): TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) = 32.
	txDataOff = 32
)

func newTxRing(t *testing.T, n *testNetns, ifname string) *txRing {
	t.Helper()
	r := &txRing{}
	err := n.do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		r.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
			return fmt.Errorf("PACKET_VERSION: %w", err)
		}
		req := unix.TpacketReq{Block_size: txFrameSize * txFrames, Block_nr: 1, Frame_size: txFrameSize, Frame_nr: txFrames}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
			return fmt.Errorf("PACKET_TX_RING: %w", err)
		}
		if r.ring, err = unix.Mmap(fd, 0, txFrameSize*txFrames, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		if r.fd > 0 {
			unix.Close(r.fd)
		}
		t.Fatalf("tx ring on %s: %v", ifname, err)
	}
	t.Cleanup(func() {
		unix.Munmap(r.ring)
		unix.Close(r.fd)
	})
	return r
}

// send transmits one Ethernet frame through the ring and waits until the
// kernel has taken it.
func (r *txRing) send(t *testing.T, frame []byte) {
	t.Helper()
	f := r.ring[r.frame*txFrameSize : (r.frame+1)*txFrameSize]
	r.frame = (r.frame + 1) % txFrames
	status := (*uint32)(unsafe.Pointer(&f[0])) // tp_status
	if atomic.LoadUint32(status) != unix.TP_STATUS_AVAILABLE {
		t.Fatalf("tx ring frame busy (status %#x)", atomic.LoadUint32(status))
	}
	copy(f[txDataOff:], frame)
	binary.NativeEndian.PutUint32(f[4:], uint32(len(frame))) // tp_len
	atomic.StoreUint32(status, unix.TP_STATUS_SEND_REQUEST)
	if err := unix.Sendto(r.fd, nil, 0, nil); err != nil {
		t.Fatalf("sendto: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for atomic.LoadUint32(status) != unix.TP_STATUS_AVAILABLE {
		if s := atomic.LoadUint32(status); s == unix.TP_STATUS_WRONG_FORMAT || time.Now().After(deadline) {
			t.Fatalf("tx ring frame not sent (status %#x)", s)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBackendNetnsDecapNonLinear sends the envelopes from a TX ring, as a
// load balancer on DPDK's net_af_packet does: the backend's skb then holds
// only the Ethernet header in its linear part. The decapsulator must pull
// the headers it reads instead of passing such packets untouched (which a
// kernel without ipip/ip_gre drops).
func TestBackendNetnsDecapNonLinear(t *testing.T) {
	topo := newDSRTopology(t, false)
	lb, be := topo.lb, topo.be
	vip := tVIP.String()
	for _, mode := range []string{"ipip", "gre"} {
		out := be.mustDsrctl(t, "setup", "--vip", vip, "--mode", mode, "--bpffs", topo.bpffs)
		if !strings.Contains(out, "using the eBPF decapsulator") {
			t.Skip("this kernel has ipip/ip_gre: the kernel decapsulates, not eBPF")
		}
	}
	beMAC, lbMAC := linkMAC(t, be, "be0"), linkMAC(t, lb, "lb0")

	conn := listenUDP(t, be, netip.AddrPortFrom(tVIP, 5353))
	ring := newTxRing(t, lb, "lb0")
	client := netip.MustParseAddr("192.0.2.7")
	for i, mode := range []string{"ipip", "gre", "ipip", "gre"} {
		msg := fmt.Sprintf("%s-%d-", mode, i) + strings.Repeat("x", 200)
		ip := tEncap(mode, tLB, tBE, uint16(300+i), tIPv4(client, tVIP, 17, uint16(i), tUDP(40000, 5353, []byte(msg))))
		frame := append(append(append([]byte{}, beMAC...), lbMAC...), 0x08, 0x00)
		ring.send(t, append(frame, ip...))
		got, _ := receive(t, conn, 3*time.Second)
		if got != msg {
			t.Fatalf("%s envelope %d from a TX ring: got %.20q delivered, want %.20q", mode, i, got, msg)
		}
	}
	ipip, gre := decapCounts(backendStatusOf(t, be, topo.bpffs), "be0")
	if ipip != 2 || gre != 2 {
		t.Errorf("got counters ipip=%d gre=%d, want 2 each", ipip, gre)
	}
}
