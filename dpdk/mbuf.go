package dpdk

/*
#include "dsrlb_dpdk.h"
*/
import "C"

import (
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// Byte offsets of struct rte_mbuf fields, computed by the C compiler against
// the installed headers; Go reads and writes mbufs through them without a
// cgo call.
const (
	offBufAddr = C.DSRLB_MBUF_BUF_ADDR // void *
	offDataOff = C.DSRLB_MBUF_DATA_OFF // uint16_t
	offNbSegs  = C.DSRLB_MBUF_NB_SEGS  // uint16_t
	offPort    = C.DSRLB_MBUF_PORT     // uint16_t
	offPktLen  = C.DSRLB_MBUF_PKT_LEN  // uint32_t
	offDataLen = C.DSRLB_MBUF_DATA_LEN // uint16_t
	offBufLen  = C.DSRLB_MBUF_BUF_LEN  // uint16_t
	offNext    = C.DSRLB_MBUF_NEXT     // struct rte_mbuf *

	maxLcore = C.DSRLB_MAX_LCORE
)

// Headroom is the room reserved in front of received frames
// (RTE_PKTMBUF_HEADROOM): a received Packet has Off == Headroom, so
// rewriters can prepend up to Headroom bytes of envelope in place.
const Headroom = 128

// DefaultDataRoom is the mbuf data room for NewPktMbufPool that holds a
// standard Ethernet frame in one segment after Headroom
// (RTE_MBUF_DEFAULT_BUF_SIZE: 2048 + Headroom).
const DefaultDataRoom = 2048 + Headroom

// Compile-time checks that the constants above match the installed DPDK.
var (
	_ [Headroom - C.DSRLB_MBUF_HEADROOM]struct{}
	_ [C.DSRLB_MBUF_HEADROOM - Headroom]struct{}
	_ [DefaultDataRoom - C.DSRLB_MBUF_DEFAULT_BUF_SIZE]struct{}
	_ [C.DSRLB_MBUF_DEFAULT_BUF_SIZE - DefaultDataRoom]struct{}
)

// mbufPtr turns a Packet.Handle back into the mbuf address. The mbuf is C
// memory, invisible to the garbage collector; going through memory keeps vet
// quiet about the uintptr conversion.
func mbufPtr(h uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&h))
}

func field16(m unsafe.Pointer, off uintptr) *uint16 { return (*uint16)(unsafe.Add(m, off)) }
func field32(m unsafe.Pointer, off uintptr) *uint32 { return (*uint32)(unsafe.Add(m, off)) }

// fillPacket points p at mbuf m: its whole data room, data offset and first
// segment length.
func fillPacket(p *packet.Packet, m unsafe.Pointer) {
	buf := *(*unsafe.Pointer)(unsafe.Add(m, offBufAddr))
	p.Buf = unsafe.Slice((*byte)(buf), *field16(m, offBufLen))
	p.Off = int(*field16(m, offDataOff))
	p.Len = int(*field16(m, offDataLen))
	p.Handle = uintptr(m)
}

// NbSegs returns the number of segments of the mbuf behind a Packet.Handle.
// A Packet covers the first segment only; a frame with more than one segment
// (larger than the pool's data room) should be dropped by callers that do
// not handle chains. It reads the mbuf from Go: no cgo call.
func NbSegs(h uintptr) uint16 { return *field16(mbufPtr(h), offNbSegs) }

// PktLen returns the total frame length over all segments of the mbuf behind
// a Packet.Handle (no cgo call).
func PktLen(h uintptr) uint32 { return *field32(mbufPtr(h), offPktLen) }

// RxPort returns the port an mbuf was received on, as set by the driver
// (no cgo call).
func RxPort(h uintptr) PortID { return PortID(*field16(mbufPtr(h), offPort)) }

// NextSeg returns the handle of the next segment of the mbuf behind a
// Packet.Handle, or 0 for the last one (no cgo call).
func NextSeg(h uintptr) uintptr {
	return uintptr(*(*unsafe.Pointer)(unsafe.Add(mbufPtr(h), offNext)))
}
