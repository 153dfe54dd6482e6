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

// Default descriptor counts per queue, used when PortConfig leaves them 0.
const (
	DefaultRxDesc = 1024
	DefaultTxDesc = 1024
)

// PortConfig are the settings of Configure.
type PortConfig struct {
	// Pool supplies the mbufs of every rx queue; required when nbRx > 0
	// unless Pools is given.
	Pool *Mempool
	// Pools, if not empty, replaces Pool: rx queue q takes its mbufs from
	// Pools[q % len(Pools)], e.g. one pool per worker lcore, so that the
	// mbufs of one queue are only ever touched by the lcore that polls it.
	Pools []*Mempool
	// RxDesc and TxDesc are descriptors per queue (0: DefaultRxDesc,
	// DefaultTxDesc), adjusted to the device's limits.
	RxDesc, TxDesc uint16
	// MTU is the initial MTU; 0 keeps the device default (1500).
	MTU uint16
	// RSSHash selects the RTE_ETH_RSS_* hash functions used with more
	// than one rx queue; 0 means IP addresses plus TCP and UDP ports.
	// It is masked by what the device supports (DevInfo.RSSOffloads).
	RSSHash uint64
}

// burstArray is a C array of packet.BurstSize mbuf pointers. They are
// handled as integers in Go: C memory needs no write barriers.
type burstArray = [packet.BurstSize]uintptr

// Port is a configured ethdev port: its id and one C array of
// packet.BurstSize mbuf pointers per rx and per tx queue. It implements
// packet.Port.
//
// A queue MUST be used by one goroutine (lcore) at a time; different queues
// may be used concurrently. Free is safe to call concurrently on distinct
// packets.
type Port struct {
	PortID
	rx, tx  []*burstArray // C memory, one per queue
	rssHash uint64
	rxDesc  uint16
	txDesc  uint16
}

var _ packet.Port = (*Port)(nil)

