//go:build linux

package decap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// Packet builders: readable constructors, not hex blobs.

// ipv4 returns an IPv4 header (no options) with a valid checksum followed by
// payload.
func ipv4(src, dst string, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], 0x1234) // ID
	binary.BigEndian.PutUint16(h[6:], 0x4000) // DF
	h[8] = 64
	h[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	return append(h, payload...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// udp returns a UDP header (checksum 0: none) and payload.
func udp(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...)
}

// gre returns a GRE base header with the given flags/version word and
// protocol, followed by payload.
func gre(flags, proto uint16, payload []byte) []byte {
	h := make([]byte, 4, 4+len(payload))
	binary.BigEndian.PutUint16(h[0:], flags)
	binary.BigEndian.PutUint16(h[2:], proto)
	return append(h, payload...)
}

// ether returns an Ethernet frame to the all-zero MAC (the MAC of lo, the
// device BPF_PROG_TEST_RUN uses, so the packet counts as PACKET_HOST).
func ether(ethType uint16, payload []byte) []byte {
	return etherTo([6]byte{}, ethType, payload)
}

// etherTo returns an Ethernet frame to dst.
func etherTo(dst [6]byte, ethType uint16, payload []byte) []byte {
	h := make([]byte, 14, 14+len(payload))
	copy(h, dst[:])
	copy(h[6:], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(h[12:], ethType)
	return append(h, payload...)
}

const (
	testVIP    = "10.251.0.10"
	testClient = "192.0.2.7"
	testLB     = "10.250.0.1"
	testBE     = "10.250.0.2"
)

func innerPacket(dst string) []byte {
	return ipv4(testClient, dst, 17, udp(40000, 53, []byte("hello dsr")))
}

func requireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for BPF")
	}
}

// loadTestProgram loads the decapsulator with unpinned maps holding vips.
func loadTestProgram(t *testing.T, vips map[string]Mode) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	requireBPF(t)
	coll, err := ebpf.NewCollection(CollectionSpec())
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier: %+v", ve)
		}
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(coll.Close)
	for vip, m := range vips {
		if err := coll.Maps[VIPMapName].Put(vipKey(netip.MustParseAddr(vip).As4()), uint32(m)); err != nil {
			t.Fatal(err)
		}
	}
	return coll.Programs[ProgramName], coll.Maps[StatsMapName]
}

func TestProgramDecapsulates(t *testing.T) {
	prog, stats := loadTestProgram(t, map[string]Mode{testVIP: IPIP | GRE, "10.251.0.11": IPIP})
	inner := innerPacket(testVIP)
	badSum := ipv4(testLB, testBE, 4, inner)
	badSum[10] ^= 0xff
	withOptions := ipv4(testLB, testBE, 4, inner)
	withOptions[0] = 0x46
	fragment := ipv4(testLB, testBE, 4, inner)
	fragment[6] |= 0x20 // MF

	tests := []struct {
		desc string
		in   []byte
		want []byte // nil: unchanged
	}{
		{"ipip to VIP", ether(0x0800, ipv4(testLB, testBE, 4, inner)), ether(0x0800, inner)},
		{"gre to VIP", ether(0x0800, ipv4(testLB, testBE, 47, gre(0, 0x0800, inner))), ether(0x0800, inner)},
		{"ipip to second VIP", ether(0x0800, ipv4(testLB, testBE, 4, innerPacket("10.251.0.11"))), ether(0x0800, innerPacket("10.251.0.11"))},
		{"gre to VIP configured for ipip only", ether(0x0800, ipv4(testLB, testBE, 47, gre(0, 0x0800, innerPacket("10.251.0.11")))), nil},
		{"ipip to other address", ether(0x0800, ipv4(testLB, testBE, 4, innerPacket("10.251.0.99"))), nil},
		{"plain packet to VIP", ether(0x0800, inner), nil},
		{"gre with key flag", ether(0x0800, ipv4(testLB, testBE, 47, gre(0x2000, 0x0800, append([]byte{0, 0, 0, 1}, inner...)))), nil},
		{"gre with checksum flag", ether(0x0800, ipv4(testLB, testBE, 47, gre(0x8000, 0x0800, append([]byte{0, 0, 0, 0}, inner...)))), nil},
		{"gre carrying IPv6", ether(0x0800, ipv4(testLB, testBE, 47, gre(0, 0x86dd, inner))), nil},
		{"outer checksum wrong", ether(0x0800, badSum), nil},
		{"outer with options", ether(0x0800, withOptions), nil},
		{"outer fragment", ether(0x0800, fragment), nil},
		{"truncated inner", ether(0x0800, ipv4(testLB, testBE, 4, inner[:12])), nil},
		{"arp", ether(0x0806, make([]byte, 28)), nil},
		{"frame for another host", etherTo([6]byte{0x02, 0, 0, 0, 0, 0x99}, 0x0800, ipv4(testLB, testBE, 4, inner)), nil},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			out := make([]byte, len(tc.in)+64)
			ret, err := prog.Run(&ebpf.RunOptions{Data: tc.in, DataOut: out})
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if int32(ret) != TCXNext {
				t.Errorf("got return %d, want %d (TCX_NEXT)", int32(ret), TCXNext)
			}
			want := tc.want
			if want == nil {
				want = tc.in
			}
			// DataOut is sized by the kernel; the output length is
			// the packet length.
			got := out[:len(want)]
			if !bytes.Equal(got, want) {
				t.Errorf("got packet\n%x\nwant\n%x", got, want)
			}
		})
	}

	c, err := readCounters(stats)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counters{IPIP: 2, GRE: 1}); c != want {
		t.Errorf("got counters %+v, want %+v", c, want)
	}
}
