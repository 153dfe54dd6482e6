//go:build linux

package decap

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Mode is a set of encapsulations the decapsulator strips for one VIP. It is
// the value type of the VIP maps, so one VIP can be served over both IPIP and
// GRE and each mode can be torn down on its own. A mode covers both outer
// families: the load balancer picks the envelope's family by the backend's
// address, not by the VIP's.
type Mode uint32

const (
	// IPIP strips an outer IPv4 header with protocol 4 (RFC 2003) or 41
	// (6in4, RFC 4213), or an outer IPv6 header with next header 4 or 41
	// (RFC 2473).
	IPIP Mode = 1 << 0
	// GRE strips an outer IPv4 header with protocol 47, or an outer IPv6
	// header with next header 47, and a 4-byte GRE base header carrying
	// protocol 0x0800 or 0x86DD (RFC 2784, no checksum, key or sequence
	// number).
	GRE Mode = 1 << 1
)

// String returns "ipip", "gre", "ipip+gre" or "none".
func (m Mode) String() string {
	switch m & (IPIP | GRE) {
	case IPIP:
		return "ipip"
	case GRE:
		return "gre"
	case IPIP | GRE:
		return "ipip+gre"
	}
	return "none"
}

// Indexes of the per-CPU counters in the stats map. They count packets of
// either outer family.
const (
	// CounterIPIP counts IPIP packets decapsulated.
	CounterIPIP = 0
	// CounterGRE counts GRE packets decapsulated.
	CounterGRE = 1
	// CounterAdjustErrors counts tunnelled VIP packets that
	// bpf_skb_adjust_room refused to shrink; they pass on encapsulated and
	// the kernel drops them.
	CounterAdjustErrors = 2
	numCounters         = 3
)

// Names of the maps and the program, as the kernel shows them (bpftool) and
// as pin file names. They MUST NOT change, nor may the key, value and size of
// an existing map: a newer dsrctl takes over the maps of the program an older
// one attached (the VIPs and counters carry over). A map added later, as
// VIP6MapName was, is optional when reading an attached program.
const (
	VIPMapName   = "dsr_vips"
	VIP6MapName  = "dsr_vips6"
	StatsMapName = "dsr_stats"
	ProgramName  = "dsr_decap"
	// MaxVIPs bounds each VIP map.
	MaxVIPs = 1024
)

// Return codes of the program. TCXNext (TCX_NEXT, equal to TC_ACT_UNSPEC of a
// tc filter in direct-action mode) hands the packet to the next program or
// filter on the interface, or to the stack if there is none, so the
// decapsulator coexists with other programs on either hook (one after it
// sees the inner packet).
const (
	TCXNext = -1
)

// Offsets in the packet: Ethernet (14 bytes), the outer IPv4 header without
// options (20) or the outer IPv6 header without extension headers (40), the
// optional GRE base header (4), then the inner IPv4 or IPv6 header.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |  IPv4
//	|         Identification        |Flags|      Fragment Offset    |
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	|                       Source Address                          |
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Traffic Class |           Flow Label                  |  IPv6
//	|         Payload Length        |  Next Header  |   Hop Limit   |
//	|            Source Address (16 bytes, at 8)                    |
//	|         Destination Address (16 bytes, at 24)                 |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|C|       Reserved0       | Ver |         Protocol Type         |  GRE
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ethLen       = 14
	ethTypeOff   = 12
	ipv4Len      = 20
	ipv6Len      = 40
	outerOff     = ethLen
	outerFragOff = outerOff + 6
	outerProtoOf = outerOff + 9 // IPv4 protocol
	outerNextOff = outerOff + 6 // IPv6 next header
	greLen       = 4
	inner4DstOff = 16
	inner6DstOff = 24
	// pullLen is how much of a tunnelled frame must be linear: up to
	// the end of an inner IPv6 header behind an IPv6 and a GRE header.
	pullLen = ethLen + ipv6Len + greLen + ipv6Len

	protoIPIP = 4
	protoIPv6 = 41
	protoGRE  = 47

	ethTypeIPv4 = 0x0800
	ethTypeIPv6 = 0x86dd
)

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h), stable UAPI.
const (
	skbLen      = 0
	skbPktType  = 4
	skbProtocol = 16
	skbData     = 76
	skbDataEnd  = 80

	packetHost = 0 // PACKET_HOST: addressed to this host at L2
)

