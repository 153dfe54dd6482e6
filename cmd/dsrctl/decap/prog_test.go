//go:build linux

package decap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/dsrlb/dsrlb/pipeline/pcap"
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

// ipv6 returns an IPv6 header (no extension headers) followed by payload.
func ipv6(src, dst string, next byte, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = next
	h[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
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

// Addresses of the IPv6 tests (documentation prefix, RFC 3849).
const (
	testVIP6    = "2001:db8:100::10"
	testClient6 = "2001:db8:7::7"
	testLB6     = "2001:db8:0:1::1"
	testBE6     = "2001:db8:0:1::2"
)

// innerPacket6 returns a client's IPv6 UDP datagram to dst, with the
// checksum IPv6 requires (RFC 8200 section 8.1).
func innerPacket6(dst string) []byte {
	seg := udp(40000, 53, []byte("hello dsr6"))
	pseudo := make([]byte, 40)
	s, d := netip.MustParseAddr(testClient6).As16(), netip.MustParseAddr(dst).As16()
	copy(pseudo, s[:])
	copy(pseudo[16:], d[:])
	binary.BigEndian.PutUint32(pseudo[32:], uint32(len(seg)))
	pseudo[39] = 17
	binary.BigEndian.PutUint16(seg[6:], checksum(append(pseudo, seg...)))
	return ipv6(testClient6, dst, 17, seg)
}

func requireBPF(t testing.TB) {
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
		if err := putVIP(coll.Maps[VIPMapName], coll.Maps[VIP6MapName], netip.MustParseAddr(vip), m); err != nil {
			t.Fatal(err)
		}
	}
	return coll.Programs[ProgramName], coll.Maps[StatsMapName]
}

// progCase is a frame in and the frame the program leaves.
type progCase struct {
	desc string
	in   []byte
	want []byte // nil: unchanged
}

// runCases runs the program on each case's frame (BPF_PROG_TEST_RUN) and
// checks the frame it leaves and that it hands every packet on. It returns
// the frames it left of the cases that change them.
func runCases(t *testing.T, prog *ebpf.Program, tests []progCase) [][]byte {
	t.Helper()
	var changed [][]byte
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
			if tc.want != nil {
				changed = append(changed, got)
			}
		})
	}
	return changed
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

	tests := []progCase{
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
	runCases(t, prog, tests)

	c, err := readCounters(stats)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counters{IPIP: 2, GRE: 1}); c != want {
		t.Errorf("got counters %+v, want %+v", c, want)
	}
}

