package appliance

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dsrlb/dsrlb/dpdk"
	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Whole GSO/GRO super-frames from net_af_packet.
//
// DPDK 22.11's net_af_packet copies each frame of its TPACKET_V2 ring into
// one mbuf; a frame longer than a ring frame arrives cut. Its default ring
// frame is 2048 bytes, while a peer's kernel with TSO/GSO or GRO hands over
// TCP frames of up to 64 KB (the worker segments them). Unless the device
// string sets the ring itself, dsrlb asks for ring frames that hold such a
// frame whole, and gives the port's rx queues a pool of mbufs large enough
// for them: the PMD refuses the queue when a ring frame's data (the frame
// minus 32 bytes of tpacket2 header, TPACKET2_HDRLEN - sizeof(struct
// sockaddr_ll)) exceeds an mbuf's data room after the headroom.
const (
	// afPacketFrameSize is a ring frame whose data fits an mbuf data room
	// (a uint16) after the headroom, a multiple of TPACKET_ALIGNMENT (16).
	// The kernel puts a frame's MAC header 80 bytes in, so frames of up to
	// 65328 bytes arrive whole: a TSO frame is at most ~65.2 KB.
	afPacketFrameSize = 65408
	// afPacketBlockSize is the smallest page-aligned block that holds a
	// whole number of such frames (32; 2 MB less a page): the PMD finds
	// frame i at i x framesz in the ring, so a block must not end in a
	// gap.
	afPacketBlockSize = 32 * afPacketFrameSize
	// afPacketFrames is the PMD's default frame count: the ring holds as
	// many frames as before, of 64 KB each. Its memory (locked, per queue)
	// is that for rx and again for tx: 2 x 512 x 64 KB = 64 MB.
	afPacketFrames = 512
	// tpacketOverhead is what the PMD subtracts from a ring frame for its
	// rx queue's check against the mbuf data room.
	tpacketOverhead = 32
)

// afPacketDevice returns device string dev, for net_af_packet with ring
// frames that hold a 64 KB frame unless dev sets framesz, blocksz or
// framecnt itself, and the mbuf data room the port's rx queues then need:
// 0 when the default pool's (dpdk.DefaultDataRoom) will do, as for any
// other driver.
func afPacketDevice(dev string) (string, uint16) {
	name, args, _ := strings.Cut(dev, ",")
	name = strings.TrimSpace(name)
	if !strings.HasPrefix(name, "net_af_packet") && !strings.HasPrefix(name, "eth_af_packet") {
		return dev, 0
	}
	frame, set := 2048, false // the PMD's default frame
	for _, kv := range strings.Split(args, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch k {
		case "framesz":
			if n, err := strconv.Atoi(v); err == nil {
				frame = n
			}
			set = true
		case "blocksz", "framecnt":
			set = true
		}
	}
	if !set {
		dev += fmt.Sprintf(",framesz=%d,blocksz=%d,framecnt=%d", afPacketFrameSize, afPacketBlockSize, afPacketFrames)
		frame = afPacketFrameSize
	}
	room := frame - tpacketOverhead + dpdk.Headroom
	if room <= dpdk.DefaultDataRoom {
		return dev, 0
	}
	return dev, uint16(min(room, 0xffff))
}

// kernelRxMbufs is the size of a pool that only feeds the rx queues of
// drivers that copy each received frame into a fresh mbuf, freed once it
// is sent or dropped (net_af_packet, whose tx copies too): per queue a
// worker holds at most two bursts and the driver fills a third. The pool
// has no per-lcore cache, which would hold mbufs of its own (the driver
// takes one mbuf at a time anyway). Rounded up to a power of two minus
// one: 127 for one queue.
func kernelRxMbufs(queues int) uint32 {
	need := uint32(queues) * 3 * packet.BurstSize
	n := uint32(1)
	for n-1 < need {
		n <<= 1
	}
	return n - 1
}

// kernelRxPoolBytes is about how much EAL memory newKernelRxPool takes for
// queues rx queues of data room room: mbufs with their headers (struct
// rte_mbuf and the mempool's own, 256 bytes at most), for the EAL memory
// (-m) a configuration needs: about 8 MB for one queue of 64 KB frames.
func kernelRxPoolBytes(queues int, room uint16) uint64 {
	return uint64(kernelRxMbufs(queues)) * (uint64(room) + 256)
}

// newKernelRxPool creates the pool of the rx queues that need a larger
// data room than the default pool's (afPacketDevice): queues rx queues in
// all.
func newKernelRxPool(queues int, room uint16) (*dpdk.Mempool, error) {
	return dpdk.NewPktMbufPool("dsrlb_kernel_rx", kernelRxMbufs(queues), 0, room, dpdk.SocketAny)
}

// superframeLog logs once per port that it dropped super-frames the
// workers cannot segment (gso_superframe, flagged in
// pipeline.Counters.SuperframePorts), with the peer setting that stops
// them. It reads the workers' counters once a second.
type superframeLog struct {
	logged     uint64 // ports already logged
	quit, done chan struct{}
}

func (l *superframeLog) start(d *Dataplane) {
	l.quit, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-l.quit:
				return
			case <-t.C:
				l.check(d)
			}
		}
	}()
}

// stop ends the goroutine of start, if any, and waits for it.
func (l *superframeLog) stop() {
	if l.quit != nil {
		close(l.quit)
		<-l.done
		l.quit = nil
	}
}

// check logs the ports flagged since the last check.
func (l *superframeLog) check(d *Dataplane) {
	var flagged uint64
	for _, c := range d.Counters() {
		flagged |= c.SuperframePorts
	}
	for i, name := range d.names {
		bit := uint64(1) << uint(i)
		if i >= 64 || flagged&bit == 0 || l.logged&bit != 0 {
			continue
		}
		l.logged |= bit
		peer := "the peer"
		if iface := afPacketIface(d.devices[i]); iface != "" {
			peer = "the interface that sends to " + iface
		}
		d.log.Warn().Str("event", "superframe_dropped").Str("port", name).Str("device", d.devices[i]).
			Str("peer_setting", "ethtool -K <peer> tso off gso off gro off tx-udp-segmentation off").
			Msgf("port %s drops frames longer than its MTU that dsrlb cannot segment (UDP GSO, or cut by the driver's ring frame), counted as gso_superframe; "+
				"turn segmentation offloads off on %s: ethtool -K <peer> tso off gso off gro off tx-udp-segmentation off", name, peer)
	}
}

// afPacketIface returns the kernel interface of a net_af_packet device
// string ("net_af_packet0,iface=veth0"), or "".
func afPacketIface(device string) string {
	if !strings.HasPrefix(device, "net_af_packet") {
		return ""
	}
	for _, kv := range strings.Split(device, ",")[1:] {
		if v, ok := strings.CutPrefix(kv, "iface="); ok {
			return v
		}
	}
	return ""
}