// bpf_skb_adjust_room arguments (include/uapi/linux/bpf.h).
const (
	adjRoomMAC      = 1      // BPF_ADJ_ROOM_MAC: room between L2 and L3
	adjRoomFixedGSO = 1 << 0 // BPF_F_ADJ_ROOM_FIXED_GSO: keep gso_size (MSS)
	// BPF_F_ADJ_ROOM_DECAP_L3_IPV4 and _IPV6 (Linux 6.3): the packet
	// left after the shrink is of that family, so skb->protocol changes
	// with it. Older kernels refuse the flags: such packets count as
	// adjust errors.
	adjRoomDecapL3IPv4 = 1 << 7
	adjRoomDecapL3IPv6 = 1 << 8
)

// Stack slots of the program (offsets from the frame pointer).
const (
	stVIP4     = -4  // inner IPv4 destination: the key of VIPMapName
	stCounter  = -8  // index into the stats map
	stProto    = -12 // outer protocol byte read with bpf_skb_load_bytes
	stMode     = -16 // the Mode bit of this envelope
	stFlags    = -20 // bpf_skb_adjust_room flags
	stEthType  = -24 // new Ethernet type (network order) when the family changes, else 0
	stVIP6     = -40 // inner IPv6 destination: the key of VIP6MapName (16 bytes)
	stVIP6High = stVIP6 + 8
)

// be16 and be32 return the value a BPF load of the given big-endian
// (network order) field yields on this host, so comparisons need no byte
// swap at run time.
func be16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

func be32(v uint32) int32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return int32(binary.NativeEndian.Uint32(b[:]))
}

