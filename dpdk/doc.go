// Package dpdk is dsrlb's thin binding to DPDK 22.11 (Debian's libdpdk-dev):
// the EAL and its lcores, packet mbuf pools, ethdev ports and the burst
// rx/tx fast path. It is the only package of the project with import "C".
//
// # Control path and fast path
//
// Control calls (Init, port configuration, stats, launching lcores) are
// ordinary Go functions returning errors; they are run on the EAL main lcore
// thread (see Init) and so are serialised against each other. They cost a
// channel round trip plus one or a few cgo calls and are not meant to be
// called per packet.
//
// The fast path is the Port type, which implements packet.Port. Each of
// RxBurst, TxBurst and Free makes exactly one cgo call whatever the burst
// size, passes only integers to C (so cgo's pointer checks cost nothing),
// reads and writes mbuf fields from Go through offsets computed by the C
// compiler, and allocates nothing.
//
// # Memory rules
//
// A packet.Packet returned by RxBurst or AllocMbuf points into an mbuf, which
// is C memory owned by a mempool. Its Buf MUST NOT be used after the packet
// was handed to TxBurst (and taken) or Free: the mbuf goes back to the pool
// and is reused by the next burst. Frames are single-segment as long as the
// pool's data room (DefaultDataRoom) holds the largest frame; check NbSegs
// if a driver may chain segments.
//
// # Errors
//
// DPDK reports failures as negative errno values or through rte_errno;
// this package returns them as Errno wrapped with the failing operation.
// errors.Is(err, syscall.EEXIST) and the like work on them.
package dpdk
