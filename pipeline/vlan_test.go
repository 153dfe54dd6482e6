package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	. "github.com/dsrlb/dsrlb/pipeline"
	"github.com/dsrlb/dsrlb/pipeline/testpkt"
)

// On an 802.1Q trunk port: L2 DSR keeps a packet on its VLAN (the tag
// stays, only the MACs change), an L3 envelope leaves untagged (TestRewrite
// "ipip tagged", "gre padded and tagged"), a fragmentation-needed answer
// goes back on the client's VLAN (TestFragNeeded), and stacked tags (QinQ)
// are not parsed.

// trunkTCI is an 802.1Q tag control field with every part set: PCP 5,
// DEI 1, VID 100.
const trunkTCI = 5<<13 | 1<<12 | 100

// trunk returns p tagged with trunkTCI.
func trunk(p testpkt.Packet) testpkt.Packet {
	p.VLAN = trunkTCI
	return p
}

// tagFields splits the 802.1Q tag at frame[12:16].
func tagFields(frame []byte) (tpid uint16, pcp, dei uint8, vid uint16) {
	tci := binary.BigEndian.Uint16(frame[14:])
	return binary.BigEndian.Uint16(frame[12:]), uint8(tci >> 13), uint8(tci >> 12 & 1), tci & 0xfff
}

// checkTag reports, under label, how the tag of got differs from TPID
// 0x8100 with trunkTCI's PCP, DEI and VID.
func checkTag(t *testing.T, label string, got []byte) {
	t.Helper()
	tpid, pcp, dei, vid := tagFields(got)
	if tpid != EtherTypeVLAN || pcp != 5 || dei != 1 || vid != 100 {
		t.Errorf("%s: tag TPID %#04x PCP %d DEI %d VID %d, want 0x8100 5 1 100", label, tpid, pcp, dei, vid)
	}
}

func TestVLANL2KeepsTag(t *testing.T) {
	s := testSnapshot(t)
	backendMACs := map[MAC]bool{be1MAC: true, {2, 0, 0, 0, 0, 0x22}: true}
	for _, tc := range []struct {
		desc string
		in   testpkt.Packet
	}{
		{"tcp", trunk(tcpTo(vipL2, 80, 1234))},
		{"tcp padded", func() testpkt.Packet { p := trunk(tcpTo(vipL2, 80, 1235)); p.Payload = nil; p.PadTo = 64; return p }()},
		{"ttl 1 (l2 does not route)", func() testpkt.Packet { p := trunk(tcpTo(vipL2, 80, 1236)); p.TTL = 1; return p }()},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			frame := tc.in.Build()
			tot := int(binary.BigEndian.Uint16(frame[18+2:]))
			p := newPacket(frame)
			v, out := f.Process(s, p, 0)
			if v != VerdictTx || out != 0 {
				t.Fatalf("verdict %v port %d, want tx 0; drops %v", v, out, f.C.Drops)
			}
			got := p.Data()
			if p.Off != headroom || len(got) != 18+tot {
				t.Errorf("frame at offset %d, %d bytes; want %d, %d (tagged header and IP packet, no padding)", p.Off, len(got), headroom, 18+tot)
			}
			if dst := MAC(got[0:6]); !backendMACs[dst] {
				t.Errorf("dst MAC %v is no backend's", dst)
			}
			if src := MAC(got[6:12]); src != portMAC {
				t.Errorf("src MAC %v, want the port's %v", src, portMAC)
			}
			checkTag(t, "out", got)
			if et := binary.BigEndian.Uint16(got[16:]); et != EtherTypeIPv4 {
				t.Errorf("ethertype %#04x, want 0x0800", et)
			}
			if !bytes.Equal(got[18:], frame[18:18+tot]) {
				t.Errorf("IP packet changed:\n got %x\nwant %x", got[18:], frame[18:18+tot])
			}
		})
	}
}

// stackTag returns frame with a tag of TPID tpid and TCI tci inserted
// before its first tag or EtherType.
func stackTag(frame []byte, tpid, tci uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, tci)
	return append(out, frame[12:]...)
}

func TestVLANStackedTagsDropped(t *testing.T) {
	s := testSnapshot(t)
	inner := trunk(tcpTo(vipL2, 80, 1)).Build()
	untagged := tcpTo(vipL2, 80, 1).Build()
	for _, tc := range []struct {
		desc  string
		frame []byte
	}{
		{"802.1ad outer, 802.1Q inner (QinQ)", stackTag(inner, 0x88a8, 10)},
		{"two 802.1Q tags", stackTag(inner, EtherTypeVLAN, 10)},
		{"802.1ad tag alone", stackTag(untagged, 0x88a8, 10)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			if v, _ := f.Process(s, newPacket(tc.frame), 0); v != VerdictDrop {
				t.Fatalf("verdict %v, want drop", v)
			}
			if f.C.Drops[DropNotIP] != 1 || f.C.Dropped() != 1 {
				t.Errorf("drops %v, want one %s", f.C.Drops, DropNotIP)
			}
		})
	}
}

func TestVLANKernelFramesUnchanged(t *testing.T) {
	s := testSnapshot(t)
	arp := make([]byte, 64)
	copy(arp[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(arp[6:12], gwMAC[:])
	binary.BigEndian.PutUint16(arp[12:], EtherTypeVLAN)
	binary.BigEndian.PutUint16(arp[14:], trunkTCI)
	binary.BigEndian.PutUint16(arp[16:], EtherTypeARP)
	for _, tc := range []struct {
		desc  string
		frame []byte
	}{
		{"arp", arp},
		{"tcp to own address", trunk(tcpTo(portIP, 179, 1)).Build()},
		{"echo to VIP", testpkt.Packet{Src: clientIP, Dst: vipL2, Proto: ProtoICMP, ICMPType: ICMPEchoRequest, VLAN: trunkTCI}.Build()},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			f := NewForwarder(1024, DefaultFlowTimeouts, 0)
			f.Use(s)
			p := newPacket(tc.frame)
			if v, _ := f.Process(s, p, 0); v != VerdictKernel {
				t.Fatalf("verdict %v, want kernel", v)
			}
			if !bytes.Equal(p.Data(), tc.frame) {
				t.Errorf("kernel-bound frame was modified:\n got %x\nwant %x", p.Data(), tc.frame)
			}
		})
	}
}