// Configure configures port id with nbRx receive and nbTx transmit queues
// (rte_eth_dev_configure), sets every queue up (rx from cfg.Pools or Pool) and
// allocates the burst arrays. With nbRx > 1 it enables RSS over cfg.RSSHash
// restricted to what the device supports; if the device supports none of it
// the queues are left to the driver's own distribution (RSSHash reports 0).
// The port is left stopped: call Start. Configure a port once; the Port
// owns the queues and its Close releases the device.
func Configure(id PortID, nbRx, nbTx uint16, cfg PortConfig) (*Port, error) {
	pools := cfg.Pools
	if len(pools) == 0 {
		pools = []*Mempool{cfg.Pool}
	}
	// The rx queues' pools as C pointers (no Go pointers: the array may
	// be passed to C); one nil entry when there are no rx queues.
	cpools := make([]*C.struct_rte_mempool, len(pools))
	for i, mp := range pools {
		if nbRx > 0 && (mp == nil || mp.mp == nil) {
			return nil, fmt.Errorf("dpdk: Configure(port %d): %d rx queues need a mempool", id, nbRx)
		}
		if mp != nil {
			cpools[i] = mp.mp
		}
	}
	rxd, txd := C.uint16_t(cfg.RxDesc), C.uint16_t(cfg.TxDesc)
	if rxd == 0 {
		rxd = DefaultRxDesc
	}
	if txd == 0 {
		txd = DefaultTxDesc
	}
	p := &Port{PortID: id}
	var rss C.uint64_t
	var rc C.int
	var op string
	err := onMain(func() {
		op = "rte_eth_dev_configure"
		rc = C.dsrlb_port_configure(C.uint16_t(id), C.uint16_t(nbRx), C.uint16_t(nbTx),
			C.uint64_t(cfg.RSSHash), C.uint16_t(cfg.MTU), &rss)
		if rc != 0 {
			return
		}
		op = "queue setup"
		rc = C.dsrlb_queues_setup(C.uint16_t(id), C.uint16_t(nbRx), C.uint16_t(nbTx), &rxd, &txd,
			&cpools[0], C.uint(len(cpools)))
		if rc != 0 {
			return
		}
		op = "rte_zmalloc_socket"
		p.rx = make([]*burstArray, nbRx)
		p.tx = make([]*burstArray, nbTx)
		for _, qs := range [][]*burstArray{p.rx, p.tx} {
			for q := range qs {
				a := uintptr(C.dsrlb_burst_array(C.uint16_t(id), packet.BurstSize))
				if a == 0 {
					rc = -C.ENOMEM
					return
				}
				qs[q] = (*burstArray)(mbufPtr(a))
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if rc != 0 {
		p.freeArrays()
		return nil, errorf(rc, "Configure(port %d, rx %d, tx %d): %s", id, nbRx, nbTx, op)
	}
	p.rssHash = uint64(rss)
	p.rxDesc, p.txDesc = uint16(rxd), uint16(txd)
	return p, nil
}

// NbRx returns the number of rx queues.
func (p *Port) NbRx() uint16 { return uint16(len(p.rx)) }

// NbTx returns the number of tx queues.
func (p *Port) NbTx() uint16 { return uint16(len(p.tx)) }

// RSSHash returns the RSS hash functions in use, 0 when RSS is off.
func (p *Port) RSSHash() uint64 { return p.rssHash }

// Desc returns the rx and tx descriptors per queue after adjustment to the
// device's limits.
func (p *Port) Desc() (rx, tx uint16) { return p.rxDesc, p.txDesc }

// Close closes the port (see PortID.Close) and frees its burst arrays. No
// goroutine may be in a burst call on it.
func (p *Port) Close() error {
	err := p.PortID.Close()
	p.freeArrays()
	return err
}

func (p *Port) freeArrays() {
	for _, qs := range [][]*burstArray{p.rx, p.tx} {
		for q, a := range qs {
			if a != nil {
				C.dsrlb_free_mem(C.uintptr_t(uintptr(unsafe.Pointer(a))))
				qs[q] = nil
			}
		}
	}
	p.rx, p.tx = nil, nil
}

// RxBurst receives up to min(len(pkts), packet.BurstSize) packets from
// rx queue q (rte_eth_rx_burst) into pkts and returns how many. Each Packet
// covers the mbuf's whole data room (Buf), with the frame at Off (normally
// Headroom) for Len bytes of the first segment. Cost: one cgo call, then a
// few loads per packet; no allocation. It panics if q is not a configured
// rx queue.
func (p *Port) RxBurst(q uint16, pkts []packet.Packet) int {
	arr := p.rx[q]
	n := min(len(pkts), packet.BurstSize)
	got := int(C.dsrlb_rx_burst(C.uint16_t(p.PortID), C.uint16_t(q),
		C.uintptr_t(uintptr(unsafe.Pointer(arr))), C.uint16_t(n)))
	for i := range got {
		fillPacket(&pkts[i], mbufPtr(arr[i]))
	}
	return got
}

// TxBurst queues up to min(len(pkts), packet.BurstSize) packets on tx
// queue q (rte_eth_tx_burst) and returns how many the driver took; those now
// belong to the driver. The caller keeps pkts[n:] and must send them again
// or Free them.
//
// Before sending, each packet's Off and Len are written back to its mbuf:
// data_off := Off, data_len := Len, and pkt_len changes by as much as
// data_len did (so a chain keeps its tail). Buf is not consulted. Cost: one
// cgo call plus a few stores per packet; no allocation. It panics if q is
// not a configured tx queue or a packet's Off/Len fall outside its buffer.
func (p *Port) TxBurst(q uint16, pkts []packet.Packet) int {
	arr := p.tx[q]
	n := min(len(pkts), packet.BurstSize)
	for i := range n {
		pk := &pkts[i]
		m := mbufPtr(pk.Handle)
		if pk.Off < 0 || pk.Len < 0 || pk.Off+pk.Len > int(*field16(m, offBufLen)) {
			panic(txBoundsError(pk))
		}
		dl := field16(m, offDataLen)
		pl := field32(m, offPktLen)
		*pl = *pl - uint32(*dl) + uint32(pk.Len)
		*dl = uint16(pk.Len)
		*field16(m, offDataOff) = uint16(pk.Off)
		arr[i] = pk.Handle
	}
	return int(C.dsrlb_tx_burst(C.uint16_t(p.PortID), C.uint16_t(q),
		C.uintptr_t(uintptr(unsafe.Pointer(arr))), C.uint16_t(n)))
}

func txBoundsError(pk *packet.Packet) error {
	return fmt.Errorf("dpdk: TxBurst: packet Off %d Len %d outside its %d-byte buffer",
		pk.Off, pk.Len, *field16(mbufPtr(pk.Handle), offBufLen))
}

// Free returns pkts (with all their segments) to their pools in one
// rte_pktmbuf_free_bulk pass. Packets with a zero Handle are skipped. The
// handles are chained through an mbuf dynamic field from Go, so any number
// of packets costs one cgo call and no allocation; it is safe for
// concurrent use on distinct packets.
func (p *Port) Free(pkts []packet.Packet) { FreePackets(pkts) }

// FreePackets is Port.Free for packets of any port or of AllocMbuf.
func FreePackets(pkts []packet.Packet) {
	off := eal.freeLinkOff
	var head, prev uintptr
	n := 0
	for i := range pkts {
		h := pkts[i].Handle
		if h == 0 {
			continue
		}
		if prev == 0 {
			head = h
		} else {
			*(*uintptr)(unsafe.Add(mbufPtr(prev), off)) = h
		}
		prev = h
		n++
	}
	if n == 0 {
		return
	}
	*(*uintptr)(unsafe.Add(mbufPtr(prev), off)) = 0
	C.dsrlb_free_chain(C.uintptr_t(head), C.uint(n), C.int(off))
}
