package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// trunkTCI is the 802.1Q tag control field of input frame i of
// replayVLANInput: VID 100, 200 or 0 (priority-tagged) in turn, PCP 1 to
// 7 (never a zero TCI, which testpkt reads as untagged), DEI set on every
// fifth frame.
func trunkTCI(i int) uint16 {
	vid := [3]uint16{100, 200, 0}[i%3]
	tci := uint16(1+i%7)<<13 | vid
	if i%5 == 0 {
		tci |= 1 << 12
	}
	return tci
}

// replayVLANInput is VIP traffic from an 802.1Q trunk: TCP and UDP flows
// (two packets each) tagged by trunkTCI; then one tagged 1500-byte DF
// packet from another MAC than the gateway's, which fits the port MTU in
// l2 mode and needs fragmentation in ipip and gre (so out frame vipPkts is
// its forwarded copy or the fragmentation-needed answer); then frames that are not forwarded: two
// with stacked tags (802.1ad over 802.1Q, two 802.1Q tags), dropped as
// not_ip, and a tagged ARP request, for the kernel.
func replayVLANInput() (pkts [][]byte, vipPkts int) {
	for round := 0; round < 2; round++ {
		for i := 0; i < 60; i++ {
			p := testpkt.Packet{SrcMAC: clientMAC, DstMAC: lbMAC, VLAN: trunkTCI(i),
				Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Dst: vip,
				SrcPort: uint16(20000 + i), DstPort: 80, TOS: byte(i%4) << 2, DF: i%3 != 0, ID: uint16(i),
				Proto: 6, Payload: []byte(fmt.Sprintf("tagged flow %d round %d", i, round))}
			if i%2 == 1 {
				p.Proto, p.DstPort = 17, uint16(6000+i)
			}
			pkts = append(pkts, p.Build())
		}
	}
	vipPkts = len(pkts)
	big := testpkt.Packet{SrcMAC: [6]byte{2, 0, 0, 0, 0, 0x77}, DstMAC: lbMAC, VLAN: trunkTCI(vipPkts),
		Src: netip.MustParseAddr("198.51.100.77"), Dst: vip, SrcPort: 20077, DstPort: 80, DF: true,
		Proto: 6, Payload: make([]byte, 1500-40)}
	tagged := pkts[0]
	stack := func(tpid uint16) []byte {
		b := append([]byte(nil), tagged[:12]...)
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 10)
		return append(b, tagged[12:]...)
	}
	arp := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	arp = append(arp, clientMAC[:]...)
	arp = append(arp, 0x81, 0x00, 0x00, 100, 0x08, 0x06) // VID 100, ARP
	arp = append(arp, 0, 1, 8, 0, 6, 4, 0, 1)            // Ethernet, IPv4, request
	arp = append(arp, clientMAC[:]...)
	arp = append(arp, 198, 51, 100, 1, 0, 0, 0, 0, 0, 0, 203, 0, 113, 10)
	arp = append(arp, make([]byte, 64-len(arp))...)
	pkts = append(pkts, big.Build(), stack(0x88a8), stack(0x8100), arp)
	return pkts, vipPkts
}

// TestReplayVLANGolden replays tagged traffic (replayVLANInput) in every
// mode: l2 keeps each frame's tag (TPID, PCP, DEI, VID) and rewrites only
// the MACs; ipip and gre envelopes leave untagged; the
// fragmentation-needed answer goes back on the client's VLAN. Checked
// field by field, by tshark, and against golden captures.
func TestReplayVLANGolden(t *testing.T) {
	needTshark(t)
	for _, tc := range []struct {
		mode     string
		overhead int
	}{{"l2", 0}, {"ipip", 20}, {"gre", 24}} {
		t.Run(tc.mode, func(t *testing.T) {
			in, vipPkts := replayVLANInput()
			r := runReplay(t, modeConfig(tc.mode, replayBackends[tc.mode]), in)
			st, out, inPath, outPath := r.Stats, r.Out, r.InPath, r.OutPath
			wantFragNeeded := uint64(1)
			if tc.mode == "l2" {
				wantFragNeeded = 0
			}
			if st.Totals.RxPackets != uint64(len(in)) || st.Totals.TxPackets != uint64(vipPkts+1) || st.Totals.ToKernel != 1 ||
				st.Totals.FragNeededSent != wantFragNeeded {
				t.Errorf("rx %d tx %d kernel %d frag-needed %d, want %d, %d, 1, %d", st.Totals.RxPackets, st.Totals.TxPackets,
					st.Totals.ToKernel, st.Totals.FragNeededSent, len(in), vipPkts+1, wantFragNeeded)
			}
			if st.Drops["not_ip"] != 2 || st.Totals.Dropped != 2 {
				t.Errorf("dropped %d (%v), want the 2 stacked-tag frames as not_ip", st.Totals.Dropped, st.Drops)
			}
			if len(out) != vipPkts+1 {
				t.Fatalf("%d packets out, want %d", len(out), vipPkts+1)
			}
			for i, o := range out {
				checkVLANFrame(t, i, tc.mode, tc.overhead, in[i], o, i == vipPkts)
			}
			checkVLANTshark(t, outPath, tc.mode, in, vipPkts)
			compareGolden(t, "replay_vlan_"+tc.mode, "replay_vlan_in", inPath, out)
		})
	}
}

