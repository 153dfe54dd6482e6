package pipeline

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// vip6Slot is one slot of Snapshot.vip6Slots: an IPv6 service by (VIP,
// protocol, port), or with protocol 0 the mark that vip is a VIP.
type vip6Slot struct {
	vip   [16]byte
	port  uint16
	proto uint8
	used  bool
	svc   int32
}

// vip6Hash places (vip, proto, port) in vip6Slots.
func vip6Hash(vip *[16]byte, proto uint8, port uint16) uint32 {
	le := binary.LittleEndian
	return mixKey(le.Uint64(vip[0:]) ^ le.Uint64(vip[8:])*0x9e3779b97f4a7c15 ^ (uint64(proto)<<16 | uint64(port)))
}

// find6 returns the slot value of (vip, proto, port), or -1.
func (s *Snapshot) find6(vip *[16]byte, proto uint8, port uint16) int32 {
	for i := vip6Hash(vip, proto, port) & s.vip6Mask; ; i = (i + 1) & s.vip6Mask {
		sl := &s.vip6Slots[i]
		if !sl.used {
			return -1
		}
		if sl.vip == *vip && sl.proto == proto && sl.port == port {
			return sl.svc
		}
	}
}

// insert6 records (vip, proto, port) as svc; false if already there.
func (s *Snapshot) insert6(vip *[16]byte, proto uint8, port uint16, svc int32) bool {
	i := vip6Hash(vip, proto, port) & s.vip6Mask
	for ; s.vip6Slots[i].used; i = (i + 1) & s.vip6Mask {
		if sl := &s.vip6Slots[i]; sl.vip == *vip && sl.proto == proto && sl.port == port {
			return false
		}
	}
	s.vip6Slots[i] = vip6Slot{vip: *vip, port: port, proto: proto, used: true, svc: svc}
	return true
}

// index6 indexes IPv6 service svc, to be Services[i].
func (s *Snapshot) index6(svc *Service, i int32) error {
	if !s.insert6(&svc.VIP6, svc.Proto, svc.Port, i) {
		return fmt.Errorf("duplicate (vip, protocol, port)")
	}
	s.insert6(&svc.VIP6, 0, 0, i) // the address mark, once per VIP
	s.has6 = true
	return nil
}

// LookupService6 returns the index of the IPv6 service for (vip, proto,
// port), trying the exact port first and then the all-ports service, or
// -1.
func (s *Snapshot) LookupService6(vip *[16]byte, proto uint8, port uint16) int {
	if i := s.find6(vip, proto, port); i >= 0 || port == 0 {
		return int(i)
	}
	return int(s.find6(vip, proto, 0))
}

// IsVIP6 reports whether vip is the address of an IPv6 service.
func (s *Snapshot) IsVIP6(vip *[16]byte) bool { return s.find6(vip, 0, 0) >= 0 }

// backendIndexByID returns the index in svc.Backends of the IPv6 backend
// with ID id, or -1 (a search over the IPv6 backends).
func (svc *Service) backendIndexByID(id uint32) int {
	for i := svc.n4; i < len(svc.Backends); i++ {
		if svc.Backends[i].ID == id {
			return i
		}
	}
	return -1
}

// BackendByAddr returns the index in svc.Backends of the backend with
// address a, of either family, or -1.
func (svc *Service) BackendByAddr(a netip.Addr) int {
	if a.Is4() {
		return svc.BackendIndex(addrU32(a))
	}
	for i := svc.n4; i < len(svc.Backends); i++ {
		if svc.Backends[i].Addr == a {
			return i
		}
	}
	return -1
}

// Overhead returns the bytes b's envelope adds in front of the client's
// IP packet: 0 (l2), 20 or 24 (IPv4, IPIP or GRE), 40 or 44 (IPv6).
func (b *Backend) Overhead() int { return b.hdrLen - EthernetMinSize }

// buildTemplate6 prebuilds the IPv6 envelope of an IPv6 backend (RFC 2473:
// next header 4 or 41 by the inner family; GRE over IPv6, RFC 7676: next
// header 47 and GRE protocol innerType): Ethernet to the next hop, hop
// limit 64, source the port's IPv6 address. Per packet only the traffic
// class, flow label and payload length are written.
func (b *Backend) buildTemplate6(m Mode, innerType uint16, innerProto uint8, port PortState) error {
	if port.IP6 == ([16]byte{}) {
		return fmt.Errorf("an IPv6 envelope needs the port's IPv6 address")
	}
	h := new([EthernetMinSize + IPv6HeaderSize + greSize]byte)
	copy(h[:12], b.hdr[:12])
	binary.BigEndian.PutUint16(h[12:], EtherTypeIPv6)
	ip := h[EthernetMinSize:]
	ip[0] = 0x60
	ip[ipv6NextHeader] = innerProto
	ip[ipv6HopLimit] = outerTTL
	copy(ip[ipv6Src:], port.IP6[:])
	dst := b.Addr.As16()
	copy(ip[ipv6Dst:], dst[:])
	over := IPv6HeaderSize
	if m == ModeGRE {
		ip[ipv6NextHeader] = ProtoGRE
		binary.BigEndian.PutUint16(ip[IPv6HeaderSize+2:], innerType)
		over += greSize
	}
	b.hdr6 = h
	b.hdrLen = EthernetMinSize + over
	b.maxTot = port.MTU - over
	return nil
}