// TestProgramDecapsulatesIPv6 covers every envelope with an IPv6 side:
// IPv6 outer headers around IPv6 (next header 41) and IPv4 (4) packets and
// GRE (47) with either inner family, and IPv4 outer headers around IPv6
// packets (protocol 41, GRE 0x86DD). When the family changes, so does the
// Ethernet type.
func TestProgramDecapsulatesIPv6(t *testing.T) {
	prog, stats := loadTestProgram(t, map[string]Mode{
		testVIP:            IPIP | GRE,
		testVIP6:           IPIP | GRE,
		"2001:db8:100::11": IPIP,
	})
	in4, in6 := innerPacket(testVIP), innerPacket6(testVIP6)
	hopByHop := ipv6(testLB6, testBE6, 0, append([]byte{41, 0, 1, 4, 0, 0, 0, 0}, in6...))
	v5 := ipv6(testLB6, testBE6, 41, in6)
	v5[0] = 0x50

	tests := []progCase{
		{"v6-in-v6 to VIP", ether(0x86dd, ipv6(testLB6, testBE6, 41, in6)), ether(0x86dd, in6)},
		{"v4-in-v6 to VIP", ether(0x86dd, ipv6(testLB6, testBE6, 4, in4)), ether(0x0800, in4)},
		{"gre over v6, inner v6", ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0, 0x86dd, in6))), ether(0x86dd, in6)},
		{"gre over v6, inner v4", ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0, 0x0800, in4))), ether(0x0800, in4)},
		{"v6-in-v4 (6in4) to VIP", ether(0x0800, ipv4(testLB, testBE, 41, in6)), ether(0x86dd, in6)},
		{"gre over v4, inner v6", ether(0x0800, ipv4(testLB, testBE, 47, gre(0, 0x86dd, in6))), ether(0x86dd, in6)},
		{"v6-in-v6 to second VIP", ether(0x86dd, ipv6(testLB6, testBE6, 41, innerPacket6("2001:db8:100::11"))), ether(0x86dd, innerPacket6("2001:db8:100::11"))},
		{"gre over v6 to VIP configured for ipip only", ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0, 0x86dd, innerPacket6("2001:db8:100::11")))), nil},
		{"v6-in-v6 to other address", ether(0x86dd, ipv6(testLB6, testBE6, 41, innerPacket6("2001:db8:100::99"))), nil},
		{"v6-in-v6, IPv4 VIP's bytes as inner IPv6 prefix", ether(0x86dd, ipv6(testLB6, testBE6, 41, innerPacket6("afb:a::"))), nil},
		{"plain IPv6 packet to VIP", ether(0x86dd, in6), nil},
		{"next header 41 carrying IPv4", ether(0x86dd, ipv6(testLB6, testBE6, 41, in4)), nil},
		{"next header 4 carrying IPv6", ether(0x86dd, ipv6(testLB6, testBE6, 4, in6)), nil},
		{"protocol 41 carrying IPv4", ether(0x0800, ipv4(testLB, testBE, 41, in4)), nil},
		{"gre 0x86DD carrying IPv4", ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0, 0x86dd, in4))), nil},
		{"gre over v6 with key flag", ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0x2000, 0x86dd, append([]byte{0, 0, 0, 1}, in6...)))), nil},
		{"outer extension header", ether(0x86dd, hopByHop), nil},
		{"outer version 5", ether(0x86dd, v5), nil},
		{"Ethernet IPv4 carrying an IPv6 header", ether(0x0800, ipv6(testLB6, testBE6, 41, in6)), nil},
		{"truncated inner IPv6", ether(0x86dd, ipv6(testLB6, testBE6, 41, in6[:39])), nil},
		{"frame for another host", etherTo([6]byte{0x02, 0, 0, 0, 0, 0x99}, 0x86dd, ipv6(testLB6, testBE6, 41, in6)), nil},
	}
	frames := runCases(t, prog, tests)
	// What an independent dissector makes of the frames the program left:
	// one IP header each (the inner one, of its own family behind the
	// right Ethernet type), to the VIP, the UDP checksum good (IPv6) or
	// absent as sent (IPv4, status 3). Port 53 reads as DNS.
	ip4, ip6 := "eth:ethertype:ip:udp:dns||"+testVIP+"|53|3", "eth:ethertype:ipv6:udp:dns|"+testVIP6+"||53|1"
	dissect(t, frames, []string{"frame.protocols", "ipv6.dst", "ip.dst", "udp.dstport", "udp.checksum.status"},
		[]string{ip6, ip4, ip6, ip4, ip6, ip6, strings.Replace(ip6, testVIP6, "2001:db8:100::11", 1)})

	c, err := readCounters(stats)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counters{IPIP: 4, GRE: 3}); c != want {
		t.Errorf("got counters %+v, want %+v", c, want)
	}
}

// dissect writes frames to a capture and checks, row by row, the fields
// tshark reads from them (joined by "|").
func dissect(t *testing.T, frames [][]byte, fields, want []string) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (make deps installs it)")
	}
	path := filepath.Join(t.TempDir(), "decapsulated.pcap")
	if err := pcap.WriteFile(path, frames); err != nil {
		t.Fatal(err)
	}
	args := []string{"-r", path, "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=|"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(got) != len(want) {
		t.Fatalf("tshark read %d frames, want %d:\n%s", len(got), len(want), out)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("tshark frame %d: %s = %q, want %q", i+1, strings.Join(fields, "|"), got[i], want[i])
		}
	}
}

// fuzzVIPs are the VIPs of FuzzProgram.
var fuzzVIPs = map[string]Mode{
	testVIP: IPIP | GRE, "10.251.0.11": IPIP,
	testVIP6: IPIP | GRE, "2001:db8:100::11": GRE,
}

