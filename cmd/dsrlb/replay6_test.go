package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// replayConfig6 is a dual-stack port; %s: the services.
const replayConfig6 = `
dataplane:
  eal_args: [--no-huge, --no-pci, -m, "256"]
  ports:
    - {name: eth0, device: net_null0, ip: 192.0.2.10/24, gateway: 192.0.2.1, ip6: "2001:db8:0:1::10/64", gateway6: "2001:db8:0:1::1", mac: "02:00:00:00:00:10"}
neighbors:
  - {ip: 192.0.2.1, mac: "02:00:00:00:00:01"}
  - {ip: "2001:db8:0:1::1", mac: "02:00:00:00:00:06"}
  - {ip: "2001:db8:0:1::21", mac: "02:00:00:00:00:21"}
  - {ip: "2001:db8:0:1::22", mac: "02:00:00:00:00:22"}
  - {ip: "2001:db8:0:1::23", mac: "02:00:00:00:00:23"}
flows: {capacity: 65536}
services:
%s`

var (
	vip6     = netip.MustParseAddr("2001:db8:100::10")
	port6    = "2001:db8:0:1::10"
	client6s = netip.MustParsePrefix("2001:db8:ffff::/64")
)

// replay6Cases are the envelope combinations of issue 14: the VIP's
// family, the mode and the backends (whose family makes the envelope's).
var replay6Cases = []struct {
	name     string
	vip      netip.Addr
	mode     string
	backends []string
	outer6   bool  // the envelope is IPv6
	next     uint8 // outer protocol or next header; 0: l2
	overhead int
}{
	{"v6_l2", vip6, "l2", []string{"2001:db8:0:1::21", "2001:db8:0:1::22", "2001:db8:0:1::23"}, false, 0, 0},
	{"v6_in_v6", vip6, "ipip", []string{"2001:db8:0:2::1", "2001:db8:0:2::2", "2001:db8:0:2::3"}, true, 41, 40},
	{"v4_in_v6", vip, "ipip", []string{"2001:db8:0:2::1", "2001:db8:0:2::2", "2001:db8:0:2::3"}, true, 4, 40},
	{"v6_in_v4", vip6, "ipip", []string{"10.1.0.1", "10.1.0.2", "10.1.0.3"}, false, 41, 20},
	{"gre_v6", vip6, "gre", []string{"2001:db8:0:2::1", "2001:db8:0:2::2", "2001:db8:0:2::3"}, true, 47, 44},
	{"gre_v4_v6_inner", vip6, "gre", []string{"10.2.0.1", "10.2.0.2", "10.2.0.3"}, false, 47, 24},
}

// replayInput6 is flows TCP and UDP flows to v (two packets each; IPv6
// clients for an IPv6 VIP), then malformed IPv6 (a truncated header, a
// payload length beyond the frame) to drop, and a neighbour solicitation
// for the kernel.
func replayInput6(flows int, v netip.Addr) (pkts [][]byte, vipPkts int, drops map[string]uint64) {
	if v.Is4() {
		pkts, vipPkts, _ = replayInput(flows)
		pkts = pkts[:vipPkts]
	} else {
		for round := 0; round < 2; round++ {
			for i := 0; i < flows; i++ {
				c := client6s.Addr().As16()
				binary.BigEndian.PutUint16(c[14:], uint16(i+1))
				p := testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC, Src: netip.AddrFrom16(c), Dst: v,
					SrcPort: uint16(10000 + i), DstPort: 80, TOS: byte(i%4) << 2, FlowLabel: uint32(i), Proto: 6,
					Payload: []byte(fmt.Sprintf("flow %d round %d", i, round))}
				if i%2 == 1 {
					p.Proto, p.DstPort = 17, uint16(5000+i)
				}
				pkts = append(pkts, p.Build())
				vipPkts++
			}
		}
	}
	good := testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC, Src: netip.MustParseAddr("2001:db8:ffff::99"), Dst: vip6,
		SrcPort: 999, DstPort: 80, Proto: 6, Payload: []byte("malformed")}.Build()
	long := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(long[14+4:], uint16(len(long)-14-40+100))
	pkts = append(pkts,
		good[:14+30], // truncated IPv6 header
		long,         // payload length beyond the frame
		testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC, Src: netip.MustParseAddr("fe80::1"), // neighbour solicitation: kernel
			Dst: netip.MustParseAddr("ff02::1:ff00:10"), Proto: 58, ICMPType: 135, TTL: 255, Payload: make([]byte, 16)}.Build(),
	)
	return pkts, vipPkts, map[string]uint64{"truncated": 1, "bad_total_length": 1}
}