// Instructions returns the decapsulator. It references the maps VIPMapName,
// VIP6MapName and StatsMapName by name; CollectionSpec resolves them.
//
// Per packet, in order, anything that does not match goes to "pass"
// untouched: addressed to this host at L2; Ethernet type IPv4 or IPv6; outer
// protocol (IPv4) or next header (IPv6) 4, 41 or 47 (then the headers are
// pulled into the linear part of the skb, see below); an outer IPv4 header
// without options, not a fragment, with a valid header checksum, or an outer
// IPv6 header of version 6; protocol 4 with an inner IPv4 header, 41 with an
// inner IPv6 header, or 47 with GRE flags and version all zero and protocol
// 0x0800 (inner IPv4) or 0x86DD (inner IPv6); an inner destination in the
// VIP map of its family with this mode's bit. Then it removes the outer
// header (and GRE header) right after the Ethernet header, sets the
// Ethernet type to the inner family's when that differs, and counts the
// packet.
func Instructions() asm.Instructions {
	const (
		rCtx   = asm.R6 // skb context, callee-saved
		rData  = asm.R7 // packet start (Ethernet header)
		rEnd   = asm.R8 // packet end
		rOuter = asm.R9 // bytes to strip: 20, 24 (IPv4 outer), 40, 44 (IPv6 outer)
	)
	return asm.Instructions{
		asm.Mov.Reg(rCtx, asm.R1),

		// Only frames sent to our MAC, only IPv4 and IPv6.
		asm.LoadMem(asm.R2, rCtx, skbPktType, asm.Word),
		asm.JNE.Imm(asm.R2, packetHost, "pass"),
		asm.LoadMem(asm.R2, rCtx, skbProtocol, asm.Word),
		asm.Mov.Imm(asm.R3, outerProtoOf),
		asm.JEq.Imm(asm.R2, be16(ethTypeIPv4), "readproto"),
		asm.Mov.Imm(asm.R3, outerNextOff),
		asm.JNE.Imm(asm.R2, be16(ethTypeIPv6), "pass"),

		// The program reads headers between data and data_end, the
		// linear part of the skb, which may end right after the
		// Ethernet header: af_packet's TX ring (DPDK net_af_packet)
		// puts only the link-layer header there and the rest in page
		// fragments, and a router forwarding such a frame pulls in
		// just the outer IP header. So for an outer protocol of
		// IPIP, IPv6 or GRE, read with bpf_skb_load_bytes (which reads
		// fragments too), pull the outer, GRE and inner headers into
		// the linear part (all of a shorter frame), then check bounds
		// as usual. The result is not checked: the bounds checks
		// below are.
		asm.Mov.Reg(asm.R1, rCtx).WithSymbol("readproto"),
		asm.Mov.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stProto),
		asm.Mov.Imm(asm.R4, 1),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R2, asm.RFP, stProto, asm.Byte),
		asm.JEq.Imm(asm.R2, protoIPIP, "pull"),
		asm.JEq.Imm(asm.R2, protoIPv6, "pull"),
		asm.JNE.Imm(asm.R2, protoGRE, "pass"),
		asm.Mov.Imm(asm.R2, pullLen).WithSymbol("pull"),
		asm.LoadMem(asm.R3, rCtx, skbLen, asm.Word),
		asm.JGE.Imm(asm.R3, pullLen, "dopull"),
		asm.Mov.Imm(asm.R2, 0), // 0: the whole frame
		asm.Mov.Reg(asm.R1, rCtx).WithSymbol("dopull"),
		asm.FnSkbPullData.Call(),

		asm.LoadMem(rData, rCtx, skbData, asm.Word),
		asm.LoadMem(rEnd, rCtx, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R2, rData),
		asm.Add.Imm(asm.R2, ethLen+ipv4Len),
		asm.JGT.Reg(asm.R2, rEnd, "pass"),
		// The Ethernet type in the frame (no VLAN tag there) picks
		// the outer header.
		asm.LoadMem(asm.R2, rData, ethTypeOff, asm.Half),
		asm.JEq.Imm(asm.R2, be16(ethTypeIPv6), "outer6"),
		asm.JNE.Imm(asm.R2, be16(ethTypeIPv4), "pass"),

		// Outer IPv4: version 4 with IHL 5, neither MF nor a fragment
		// offset.
		asm.LoadMem(asm.R2, rData, outerOff, asm.Byte),
		asm.JNE.Imm(asm.R2, 0x45, "pass"),
		asm.LoadMem(asm.R2, rData, outerFragOff, asm.Half),
		asm.And.Imm(asm.R2, be16(0x3fff)),
		asm.JNE.Imm(asm.R2, 0, "pass"),

		// Outer header checksum (RFC 1071): the one's complement sum of
		// the header including its checksum field folds to 0xffff. The
		// sum is byte-order independent, so host-order loads are fine.
		asm.LoadMem(asm.R2, rData, outerOff, asm.Word),
		asm.LoadMem(asm.R3, rData, outerOff+4, asm.Word),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, rData, outerOff+8, asm.Word),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, rData, outerOff+12, asm.Word),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, rData, outerOff+16, asm.Word),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 32),
		asm.Mov.Reg32(asm.R2, asm.R2), // zero-extends: keep the low 32 bits
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 16),
		asm.And.Imm(asm.R2, 0xffff),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 16),
		asm.And.Imm(asm.R2, 0xffff),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.RSh.Imm(asm.R3, 16),
		asm.And.Imm(asm.R2, 0xffff),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.JNE.Imm(asm.R2, 0xffff, "pass"),

		asm.LoadMem(asm.R2, rData, outerProtoOf, asm.Byte),
		asm.Mov.Reg(asm.R3, rData),
		asm.Add.Imm(asm.R3, outerOff+ipv4Len),
		asm.Mov.Imm(rOuter, ipv4Len),
		asm.Ja.Label("proto"),

		// Outer IPv6: version 6; the next header must be the tunnel
		// itself (no extension headers).
		asm.Mov.Reg(asm.R2, rData).WithSymbol("outer6"),
		asm.Add.Imm(asm.R2, outerOff+ipv6Len),
		asm.JGT.Reg(asm.R2, rEnd, "pass"),
		asm.LoadMem(asm.R2, rData, outerOff, asm.Byte),
		asm.And.Imm(asm.R2, 0xf0),
		asm.JNE.Imm(asm.R2, 0x60, "pass"),
		asm.LoadMem(asm.R2, rData, outerNextOff, asm.Byte),
		asm.Mov.Reg(asm.R3, rData),
		asm.Add.Imm(asm.R3, outerOff+ipv6Len),
		asm.Mov.Imm(rOuter, ipv6Len),

		// R2: the outer protocol, R3: the header after the outer one.
		asm.JEq.Imm(asm.R2, protoIPIP, "ipip4").WithSymbol("proto"),
		asm.JEq.Imm(asm.R2, protoIPv6, "ipip6"),
		asm.JNE.Imm(asm.R2, protoGRE, "pass"),

		// GRE: exactly the 4-byte base header, for IPv4 or IPv6.
		asm.Mov.Reg(asm.R2, asm.R3),
		asm.Add.Imm(asm.R2, greLen),
		asm.JGT.Reg(asm.R2, rEnd, "pass"),
		asm.LoadMem(asm.R2, asm.R3, 0, asm.Word),
		asm.Add.Imm(asm.R3, greLen),
		asm.Add.Imm(rOuter, greLen),
		asm.StoreImm(asm.RFP, stMode, int64(GRE), asm.Word),
		// 32-bit compares: a 64-bit one would sign-extend the
		// immediate, and be32(0x86dd) is negative on little-endian
		// hosts.
		asm.JEq.Imm32(asm.R2, be32(ethTypeIPv4), "inner4"),
		asm.JEq.Imm32(asm.R2, be32(ethTypeIPv6), "inner6"),
		asm.Ja.Label("pass"),
		asm.StoreImm(asm.RFP, stMode, int64(IPIP), asm.Word).WithSymbol("ipip4"),
		asm.Ja.Label("inner4"),
		asm.StoreImm(asm.RFP, stMode, int64(IPIP), asm.Word).WithSymbol("ipip6"),
		asm.Ja.Label("inner6"),

		// Inner IPv4 to a VIP of ours. An IPv6 outer header (rOuter
		// 40 or more) changes the family.
		asm.Mov.Reg(asm.R2, asm.R3).WithSymbol("inner4"),
		asm.Add.Imm(asm.R2, ipv4Len),
		asm.JGT.Reg(asm.R2, rEnd, "pass"),
		asm.LoadMem(asm.R2, asm.R3, 0, asm.Byte),
		asm.And.Imm(asm.R2, 0xf0),
		asm.JNE.Imm(asm.R2, 0x40, "pass"),
		asm.LoadMem(asm.R2, asm.R3, inner4DstOff, asm.Word),
		asm.StoreMem(asm.RFP, stVIP4, asm.R2, asm.Word),
		asm.StoreImm(asm.RFP, stFlags, adjRoomFixedGSO, asm.Word),
		asm.StoreImm(asm.RFP, stEthType, 0, asm.Half),
		asm.JLT.Imm(rOuter, ipv6Len, "lookup4"),
		asm.StoreImm(asm.RFP, stFlags, adjRoomFixedGSO|adjRoomDecapL3IPv4, asm.Word),
		asm.StoreImm(asm.RFP, stEthType, int64(be16(ethTypeIPv4)), asm.Half),
		asm.LoadMapPtr(asm.R1, 0).WithReference(VIPMapName).WithSymbol("lookup4"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stVIP4),
		asm.FnMapLookupElem.Call(),
		asm.Ja.Label("found"),

		// Inner IPv6 to a VIP of ours. An IPv4 outer header (rOuter
		// below 40) changes the family.
		asm.Mov.Reg(asm.R2, asm.R3).WithSymbol("inner6"),
		asm.Add.Imm(asm.R2, ipv6Len),
		asm.JGT.Reg(asm.R2, rEnd, "pass"),
		asm.LoadMem(asm.R2, asm.R3, 0, asm.Byte),
		asm.And.Imm(asm.R2, 0xf0),
		asm.JNE.Imm(asm.R2, 0x60, "pass"),
		asm.LoadMem(asm.R2, asm.R3, inner6DstOff, asm.DWord),
		asm.StoreMem(asm.RFP, stVIP6, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.R3, inner6DstOff+8, asm.DWord),
		asm.StoreMem(asm.RFP, stVIP6High, asm.R2, asm.DWord),
		asm.StoreImm(asm.RFP, stFlags, adjRoomFixedGSO, asm.Word),
		asm.StoreImm(asm.RFP, stEthType, 0, asm.Half),
		asm.JGE.Imm(rOuter, ipv6Len, "lookup6"),
		asm.StoreImm(asm.RFP, stFlags, adjRoomFixedGSO|adjRoomDecapL3IPv6, asm.Word),
		asm.StoreImm(asm.RFP, stEthType, int64(be16(ethTypeIPv6)), asm.Half),
		asm.LoadMapPtr(asm.R1, 0).WithReference(VIP6MapName).WithSymbol("lookup6"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stVIP6),
		asm.FnMapLookupElem.Call(),

		// The VIP must be decapsulated in this mode.
		asm.JEq.Imm(asm.R0, 0, "pass").WithSymbol("found"),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.RFP, stMode, asm.Word),
		asm.And.Reg(asm.R2, asm.R3),
		asm.JEq.Imm(asm.R2, 0, "pass"),

		// Strip the envelope: remove rOuter bytes right after the
		// Ethernet header. FIXED_GSO keeps the MSS of a GRO-merged
		// packet; the DECAP_L3 flags set skb->protocol to the inner
		// family.
		asm.Mov.Reg(asm.R1, rCtx),
		asm.Mov.Imm(asm.R2, 0),
		asm.Sub.Reg(asm.R2, rOuter),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.LoadMem(asm.R4, asm.RFP, stFlags, asm.Word),
		asm.FnSkbAdjustRoom.Call(),
		asm.Mov.Imm(asm.R2, CounterAdjustErrors),
		asm.JNE.Imm(asm.R0, 0, "count"),

		// A new family: the frame's Ethernet type follows, so that
		// a program after this one reads the frame as it is.
		asm.LoadMem(asm.R4, asm.RFP, stEthType, asm.Half),
		asm.JEq.Imm(asm.R4, 0, "counted"),
		asm.Mov.Reg(asm.R1, rCtx),
		asm.Mov.Imm(asm.R2, ethTypeOff),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, stEthType),
		asm.Mov.Imm(asm.R4, 2),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),

		// Count: IPIP, GRE or adjust error.
		asm.Mov.Imm(asm.R2, CounterIPIP).WithSymbol("counted"),
		asm.LoadMem(asm.R3, asm.RFP, stMode, asm.Word),
		asm.JEq.Imm(asm.R3, int32(IPIP), "count"),
		asm.Mov.Imm(asm.R2, CounterGRE),
		asm.StoreMem(asm.RFP, stCounter, asm.R2, asm.Word).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, 0).WithReference(StatsMapName),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stCounter),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),

		asm.Mov.Imm(asm.R0, TCXNext).WithSymbol("pass"),
		asm.Return(),
	}
}