// referenceDecap is the decapsulator's rule written plainly: the frame it
// leaves and the counter it bumps (-1: none) for frame f, run the way
// BPF_PROG_TEST_RUN runs it (on lo, whose MAC is all zeros).
func referenceDecap(f []byte, vips map[netip.Addr]Mode) ([]byte, int) {
	pass := func() ([]byte, int) { return f, -1 }
	if len(f) < ethLen || !bytes.Equal(f[:6], make([]byte, 6)) {
		return pass() // not addressed to this host
	}
	var off, outer int
	var proto byte
	switch binary.BigEndian.Uint16(f[ethTypeOff:]) {
	case ethTypeIPv4:
		if len(f) < outerOff+ipv4Len || f[outerOff] != 0x45 || binary.BigEndian.Uint16(f[outerFragOff:])&0x3fff != 0 ||
			checksum(f[outerOff:outerOff+ipv4Len]) != 0 {
			return pass()
		}
		proto, off, outer = f[outerProtoOf], outerOff+ipv4Len, ipv4Len
	case ethTypeIPv6:
		if len(f) < outerOff+ipv6Len || f[outerOff]>>4 != 6 {
			return pass()
		}
		proto, off, outer = f[outerNextOff], outerOff+ipv6Len, ipv6Len
	default:
		return pass()
	}
	var mode Mode
	var inner uint16
	switch proto {
	case protoIPIP:
		mode, inner = IPIP, ethTypeIPv4
	case protoIPv6:
		mode, inner = IPIP, ethTypeIPv6
	case protoGRE:
		if len(f) < off+greLen {
			return pass()
		}
		switch binary.BigEndian.Uint32(f[off:]) {
		case ethTypeIPv4:
			inner = ethTypeIPv4
		case ethTypeIPv6:
			inner = ethTypeIPv6
		default:
			return pass()
		}
		mode, off, outer = GRE, off+greLen, outer+greLen
	default:
		return pass()
	}
	var dst netip.Addr
	if inner == ethTypeIPv4 {
		if len(f) < off+ipv4Len || f[off]>>4 != 4 {
			return pass()
		}
		dst = netip.AddrFrom4([4]byte(f[off+inner4DstOff:]))
	} else {
		if len(f) < off+ipv6Len || f[off]>>4 != 6 {
			return pass()
		}
		dst = netip.AddrFrom16([16]byte(f[off+inner6DstOff:]))
	}
	if vips[dst]&mode == 0 {
		return pass()
	}
	out := append(append([]byte{}, f[:ethLen]...), f[ethLen+outer:]...)
	binary.BigEndian.PutUint16(out[ethTypeOff:], inner)
	if mode == IPIP {
		return out, CounterIPIP
	}
	return out, CounterGRE
}

// FuzzProgram holds the program to referenceDecap byte for byte, counter for
// counter, on any frame: every envelope of the table tests and mutations of
// them.
func FuzzProgram(f *testing.F) {
	requireBPF(f)
	in4, in6 := innerPacket(testVIP), innerPacket6(testVIP6)
	for _, seed := range [][]byte{
		ether(0x0800, ipv4(testLB, testBE, 4, in4)),
		ether(0x0800, ipv4(testLB, testBE, 47, gre(0, 0x0800, in4))),
		ether(0x0800, ipv4(testLB, testBE, 41, in6)),
		ether(0x0800, ipv4(testLB, testBE, 47, gre(0, 0x86dd, in6))),
		ether(0x86dd, ipv6(testLB6, testBE6, 41, in6)),
		ether(0x86dd, ipv6(testLB6, testBE6, 4, in4)),
		ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0, 0x86dd, in6))),
		ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0, 0x0800, innerPacket("10.251.0.11")))),
		ether(0x86dd, ipv6(testLB6, testBE6, 47, gre(0, 0x86dd, innerPacket6("2001:db8:100::11")))),
		ether(0x86dd, in6),
	} {
		f.Add(seed)
	}
	vips := map[netip.Addr]Mode{}
	for v, m := range fuzzVIPs {
		vips[netip.MustParseAddr(v)] = m
	}
	coll, err := ebpf.NewCollection(CollectionSpec())
	if err != nil {
		f.Fatalf("load: %v", err)
	}
	f.Cleanup(coll.Close)
	for v, m := range vips {
		if err := putVIP(coll.Maps[VIPMapName], coll.Maps[VIP6MapName], v, m); err != nil {
			f.Fatal(err)
		}
	}
	prog, stats := coll.Programs[ProgramName], coll.Maps[StatsMapName]
	f.Fuzz(func(t *testing.T, frame []byte) {
		before, err := readCounters(stats)
		if err != nil {
			t.Fatal(err)
		}
		opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+64)}
		ret, err := prog.Run(opts)
		if err != nil {
			return // a frame BPF_PROG_TEST_RUN does not take (shorter than Ethernet, say)
		}
		after, err := readCounters(stats)
		if err != nil {
			t.Fatal(err)
		}
		if int32(ret) != TCXNext {
			t.Errorf("got return %d, want TCX_NEXT", int32(ret))
		}
		want, counter := referenceDecap(frame, vips)
		if got := opts.DataOut; !bytes.Equal(got, want) {
			t.Errorf("frame\n%x\ngot\n%x\nwant\n%x", frame, got, want)
		}
		delta := Counters{IPIP: after.IPIP - before.IPIP, GRE: after.GRE - before.GRE, AdjustErrors: after.AdjustErrors - before.AdjustErrors}
		var wantDelta Counters
		switch counter {
		case CounterIPIP:
			wantDelta.IPIP = 1
		case CounterGRE:
			wantDelta.GRE = 1
		}
		if delta != wantDelta {
			t.Errorf("frame\n%x\ncounted %+v, want %+v", frame, delta, wantDelta)
		}
	})
}

