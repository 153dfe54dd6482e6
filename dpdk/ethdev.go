package dpdk

/*
#include "dsrlb_dpdk.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// PortID is an ethdev port id. Its methods are control-path calls: each runs
// on the main lcore (a channel round trip) and makes one or a few cgo calls.
type PortID uint16

// Count returns the number of available ethdev ports (one cgo call).
func Count() uint16 { return uint16(C.rte_eth_dev_count_avail()) }

// PortByName returns the port whose ethdev name is name: the device name of
// the devargs ("net_pcap0" for "net_pcap0,rx_pcap=in.pcap"), or the PCI
// address ("0000:01:00.0") of a NIC.
func PortByName(name string) (PortID, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var id C.uint16_t
	var rc C.int
	if err := onMain(func() { rc = C.rte_eth_dev_get_port_by_name(cname, &id) }); err != nil {
		return 0, err
	}
	if rc != 0 {
		return 0, errorf(rc, "port %q", name)
	}
	return PortID(id), nil
}

// DevargsName returns the device name of devargs: the part before the first
// comma ("net_pcap0" for "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap").
func DevargsName(devargs string) string {
	name, _, _ := strings.Cut(devargs, ",")
	return strings.TrimSpace(name)
}

// AttachPort probes (hot-plugs) the device described by devargs, a vdev such
// as "net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap" or "net_tap0,iface=dsr0",
// or a PCI address, and returns its port. If a port with the device's name
// exists already (probed at Init from --vdev or the PCI bus) it is returned
// as is and the rest of devargs is ignored.
func AttachPort(devargs string) (PortID, error) {
	name := DevargsName(devargs)
	if name == "" {
		return 0, fmt.Errorf("dpdk: AttachPort(%q): empty device name", devargs)
	}
	if id, err := PortByName(name); err == nil {
		return id, nil
	}
	cargs := C.CString(devargs)
	defer C.free(unsafe.Pointer(cargs))
	var rc C.int
	if err := onMain(func() { rc = C.dsrlb_dev_probe(cargs) }); err != nil {
		return 0, err
	}
	if rc != 0 {
		return 0, errorf(rc, "rte_dev_probe(%q)", devargs)
	}
	id, err := PortByName(name)
	if err != nil {
		return 0, fmt.Errorf("dpdk: AttachPort(%q): probed, but %w", devargs, err)
	}
	return id, nil
}

// call runs a DPDK call returning 0 or a negative errno on the main lcore.
func call(f func() C.int, format string, args ...any) error {
	var rc C.int
	if err := onMain(func() { rc = f() }); err != nil {
		return err
	}
	if rc != 0 {
		return errorf(rc, format, args...)
	}
	return nil
}

// Name returns the port's ethdev name.
func (id PortID) Name() (string, error) {
	var buf [C.DSRLB_ETH_NAME_MAX_LEN]C.char
	if err := call(func() C.int { return C.rte_eth_dev_get_name_by_port(C.uint16_t(id), &buf[0]) },
		"rte_eth_dev_get_name_by_port(%d)", id); err != nil {
		return "", err
	}
	return C.GoString(&buf[0]), nil
}

// Start starts the port (rte_eth_dev_start): queues must be set up
// (Configure).
func (id PortID) Start() error {
	return call(func() C.int { return C.rte_eth_dev_start(C.uint16_t(id)) }, "rte_eth_dev_start(port %d)", id)
}

// Stop stops the port (rte_eth_dev_stop). No lcore may be in a burst call on
// it.
func (id PortID) Stop() error {
	return call(func() C.int { return C.rte_eth_dev_stop(C.uint16_t(id)) }, "rte_eth_dev_stop(port %d)", id)
}

// Close stops the port if needed, closes it (rte_eth_dev_close) and removes
// its device (rte_dev_remove), so that the id is released and the same
// devargs can be attached again. A net_pcap port flushes its tx_pcap file
// here.
func (id PortID) Close() error {
	_ = id.Stop() // rte_eth_dev_close of a started port fails on some PMDs
	return call(func() C.int { return C.dsrlb_port_close(C.uint16_t(id)) }, "close port %d", id)
}

// MAC returns the port's Ethernet address.
func (id PortID) MAC() ([6]byte, error) {
	var mac [6]byte
	var v C.uint64_t
	if err := call(func() C.int { return C.dsrlb_mac(C.uint16_t(id), &v) }, "rte_eth_macaddr_get(port %d)", id); err != nil {
		return mac, err
	}
	for i := range mac {
		mac[i] = byte(v >> (8 * (5 - i)))
	}
	return mac, nil
}

// SetMTU sets the port's MTU (rte_eth_dev_set_mtu): the L3 size, Ethernet
// header and CRC excluded.
func (id PortID) SetMTU(mtu uint16) error {
	return call(func() C.int { return C.rte_eth_dev_set_mtu(C.uint16_t(id), C.uint16_t(mtu)) },
		"rte_eth_dev_set_mtu(port %d, %d)", id, mtu)
}

// MTU returns the port's MTU.
func (id PortID) MTU() (uint16, error) {
	var mtu C.uint16_t
	err := call(func() C.int { return C.rte_eth_dev_get_mtu(C.uint16_t(id), &mtu) }, "rte_eth_dev_get_mtu(port %d)", id)
	return uint16(mtu), err
}

// SetPromiscuous enables or disables promiscuous mode. Drivers without it
// return an error wrapping syscall.ENOTSUP.
func (id PortID) SetPromiscuous(on bool) error {
	if on {
		return call(func() C.int { return C.rte_eth_promiscuous_enable(C.uint16_t(id)) },
			"rte_eth_promiscuous_enable(port %d)", id)
	}
	return call(func() C.int { return C.rte_eth_promiscuous_disable(C.uint16_t(id)) },
		"rte_eth_promiscuous_disable(port %d)", id)
}

// Link is a port's link state.
type Link struct {
	Up         bool
	SpeedMbps  uint32 // 0 when unknown
	FullDuplex bool
	Autoneg    bool
}

// Link returns the port's link state without waiting for autonegotiation
// (rte_eth_link_get_nowait).
func (id PortID) Link() (Link, error) {
	var up, duplex, autoneg C.int
	var speed C.uint32_t
	err := call(func() C.int { return C.dsrlb_link(C.uint16_t(id), &up, &speed, &duplex, &autoneg) },
		"rte_eth_link_get_nowait(port %d)", id)
	return Link{Up: up != 0, SpeedMbps: uint32(speed), FullDuplex: duplex != 0, Autoneg: autoneg != 0}, err
}

// Stats are a port's basic counters (struct rte_eth_stats), totals since
// start or the last ResetStats.
type Stats struct {
	IPackets uint64 // packets received
	OPackets uint64 // packets sent
	IBytes   uint64 // bytes received
	OBytes   uint64 // bytes sent
	IMissed  uint64 // packets dropped by the device because rx queues were full
	IErrors  uint64 // erroneous packets received
	OErrors  uint64 // packets that failed to send
	RxNoMbuf uint64 // rx mbuf allocation failures (pool exhausted)
}

// Stats returns the port's counters (rte_eth_stats_get).
func (id PortID) Stats() (Stats, error) {
	var s C.struct_rte_eth_stats
	if err := call(func() C.int { return C.rte_eth_stats_get(C.uint16_t(id), &s) }, "rte_eth_stats_get(port %d)", id); err != nil {
		return Stats{}, err
	}
	return Stats{
		IPackets: uint64(s.ipackets),
		OPackets: uint64(s.opackets),
		IBytes:   uint64(s.ibytes),
		OBytes:   uint64(s.obytes),
		IMissed:  uint64(s.imissed),
		IErrors:  uint64(s.ierrors),
		OErrors:  uint64(s.oerrors),
		RxNoMbuf: uint64(s.rx_nombuf),
	}, nil
}

// ResetStats zeroes the port's counters (rte_eth_stats_reset).
func (id PortID) ResetStats() error {
	return call(func() C.int { return C.rte_eth_stats_reset(C.uint16_t(id)) }, "rte_eth_stats_reset(port %d)", id)
}

// DevInfo describes a port's device (from struct rte_eth_dev_info).
type DevInfo struct {
	Driver      string // driver name, e.g. "net_pcap"
	IfIndex     uint32 // kernel interface index, 0 if none
	MinMTU      uint16
	MaxMTU      uint16
	MaxRxPktLen uint32
	MaxRxQueues uint16
	MaxTxQueues uint16
	// RSSOffloads is the set of RTE_ETH_RSS_* hash functions the device
	// supports; 0 means no RSS.
	RSSOffloads uint64
	Socket      int // NUMA socket, SocketAny if unknown
}

// Info returns the port's device information (rte_eth_dev_info_get).
func (id PortID) Info() (DevInfo, error) {
	var ci C.struct_dsrlb_info
	if err := call(func() C.int { return C.dsrlb_info(C.uint16_t(id), &ci) }, "rte_eth_dev_info_get(port %d)", id); err != nil {
		return DevInfo{}, err
	}
	return DevInfo{
		Driver:      C.GoString(ci.driver_name),
		IfIndex:     uint32(ci.if_index),
		MinMTU:      uint16(ci.min_mtu),
		MaxMTU:      uint16(ci.max_mtu),
		MaxRxPktLen: uint32(ci.max_rx_pktlen),
		MaxRxQueues: uint16(ci.max_rx_queues),
		MaxTxQueues: uint16(ci.max_tx_queues),
		RSSOffloads: uint64(ci.flow_type_rss_offloads),
		Socket:      int(ci.socket),
	}, nil
}
