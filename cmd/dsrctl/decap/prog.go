//go:build linux

package decap

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Mode is a set of encapsulations the decapsulator strips for one VIP. It is
// the value type of the VIP map, so one VIP can be served over both IPIP and
// GRE and each mode can be torn down on its own.
type Mode uint32

const (
	// IPIP strips an outer IPv4 header with protocol 4 (RFC 2003).
	IPIP Mode = 1 << 0
	// GRE strips an outer IPv4 header with protocol 47 and a 4-byte GRE
	// base header carrying protocol 0x0800 (RFC 2784, no checksum, key or
	// sequence number).
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

// Indexes of the per-CPU counters in the stats map.
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
// as pin file names. They MUST NOT change: a newer dsrctl reuses the maps
// pinned by an older one.
const (
	VIPMapName   = "dsr_vips"
	StatsMapName = "dsr_stats"
	ProgramName  = "dsr_decap"
	// MaxVIPs bounds the VIP map.
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

// Offsets in the packet: Ethernet (14 bytes), outer IPv4 without options (20),
// then the optional GRE base header (4), then the inner IPv4 header.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	|         Identification        |Flags|      Fragment Offset    |
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	|                       Source Address                          |
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|C|       Reserved0       | Ver |         Protocol Type         |  GRE
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	ethLen       = 14
	ethTypeOff   = 12
	ipv4Len      = 20
	outerOff     = ethLen
	outerFragOff = outerOff + 6
	outerProtoOf = outerOff + 9
	greOff       = outerOff + ipv4Len
	greLen       = 4
	ipipInnerOff = outerOff + ipv4Len
	greInnerOff  = greOff + greLen
	innerDstOff  = 16
	// pullLen is how much of a tunnelled frame must be linear: up to
	// the end of the inner IPv4 header behind a GRE header.
	pullLen = greInnerOff + ipv4Len

	protoIPIP = 4
	protoGRE  = 47
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

// Instructions returns the decapsulator. It references the maps VIPMapName
// and StatsMapName by name; CollectionSpec resolves them.
//
// Per packet, in order, anything that does not match goes to "pass"
// untouched: addressed to this host at L2; Ethernet type IPv4; outer
// protocol 4 or 47 (then the headers are pulled into the linear part of
// the skb, see below); outer IPv4 header without options, not a fragment, valid header checksum; protocol 4,
// or protocol 47 with GRE flags and version all zero and protocol 0x0800;
// inner IPv4 whose destination is in the VIP map with this mode's bit. Then
// it removes the outer header (and GRE header) right after the Ethernet
// header and counts the packet.
func Instructions() asm.Instructions {
	const (
		rCtx   = asm.R6 // skb context, callee-saved
		rData  = asm.R7 // packet start (Ethernet header)
		rEnd   = asm.R8 // packet end
		rOuter = asm.R9 // bytes to strip: 20 (IPIP) or 24 (GRE)
	)
	return asm.Instructions{
		asm.Mov.Reg(rCtx, asm.R1),

		// Only frames sent to our MAC, only IPv4.
		asm.LoadMem(asm.R2, rCtx, skbPktType, asm.Word),
		asm.JNE.Imm(asm.R2, packetHost, "pass"),
		asm.LoadMem(asm.R2, rCtx, skbProtocol, asm.Word),
		asm.JNE.Imm(asm.R2, be16(0x0800), "pass"),

		// The program reads headers between data and data_end, the
		// linear part of the skb, which may end right after the
		// Ethernet header: af_packet's TX ring (DPDK net_af_packet)
		// puts only the link-layer header there and the rest in page
		// fragments, and a router forwarding such a frame pulls in
		// just the outer IPv4 header. So for outer protocol IPIP or
		// GRE, read with bpf_skb_load_bytes (which reads fragments
		// too), pull the outer, GRE and inner headers into the linear
		// part (all of a shorter frame), then check bounds as usual.
		// The result is not checked: the bounds checks below are.
		asm.Mov.Reg(asm.R1, rCtx),
		asm.Mov.Imm(asm.R2, outerProtoOf),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -12),
		asm.Mov.Imm(asm.R4, 1),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R2, asm.RFP, -12, asm.Byte),
		asm.JEq.Imm(asm.R2, protoIPIP, "pull"),
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

		// Ethernet type IPv4 (no VLAN tag in the frame), outer IPv4
		// version 4 with IHL 5, neither MF nor a fragment offset.
		asm.LoadMem(asm.R2, rData, ethTypeOff, asm.Half),
		asm.JNE.Imm(asm.R2, be16(0x0800), "pass"),
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
		asm.JEq.Imm(asm.R2, protoIPIP, "ipip"),
		asm.JNE.Imm(asm.R2, protoGRE, "pass"),

		// GRE: exactly the 4-byte base header for IPv4.
		asm.Mov.Reg(asm.R3, rData),
		asm.Add.Imm(asm.R3, greInnerOff),
		asm.Mov.Reg(asm.R2, asm.R3),
		asm.Add.Imm(asm.R2, ipv4Len),
		asm.JGT.Reg(asm.R2, rEnd, "pass"),
		asm.LoadMem(asm.R2, rData, greOff, asm.Word),
		asm.JNE.Imm(asm.R2, be32(0x00000800), "pass"),
		asm.Mov.Imm(rOuter, ipv4Len+greLen),
		asm.Ja.Label("inner"),

		// IPIP: the inner header follows the outer one.
		asm.Mov.Reg(asm.R3, rData).WithSymbol("ipip"),
		asm.Add.Imm(asm.R3, ipipInnerOff),
		asm.Mov.Reg(asm.R2, asm.R3),
		asm.Add.Imm(asm.R2, ipv4Len),
		asm.JGT.Reg(asm.R2, rEnd, "pass"),
		asm.Mov.Imm(rOuter, ipv4Len),

		// Inner IPv4 to a VIP of ours, for this encapsulation.
		asm.LoadMem(asm.R2, asm.R3, 0, asm.Byte).WithSymbol("inner"),
		asm.And.Imm(asm.R2, 0xf0),
		asm.JNE.Imm(asm.R2, 0x40, "pass"),
		asm.LoadMem(asm.R2, asm.R3, innerDstOff, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference(VIPMapName),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
		asm.Mov.Imm(asm.R3, int32(IPIP)),
		asm.JEq.Imm(rOuter, ipv4Len, "havemode"),
		asm.Mov.Imm(asm.R3, int32(GRE)),
		asm.And.Reg(asm.R2, asm.R3).WithSymbol("havemode"),
		asm.JEq.Imm(asm.R2, 0, "pass"),

		// Strip the envelope: remove rOuter bytes right after the
		// Ethernet header. FIXED_GSO keeps the MSS of a GRO-merged packet.
		asm.Mov.Reg(asm.R1, rCtx),
		asm.Mov.Imm(asm.R2, 0),
		asm.Sub.Reg(asm.R2, rOuter),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.Mov.Imm(asm.R4, adjRoomFixedGSO),
		asm.FnSkbAdjustRoom.Call(),

		// Count: IPIP, GRE or adjust error.
		asm.Mov.Imm(asm.R2, CounterAdjustErrors),
		asm.JNE.Imm(asm.R0, 0, "count"),
		asm.Mov.Imm(asm.R2, CounterIPIP),
		asm.JEq.Imm(rOuter, ipv4Len, "count"),
		asm.Mov.Imm(asm.R2, CounterGRE),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.Word).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, 0).WithReference(StatsMapName),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
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
