package appliance

import "testing"

func TestAFPacketDevice(t *testing.T) {
	for _, tc := range []struct {
		dev, want string
		room      uint16
	}{
		{"net_af_packet0,iface=eth0", "net_af_packet0,iface=eth0,framesz=65408,blocksz=2093056,framecnt=512", 65504},
		{"eth_af_packet1,iface=veth1,qpairs=2", "eth_af_packet1,iface=veth1,qpairs=2,framesz=65408,blocksz=2093056,framecnt=512", 65504},
		// The operator's ring is kept; the pool follows its frame size.
		{"net_af_packet0,iface=eth0,framesz=2048,framecnt=1024", "net_af_packet0,iface=eth0,framesz=2048,framecnt=1024", 0},
		{"net_af_packet0,iface=eth0,framesz=9216,blocksz=65536", "net_af_packet0,iface=eth0,framesz=9216,blocksz=65536", 9312},
		{"net_af_packet0,iface=eth0,framecnt=64", "net_af_packet0,iface=eth0,framecnt=64", 0},
		{"net_pcap0,iface=eth0", "net_pcap0,iface=eth0", 0},
		{"0000:01:00.0", "0000:01:00.0", 0},
	} {
		dev, room := afPacketDevice(tc.dev)
		if dev != tc.want || room != tc.room {
			t.Errorf("afPacketDevice(%q) = %q, %d; want %q, %d", tc.dev, dev, room, tc.want, tc.room)
		}
	}
}

func TestKernelRxMbufs(t *testing.T) {
	for _, tc := range []struct {
		queues int
		want   uint32
	}{{1, 127}, {2, 255}, {4, 511}} {
		if got := kernelRxMbufs(tc.queues); got != tc.want {
			t.Errorf("kernelRxMbufs(%d) = %d, want %d", tc.queues, got, tc.want)
		}
	}
	// One queue of 64 KB frames: about 8 MB of EAL memory.
	if b := kernelRxPoolBytes(1, 65504); b < 7<<20 || b > 9<<20 {
		t.Errorf("kernelRxPoolBytes(1, 65504) = %d", b)
	}
}
