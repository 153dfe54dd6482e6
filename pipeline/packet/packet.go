// Package packet is the seam between the fast path and a driver: the
// Packet a burst carries, the Port a worker receives from and sends to, and
// the Allocator it takes empty buffers from. The dpdk binding implements
// Port and Allocator over mbufs, tests implement them over slices, and
// package pipeline drives them; neither side sees the other. This package
// MUST NOT import any other package of dsrlb.
package packet

// BurstSize is the most packets one rx or tx burst moves.
const BurstSize = 32

// Packet is one frame of a burst. Buf is the buffer's whole data room: the
// frame is Buf[Off:Off+Len] and Buf[:Off] is headroom that rewriters may
// prepend into. Handle identifies the underlying buffer (a DPDK mbuf
// pointer) and is opaque to this package.
//
// A Packet MUST NOT be kept past the burst it came in: its memory goes back
// to the pool when the packet is sent or freed.
type Packet struct {
	Buf    []byte
	Off    int
	Len    int
	Handle uintptr
}

// Data returns the frame bytes.
func (p *Packet) Data() []byte { return p.Buf[p.Off : p.Off+p.Len] }

// Port is one queue-addressable packet port: a DPDK ethdev (NIC or tap) or a
// test fake. Each method is one burst operation; implementations cross into
// C at most once per call.
type Port interface {
	// RxBurst fills pkts with up to len(pkts) received packets from queue q
	// and returns how many.
	RxBurst(q uint16, pkts []Packet) int
	// TxBurst queues pkts for transmission on queue q, writing each Off and
	// Len back to its buffer first, and returns how many were taken. The
	// caller still owns (and must free) pkts[n:].
	TxBurst(q uint16, pkts []Packet) int
	// Free returns pkts to their pool.
	Free(pkts []Packet)
}

// Allocator hands out empty packet buffers: the worker cuts the TCP
// super-frames of ports that read a kernel's frames into segments held in
// them (see pipeline.Worker.SetAllocator). Each call crosses into C at most
// once.
type Allocator interface {
	// Alloc fills pkts with empty packets (Len 0, Off after the headroom,
	// Buf the whole data room) and returns how many it filled, from the
	// first: len(pkts), or fewer when the pool runs short. The caller owns
	// them (hands them to a TxBurst or Free).
	Alloc(pkts []Packet) int
	// FrameRoom returns the longest frame a packet of Alloc holds after
	// its headroom.
	FrameRoom() int
}