// TestApplianceEnvelopes runs the envelopes dsrlb itself writes (the golden
// captures of its replay tests, cmd/dsrlb/testdata/replay6_*.pcap) through
// the program: every one is stripped, as the reference says, and counted in
// its mode. The captures come with dsrlb's IPv6 data plane; a tree without
// them skips.
func TestApplianceEnvelopes(t *testing.T) {
	requireBPF(t)
	// The VIPs of dsrlb's replay tests.
	vips := map[netip.Addr]Mode{
		netip.MustParseAddr("203.0.113.10"):     IPIP | GRE,
		netip.MustParseAddr("2001:db8:100::10"): IPIP | GRE,
	}
	for _, tc := range []struct {
		file string
		want int // counter
	}{
		{"replay6_v6_in_v6.pcap", CounterIPIP},
		{"replay6_v4_in_v6.pcap", CounterIPIP},
		{"replay6_v6_in_v4.pcap", CounterIPIP},
		{"replay6_gre_v6.pcap", CounterGRE},
		{"replay6_gre_v4_v6_inner.pcap", CounterGRE},
	} {
		t.Run(tc.file, func(t *testing.T) {
			frames, err := pcap.ReadFile(filepath.Join("..", "..", "dsrlb", "testdata", tc.file))
			if errors.Is(err, os.ErrNotExist) {
				t.Skipf("%s: not in this tree", tc.file)
			}
			if err != nil {
				t.Fatal(err)
			}
			coll, err := ebpf.NewCollection(CollectionSpec())
			if err != nil {
				t.Fatal(err)
			}
			defer coll.Close()
			for v, m := range vips {
				if err := putVIP(coll.Maps[VIPMapName], coll.Maps[VIP6MapName], v, m); err != nil {
					t.Fatal(err)
				}
			}
			for i, frame := range frames {
				// BPF_PROG_TEST_RUN runs on lo: to its MAC, all zeros,
				// the frame is addressed to this host.
				in := append(make([]byte, 6), frame[6:]...)
				opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+64)}
				if _, err := coll.Programs[ProgramName].Run(opts); err != nil {
					t.Fatal(err)
				}
				want, counter := referenceDecap(in, vips)
				if counter != tc.want || !bytes.Equal(opts.DataOut, want) {
					t.Fatalf("frame %d: not stripped as the reference says (counter %d, want %d)\nin  %x\nout %x", i, counter, tc.want, in, opts.DataOut)
				}
			}
			c, err := readCounters(coll.Maps[StatsMapName])
			if err != nil {
				t.Fatal(err)
			}
			want := Counters{IPIP: uint64(len(frames))}
			if tc.want == CounterGRE {
				want = Counters{GRE: uint64(len(frames))}
			}
			if len(frames) == 0 || c != want {
				t.Errorf("%d frames, counters %+v, want %+v", len(frames), c, want)
			}
		})
	}
}
