package dpdk

/*
#include "dsrlb_dpdk.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Allocator takes empty mbufs from a pool in bursts for one lcore at a
// time: it owns a C array of packet.BurstSize mbuf pointers, so that
// only integers cross into C. It implements packet.Allocator (the worker
// cuts super-frames into its buffers). Distinct allocators over the same
// pool may be used concurrently.
type Allocator struct {
	pool uintptr // *struct rte_mempool
	arr  *burstArray
	room int
}

var _ packet.Allocator = (*Allocator)(nil)

// NewAllocator returns an allocator over p. Close it before p is freed.
// Control path.
func (p *Mempool) NewAllocator() (*Allocator, error) {
	if p == nil || p.mp == nil {
		return nil, fmt.Errorf("dpdk: NewAllocator: nil pool")
	}
	a := &Allocator{pool: uintptr(unsafe.Pointer(p.mp))}
	var arr uintptr
	if err := onMain(func() {
		arr = uintptr(C.dsrlb_ptr_array(packet.BurstSize))
		a.room = int(C.dsrlb_pool_data_room(C.uintptr_t(a.pool))) - Headroom
	}); err != nil {
		return nil, err
	}
	if arr == 0 {
		return nil, fmt.Errorf("dpdk: NewAllocator(%q): rte_zmalloc: out of memory", p.name)
	}
	a.arr = (*burstArray)(mbufPtr(arr))
	return a, nil
}

// Alloc fills pkts[:n], n = min(len(pkts), packet.BurstSize), with
// fresh single-segment mbufs (Off = Headroom, Len 0, Buf the data room)
// and returns n, or 0 when the pool has fewer than n free
// (rte_pktmbuf_alloc_bulk takes all or none). Cost: one cgo call, then a
// few loads per packet; no allocation.
func (a *Allocator) Alloc(pkts []packet.Packet) int {
	n := min(len(pkts), packet.BurstSize)
	if n == 0 || C.dsrlb_mbuf_alloc_bulk(C.uintptr_t(a.pool), C.uintptr_t(uintptr(unsafe.Pointer(a.arr))), C.uint(n)) != 0 {
		return 0
	}
	for i := range n {
		fillPacket(&pkts[i], mbufPtr(a.arr[i]))
	}
	return n
}

// FrameRoom returns the longest frame an mbuf of the pool holds after
// Headroom.
func (a *Allocator) FrameRoom() int { return a.room }

// Close frees the allocator's array; the mbufs it handed out stay valid.
func (a *Allocator) Close() {
	if a == nil || a.arr == nil {
		return
	}
	C.dsrlb_free_mem(C.uintptr_t(uintptr(unsafe.Pointer(a.arr))))
	a.arr = nil
}