// service6 is the YAML of the TCP/80 and UDP all-ports services of a case.
func service6(name string, v netip.Addr, mode string, ips []string) string {
	be := fmt.Sprintf(`{ip: "%s", weight: 1}, {ip: "%s", weight: 2}, {ip: "%s", weight: 1}`, ips[0], ips[1], ips[2])
	return fmt.Sprintf("  - {name: %s, vip: \"%s\", protocol: tcp, port: 80, mode: %s, backends: [%s]}\n"+
		"  - {name: %s-udp, vip: \"%s\", protocol: udp, port: 0, mode: %s, backends: [%s]}\n", name, v, mode, be, name, v, mode, be)
}

// TestReplayGolden6 replays each envelope combination of issue 14 through
// the whole data plane (EAL, worker, burst loop), holds the output to a
// golden capture, checks it field by field and has tshark dissect it: the
// malformed IPv6 frames are dropped by reason.
func TestReplayGolden6(t *testing.T) {
	needTshark(t)
	for _, tc := range replay6Cases {
		t.Run(tc.name, func(t *testing.T) {
			in, vipPkts, wantDrops := replayInput6(100, tc.vip)
			r := runReplay(t, fmt.Sprintf(replayConfig6, service6(tc.name, tc.vip, tc.mode, tc.backends)), in)
			checkReplayed(t, r, in, vipPkts, wantDrops, tc.overhead)
			checkTshark6(t, r.OutPath, tc.vip, tc.outer6, tc.next, tc.overhead, in[:vipPkts], tc.backends)
			inName := "replay6_in"
			if tc.vip.Is4() {
				inName = "replay6_in_v4"
			}
			compareGolden(t, "replay6_"+tc.name, inName, r.InPath, r.Out)
		})
	}
}

// checkTshark6 dissects the output with tshark: the envelope's family,
// protocol or next header, source (the port's address of that family),
// hop limit or TTL 64, traffic class or DSCP copied, lengths, a valid outer
// IPv4 checksum with DF set around IPv6, the GRE protocol, the inner
// addresses and a valid inner TCP or UDP checksum, and the backends only
// from the configured set.
func checkTshark6(t *testing.T, path string, v netip.Addr, outer6 bool, next uint8, overhead int, in [][]byte, backends []string) {
	t.Helper()
	rows := tsharkRows(t, path, "ip.src", "ip.dst", "ip.proto", "ip.ttl", "ip.dsfield", "ip.flags.df", "ip.len", "ip.checksum.status",
		"ipv6.src", "ipv6.dst", "ipv6.nxt", "ipv6.hlim", "ipv6.tclass", "ipv6.plen", "gre.proto", "tcp.checksum.status", "udp.checksum.status")
	if len(rows) != len(in) {
		t.Fatalf("tshark saw %d packets, want %d", len(rows), len(in))
	}
	okBackend := map[string]bool{}
	for _, b := range backends {
		okBackend[b] = true
	}
	for i, row := range rows {
		get := func(name string) []string { return strings.Split(row[name], ",") }
		inIP := in[i][14:]
		checks := map[string][2]string{}
		var innerSrc, innerTC string
		var innerLen int
		if v.Is6() {
			innerSrc = netip.AddrFrom16([16]byte(inIP[8:24])).String()
			innerTC = fmt.Sprintf("0x%02x", inIP[0]<<4|inIP[1]>>4)
			innerLen = 40 + int(binary.BigEndian.Uint16(inIP[4:]))
		} else {
			innerSrc = netip.AddrFrom4([4]byte(inIP[12:16])).String()
			innerTC = fmt.Sprintf("0x%02x", inIP[1])
			innerLen = int(binary.BigEndian.Uint16(inIP[2:]))
		}
		l4ok := row["tcp.checksum.status"] + row["udp.checksum.status"]
		checks["inner l4 checksum"] = [2]string{l4ok, "1"}
		ip4src, ip4dst, ip6src, ip6dst := get("ip.src"), get("ip.dst"), get("ip.src"), get("ipv6.dst")
		ip6src = get("ipv6.src")
		var outerDst string
		switch {
		case next == 0: // l2: the client's packet alone
			if v.Is6() {
				checks["src"], checks["dst"] = [2]string{row["ipv6.src"], innerSrc}, [2]string{row["ipv6.dst"], v.String()}
			}
		case outer6:
			outerDst = ip6dst[0]
			checks["outer src"] = [2]string{ip6src[0], port6}
			checks["outer next header"] = [2]string{get("ipv6.nxt")[0], strconv.Itoa(int(next))}
			checks["outer hop limit"] = [2]string{get("ipv6.hlim")[0], "64"}
			tc, _ := strconv.ParseUint(innerTC, 0, 8)
			checks["outer traffic class"] = [2]string{get("ipv6.tclass")[0], fmt.Sprintf("0x%08x", tc)}
			checks["outer payload length"] = [2]string{get("ipv6.plen")[0], strconv.Itoa(innerLen + overhead - 40)}
			if v.Is6() {
				checks["inner src"], checks["inner dst"] = [2]string{ip6src[1], innerSrc}, [2]string{ip6dst[1], v.String()}
			} else {
				checks["inner src"], checks["inner dst"] = [2]string{ip4src[0], innerSrc}, [2]string{ip4dst[0], v.String()}
			}
		default: // an IPv4 envelope around IPv6
			outerDst = ip4dst[0]
			checks["outer src"] = [2]string{ip4src[0], "192.0.2.10"}
			checks["outer proto"] = [2]string{get("ip.proto")[0], strconv.Itoa(int(next))}
			checks["outer ttl"] = [2]string{get("ip.ttl")[0], "64"}
			checks["outer dsfield"] = [2]string{get("ip.dsfield")[0], innerTC}
			checks["outer df"] = [2]string{get("ip.flags.df")[0], "1"}
			checks["outer len"] = [2]string{get("ip.len")[0], strconv.Itoa(innerLen + overhead)}
			checks["outer checksum"] = [2]string{get("ip.checksum.status")[0], "1"}
			checks["inner src"], checks["inner dst"] = [2]string{ip6src[0], innerSrc}, [2]string{ip6dst[0], v.String()}
		}
		if next == 47 {
			want := "0x86dd"
			if v.Is4() {
				want = "0x0800"
			}
			checks["gre proto"] = [2]string{get("gre.proto")[0], want}
		}
		for name, c := range checks {
			if c[0] != c[1] {
				t.Errorf("row %d: %s = %q, want %q (tshark row %v)", i, name, c[0], c[1], row)
			}
		}
		if next != 0 && !okBackend[outerDst] {
			t.Errorf("row %d: outer dst %s is not a backend", i, outerDst)
		}
	}
}

