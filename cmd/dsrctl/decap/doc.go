// Package decap is the eBPF IP-in-IP / GRE decapsulator that dsrctl attaches
// to a DSR backend whose kernel cannot terminate the tunnels itself (no ipip,
// ip_gre, sit, ip6_tunnel or ip6_gre module), and to every backend of an
// IPv6 VIP.
//
// The load balancer sends a backend the client's packet unchanged inside an
// outer header whose family follows the backend's address: IPv4 with
// protocol 4 (RFC 2003) or 41 (an IPv6 packet, 6in4, RFC 4213), IPv6 with
// next header 4 or 41 (RFC 2473), or either with protocol 47 and a 4-byte
// GRE header (RFC 2784) carrying 0x0800 or 0x86DD. On the backend a SchedCLS
// program on the ingress of the receiving interface strips the envelope with
// bpf_skb_adjust_room when the inner destination is one of the VIPs in the
// map of its family, so the kernel then delivers the inner packet to the VIP
// configured on lo exactly as an L2 DSR packet. Everything else passes
// untouched. When the outer and inner families differ, the program tells
// the kernel (BPF_F_ADJ_ROOM_DECAP_L3_IPV4/IPV6, Linux 6.3 or later; older
// kernels refuse the flag and such packets count as adjust errors) and
// rewrites the frame's Ethernet type.
//
// The program is assembled in Go with cilium/ebpf's asm package: building
// dsrctl needs no clang and no committed object file.
//
// The interface holds the program, so the decapsulator outlives the dsrctl
// process that attached it without a BPF filesystem (which `ip netns exec`
// and many containers do not have), and goes away with the interface or its
// network namespace. Two hooks (see Hook):
//
//   - TCX ingress (Linux 6.6 or later), attached with BPF_PROG_ATTACH, not
//     with a link: a TCX link lives only as long as a file descriptor or a
//     pin in a BPF filesystem refers to it, a program attachment as long as
//     the interface;
//   - tc ingress: a cls_bpf filter in direct-action mode on a clsact qdisc,
//     for kernels without TCX.
//
// The program's maps hold the state shared by separate dsrctl processes:
//
//	dsr_vips   hash map IPv4 VIP (4 bytes, network order) -> Mode bits
//	dsr_vips6  hash map IPv6 VIP (16 bytes, network order) -> Mode bits
//	dsr_stats  per-CPU array of Counters (either family)
//
// dsr_vips6 came later: a program attached by an older dsrctl has only the
// other two, and the newer program that replaces it takes those over and
// starts an empty dsr_vips6.
//
// A later dsrctl finds them through the interface: the programs attached to
// its TCX or tc ingress, the one named dsr_decap, and that program's maps
// (by kernel ID, which needs CAP_SYS_ADMIN). Up to December 2026 dsrctl
// attached a TCX link pinned in a BPF filesystem instead
// (<bpffs>/dsrlb[/netns-<inode>]/<ifname>/{link,prog,dsr_vips,dsr_stats});
// Manager recognises such links, moves them to a program attachment on the
// next setup and removes their pins (see Store).
//
// Limits, by design (such packets pass untouched, and a kernel without the
// tunnel modules then drops them):
//   - Ethernet devices only (the program parses a 14-byte header; a VLAN
//     tag must already be stripped by the NIC or a VLAN device);
//   - outer IPv4 without options, not fragmented, with a valid header
//     checksum (the program checks it, since the kernel never sees the
//     outer header); the load balancer sends DF envelopes and answers
//     oversize packets with ICMP "fragmentation needed";
//   - outer IPv6 without extension headers (the tunnel's next header right
//     in the fixed header; a fragment header is one), as the load balancer
//     sends them;
//   - GRE: only the 4-byte base header (no checksum, key or sequence
//     number) carrying IPv4 or IPv6;
//   - only frames addressed to this host's MAC (PACKET_HOST).
//
// The envelope costs 20 (IPIP) or 24 (GRE) bytes with an IPv4 outer header,
// 40 or 44 with an IPv6 one: the path from the load balancer needs an MTU
// that much larger than the backends' MTU, or TCP MSS clamping. The program returns TCX_NEXT (TC_ACT_UNSPEC for tc), so other
// programs or filters on the interface still run, after it, on the inner
// packet. It passes
// BPF_F_ADJ_ROOM_FIXED_GSO so that a GRO-merged packet keeps its MSS.
//
// The package is Linux-only; on other systems it holds only this comment.
package decap
