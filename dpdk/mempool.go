package dpdk

/*
#include "dsrlb_dpdk.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Mempool is a pool of packet mbufs (struct rte_mempool).
type Mempool struct {
	mp   *C.struct_rte_mempool
	name string
}

// NewPktMbufPool creates a pool of n packet mbufs with a per-lcore cache of
// cache mbufs and dataRoom bytes of buffer each (Headroom included; use
// DefaultDataRoom for single-segment standard frames) on NUMA socket socket
// (SocketAny for any). n is best one less than a power of two; cache at most
// RTE_MEMPOOL_CACHE_MAX_SIZE (512) and a divisor of n is recommended.
//
// Every rx queue holds its descriptor count of mbufs and every lcore cache
// up to 1.5×cache, so n must exceed their sum plus the packets in flight; a
// net_pcap port with infinite_rx=1 also keeps the whole capture in mbufs.
// Control path: runs on the main lcore.
func NewPktMbufPool(name string, n uint32, cache uint32, dataRoom uint16, socket int) (*Mempool, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var mp *C.struct_rte_mempool
	var cerr C.int
	if err := onMain(func() {
		mp = C.dsrlb_pool_create(cname, C.uint(n), C.uint(cache), C.uint16_t(dataRoom), C.int(socket), &cerr)
	}); err != nil {
		return nil, err
	}
	if mp == nil {
		return nil, errorf(cerr, "rte_pktmbuf_pool_create(%q, n=%d, cache=%d, room=%d)", name, n, cache, dataRoom)
	}
	return &Mempool{mp: mp, name: name}, nil
}

// Name returns the pool's name.
func (p *Mempool) Name() string { return p.name }

// Avail returns how many mbufs are free in the pool, per-lcore caches
// included (one cgo call).
func (p *Mempool) Avail() uint32 { return uint32(C.rte_mempool_avail_count(p.mp)) }

// InUse returns how many mbufs are allocated from the pool (one cgo call).
func (p *Mempool) InUse() uint32 { return uint32(C.rte_mempool_in_use_count(p.mp)) }

// Free releases the pool. All its mbufs MUST have been returned and no port
// queue may still use it (close the ports first). It does nothing after
// Cleanup.
func (p *Mempool) Free() {
	if p == nil || p.mp == nil {
		return
	}
	mp := p.mp
	p.mp = nil
	_ = onMain(func() { C.rte_mempool_free(mp) }) // after Cleanup the memory is gone anyway
}

// AllocMbuf takes an mbuf from pool and copies data into it after Headroom,
// returning it as a Packet the caller owns (hand it to TxBurst or Free). It
// is meant for tests and the slow path: one cgo call plus a copy.
func AllocMbuf(pool *Mempool, data []byte) (packet.Packet, error) {
	var pk packet.Packet
	if pool == nil || pool.mp == nil {
		return pk, errors.New("dpdk: AllocMbuf: nil pool")
	}
	h := uintptr(C.dsrlb_mbuf_alloc(C.uintptr_t(uintptr(unsafe.Pointer(pool.mp)))))
	if h == 0 {
		return pk, fmt.Errorf("dpdk: AllocMbuf: pool %q is empty", pool.name)
	}
	m := mbufPtr(h)
	fillPacket(&pk, m)
	if pk.Off+len(data) > len(pk.Buf) {
		FreeHandle(h)
		return packet.Packet{}, fmt.Errorf("dpdk: AllocMbuf: %d bytes do not fit in %d after headroom %d",
			len(data), len(pk.Buf)-pk.Off, pk.Off)
	}
	pk.Len = copy(pk.Buf[pk.Off:], data)
	*field16(m, offDataLen) = uint16(pk.Len)
	*field32(m, offPktLen) = uint32(pk.Len)
	return pk, nil
}

// FreeHandle returns one mbuf (all its segments) to its pool: one cgo call.
func FreeHandle(h uintptr) {
	if h != 0 {
		C.dsrlb_mbuf_free(C.uintptr_t(h))
	}
}
