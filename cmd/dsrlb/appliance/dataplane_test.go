package appliance

import (
	"slices"
	"strings"
	"testing"

	"github.com/dsrlb/dsrlb/dpdk"
)

func TestLcoreMap(t *testing.T) {
	for _, tc := range []struct {
		workers, ncpu int
		want          string
	}{
		{1, 2, "-l 0,1"},
		{3, 4, "-l 0,1,2,3"},
		{2, 2, "--lcores 0@(0-1),1@1,2@0"},
		{4, 2, "--lcores 0@(0-1),1@1,2@0,3@1,4@0"},
		{1, 1, "--lcores 0@(0-0),1@0"},
	} {
		if got := strings.Join(lcoreMap(tc.workers, tc.ncpu), " "); got != tc.want {
			t.Errorf("lcoreMap(%d workers, %d CPUs) = %q, want %q", tc.workers, tc.ncpu, got, tc.want)
		}
	}
}

func TestEALArgsKeepsGivenLcoresAndIsIdempotent(t *testing.T) {
	given := []string{"--no-huge", "--lcores", "0@0,1@1", "--file-prefix", "x"}
	got := ealArgs(given, 1)
	if want := append(slices.Clone(given), "--log-level", "*:warning"); !slices.Equal(got, want) {
		t.Errorf("ealArgs(%q) = %q, want %q", given, got, want)
	}
	once := ealArgs([]string{"--no-huge"}, 1)
	if twice := ealArgs(once, 1); !slices.Equal(once, twice) {
		t.Errorf("ealArgs twice = %q, once %q", twice, once)
	}
	if !slices.Contains(once, "--file-prefix") || !(slices.Contains(once, "-l") || slices.Contains(once, "--lcores")) {
		t.Errorf("ealArgs(--no-huge) = %q: want a file prefix and lcores", once)
	}
}

func TestEALMemoryArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-huge", "--no-pci"}, "--no-huge --no-pci -m 80"},
		{[]string{"--no-huge", "-m", "512"}, "--no-huge -m 512"},
		{[]string{"--no-huge", "-m512"}, "--no-huge -m512"},
		{[]string{"--no-huge", "--socket-mem", "256"}, "--no-huge --socket-mem 256"},
		{[]string{"--no-huge", "--socket-mem=256"}, "--no-huge --socket-mem=256"},
		{[]string{"--no-pci"}, "--no-pci"}, // hugepages: the EAL grows its memory itself
	} {
		if got := strings.Join(ealMemoryArgs(tc.args, 16), " "); got != tc.want {
			t.Errorf("ealMemoryArgs(%q, 16 MB) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestMbufPoolMB pins the memory model to what DPDK 22.11 was seen to fit
// in -m 64 with --no-huge: 16055 mbufs of the default data room (one per 4 KB
// page), 7 per page of a 384-byte data room.
func TestMbufPoolMB(t *testing.T) {
	for _, tc := range []struct {
		n    uint32
		room uint16
		want uint64
	}{
		{16055, dpdk.DefaultDataRoom, 63}, // 16055 pages + a 16384-slot ring: fits in 64
		{16384, dpdk.DefaultDataRoom, 65}, // 64 MB of pages and a 32768-slot ring
		{7 * 256, 384, 2},                 // 256 pages (1 MB) and a 2048-slot ring
		{1 << 20, 384, 602},               // 149797 pages (585.1 MB) and a 2^21-slot ring (16 MB)
		{1000, 10000, 12},                 // 10192-byte objects take 3 pages each
	} {
		if got := mbufPoolMB(tc.n, tc.room); got != tc.want {
			t.Errorf("mbufPoolMB(%d, %d) = %d MB, want %d", tc.n, tc.room, got, tc.want)
		}
	}
}

// TestPoolMbufsFollowsQueues: the pool is sized by ports, taps, workers and
// descriptors, never by traffic, and holds every descriptor with room to
// spare.
func TestPoolMbufsFollowsQueues(t *testing.T) {
	replay := []Port{{Name: "eth0"}}
	appliance := []Port{{Name: "eth0", Tap: "dsr-eth0"}}
	for _, tc := range []struct {
		name    string
		ports   []Port
		workers int
		desc    uint32 // descriptors the queues hold
	}{
		{"replay", replay, 1, 2048},
		{"appliance", appliance, 1, 4096},
		{"appliance 4 workers", appliance, 4, 16384},
		{"bench sink", []Port{{Name: "a"}, {Name: "b", TxOnly: true}}, 2, 2*2048 + 2*1024},
	} {
		got := poolMbufs(tc.ports, tc.workers)
		if got <= tc.desc || got > 2*tc.desc {
			t.Errorf("%s: poolMbufs = %d, want more than the %d descriptors and at most twice", tc.name, got, tc.desc)
		}
	}
	if a, b := poolMbufs(appliance, 1), poolMbufs(appliance, 2); b <= a {
		t.Errorf("poolMbufs: 2 workers %d, 1 worker %d: want more", b, a)
	}
}