// CollectionSpec returns the maps and the program, unpinned. Callers set
// Pinning and PinPath to share the maps between processes.
func CollectionSpec() *ebpf.CollectionSpec {
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			VIPMapName: {
				Name:       VIPMapName,
				Type:       ebpf.Hash,
				KeySize:    4,
				ValueSize:  4,
				MaxEntries: MaxVIPs,
			},
			VIP6MapName: {
				Name:       VIP6MapName,
				Type:       ebpf.Hash,
				KeySize:    16,
				ValueSize:  4,
				MaxEntries: MaxVIPs,
			},
			StatsMapName: {
				Name:       StatsMapName,
				Type:       ebpf.PerCPUArray,
				KeySize:    4,
				ValueSize:  8,
				MaxEntries: numCounters,
			},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			ProgramName: {
				Name: ProgramName,
				Type: ebpf.SchedCLS,
				// No expected attach type: the same program runs
				// on TCX and in a tc filter, and kernels before
				// 6.6 know no TCX attach type.
				Instructions: Instructions(),
				License:      "GPL",
			},
		},
	}
}

// vipKey returns the map key of an IPv4 address: its 4 bytes in network
// order, as the program reads them from the packet.
func vipKey(a [4]byte) uint32 {
	return binary.NativeEndian.Uint32(a[:])
}

// vip6Key returns the map key of an IPv6 address: its 16 bytes in network
// order, as the program reads them from the packet.
func vip6Key(a netip.Addr) [16]byte { return a.As16() }

// keyVIP is the inverse of vipKey.
func keyVIP(k uint32) [4]byte {
	var a [4]byte
	binary.NativeEndian.PutUint32(a[:], k)
	return a
}

// Counters are the decapsulator's packet counters summed over all CPUs.
type Counters struct {
	IPIP         uint64 // IPIP packets decapsulated
	GRE          uint64 // GRE packets decapsulated
	AdjustErrors uint64 // tunnelled VIP packets the kernel refused to shrink
}

// Total returns the number of packets decapsulated.
func (c Counters) Total() uint64 { return c.IPIP + c.GRE }

// readCounters sums the per-CPU counters of the stats map.
func readCounters(m *ebpf.Map) (Counters, error) {
	var c Counters
	for i, dst := range []*uint64{&c.IPIP, &c.GRE, &c.AdjustErrors} {
		var perCPU []uint64
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return Counters{}, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return c, nil
}