// checkVLANFrame checks out frame o, made from input frame in (tagged),
// field by field; big marks the 1500-byte packet, answered with
// fragmentation needed in ipip and gre.
func checkVLANFrame(t *testing.T, i int, mode string, overhead int, in, o []byte, big bool) {
	t.Helper()
	inner := in[18 : 18+int(binary.BigEndian.Uint16(in[18+2:]))]
	if !bytes.Equal(o[6:12], lbMAC[:]) {
		t.Errorf("frame %d: src MAC %x, want the port's %x", i, o[6:12], lbMAC)
	}
	if mode == "l2" || big {
		// On the VLAN the packet came from: the tag as received.
		if !bytes.Equal(o[12:16], in[12:16]) || binary.BigEndian.Uint16(o[16:]) != 0x0800 {
			t.Errorf("frame %d: tag and EtherType %x, want %x and 0800", i, o[12:18], in[12:16])
		}
	} else if binary.BigEndian.Uint16(o[12:]) != 0x0800 {
		t.Errorf("frame %d: EtherType %x, want an untagged envelope (0800)", i, o[12:14])
	}
	switch {
	case mode == "l2":
		if o[0] != 2 || o[5] < 0x21 || o[5] > 0x23 || !bytes.Equal(o[18:], inner) {
			t.Errorf("frame %d: dst MAC %x, want a backend's; IP packet %s", i, o[0:6], sameOrNot(o[18:], inner))
		}
	case big:
		icmp := o[18+20:]
		wantMTU := 1500 - overhead
		if !bytes.Equal(o[0:6], in[6:12]) || o[18+9] != 1 || icmp[0] != 3 || icmp[1] != 4 ||
			int(binary.BigEndian.Uint16(icmp[6:])) != wantMTU || !bytes.Equal(icmp[8:8+28], inner[:28]) {
			t.Errorf("frame %d: want fragmentation needed (MTU %d) to the MAC the packet came from, quoting it: %x", i, wantMTU, o)
		}
	default:
		if !bytes.Equal(o[14+overhead:], inner) {
			t.Errorf("frame %d: inner packet %s", i, sameOrNot(o[14+overhead:], inner))
		}
	}
}

func sameOrNot(got, want []byte) string {
	if bytes.Equal(got, want) {
		return "unchanged"
	}
	return fmt.Sprintf("changed:\n got %x\nwant %x", got, want)
}

// checkVLANTshark dissects the output with tshark and checks every frame's
// 802.1Q tag (or its absence), MACs, addresses and checksums against the
// input frame it came from.
func checkVLANTshark(t *testing.T, path, mode string, in [][]byte, vipPkts int) {
	t.Helper()
	rows := tsharkRows(t, path, "eth.dst", "eth.src", "eth.type", "vlan.id", "vlan.priority", "vlan.dei", "vlan.etype",
		"ip.src", "ip.dst", "ip.checksum.status", "icmp.type", "icmp.code", "icmp.mtu")
	if len(rows) != vipPkts+1 {
		t.Fatalf("tshark saw %d frames, want %d", len(rows), vipPkts+1)
	}
	for i, r := range rows {
		tci := binary.BigEndian.Uint16(in[i][14:])
		client := netip.AddrFrom4([4]byte(in[i][18+12 : 18+16])).String()
		want := map[string]string{"eth.src": "02:00:00:00:00:10"}
		tagged := map[string]string{"eth.type": "0x8100", "vlan.etype": "0x0800", "vlan.id": strconv.Itoa(int(tci & 0xfff)),
			"vlan.priority": strconv.Itoa(int(tci >> 13)), "vlan.dei": strconv.Itoa(int(tci >> 12 & 1))}
		untagged := map[string]string{"eth.type": "0x0800", "vlan.id": "", "vlan.etype": ""}
		add := func(m map[string]string) {
			for k, v := range m {
				want[k] = v
			}
		}
		switch {
		case mode == "l2":
			add(tagged)
			add(map[string]string{"ip.src": client, "ip.dst": vip.String(), "ip.checksum.status": "1"})
		case i == vipPkts: // fragmentation needed, quoting the client's packet
			add(tagged)
			add(map[string]string{"eth.dst": net.HardwareAddr(in[i][6:12]).String(), "ip.src": "192.0.2.10," + client, "ip.dst": client + "," + vip.String(),
				"ip.checksum.status": "1,1", "icmp.type": "3", "icmp.code": "4", "icmp.mtu": map[string]string{"ipip": "1480", "gre": "1476"}[mode]})
		default:
			add(untagged)
			add(map[string]string{"eth.dst": "02:00:00:00:00:01", "ip.checksum.status": "1,1"})
			if src := r["ip.src"]; src != "192.0.2.10,"+client {
				t.Errorf("frame %d: ip.src %q, want outer 192.0.2.10, inner %s", i, src, client)
			}
			if dst := strings.Split(r["ip.dst"], ","); len(dst) != 2 || dst[1] != vip.String() {
				t.Errorf("frame %d: ip.dst %q, want a backend, then the VIP", i, r["ip.dst"])
			}
		}
		if mode == "l2" && !strings.HasPrefix(r["eth.dst"], "02:00:00:00:00:2") {
			t.Errorf("frame %d: eth.dst %s is no backend's", i, r["eth.dst"])
		}
		for k, v := range want {
			if r[k] != v {
				t.Errorf("frame %d: %s = %q, want %q", i, k, r[k], v)
			}
		}
	}
}