// TestReplayMixed6: one service with IPv4 and IPv6 backends takes IPv6
// clients; both envelopes come out, each flow on one backend.
func TestReplayMixed6(t *testing.T) {
	in, vipPkts, wantDrops := replayInput6(200, vip6)
	r := runReplay(t, fmt.Sprintf(replayConfig6, service6("mixed", vip6, "ipip", []string{"10.1.0.1", "2001:db8:0:2::2", "10.1.0.3"})), in)
	st := r.Stats
	if st.Totals.TxPackets != uint64(vipPkts) || st.Totals.ToKernel != 1 || st.Totals.Dropped != 2 {
		t.Errorf("tx %d kernel %d dropped %d, want %d, 1, 2 (%v)", st.Totals.TxPackets, st.Totals.ToKernel, st.Totals.Dropped, vipPkts, st.Drops)
	}
	for reason, n := range wantDrops {
		if st.Drops[reason] != n {
			t.Errorf("drops[%s] = %d, want %d", reason, st.Drops[reason], n)
		}
	}
	byType := map[uint16]int{}
	flow := map[string]string{}
	for i, o := range r.Out {
		et := binary.BigEndian.Uint16(o[12:])
		byType[et]++
		over, dst := 20, netip.AddrFrom4([4]byte(o[30:34])).String()
		if et == 0x86dd {
			over, dst = 40, netip.AddrFrom16([16]byte(o[38:54])).String()
		}
		if !bytes.Equal(o[14+over:], in[i][14:]) {
			t.Fatalf("packet %d: inner packet changed", i)
		}
		key := string(in[i][14+8 : 14+40+4])
		if prev, ok := flow[key]; ok && prev != dst {
			t.Errorf("packet %d: flow moved from %s to %s", i, prev, dst)
		}
		flow[key] = dst
	}
	if byType[0x0800] == 0 || byType[0x86dd] == 0 {
		t.Errorf("envelopes by ethertype %v: want both families", byType)
	}
}
