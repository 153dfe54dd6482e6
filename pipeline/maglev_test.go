package pipeline

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/spaolacci/murmur3"
)

// updateGolden rewrites golden files under testdata instead of comparing:
// go test -run TestMaglevGolden -update
var updateGolden = flag.Bool("update", false, "rewrite golden files in testdata")

// maglevKeys returns n backends "10.0.<i/250>.<i%250+1>" of the given weight.
func maglevKeys(n int, weight uint32) []MaglevBackend {
	bs := make([]MaglevBackend, n)
	for i := range bs {
		bs[i] = MaglevBackend{Key: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Weight: weight}
	}
	return bs
}

// mustBuildMaglev builds a table and checks the invariants every table has:
// each slot is owned by a backend of weight > 0, or all slots are
// MaglevNone when there is none.
func mustBuildMaglev(t testing.TB, bs []MaglevBackend, size, seed uint32) []uint16 {
	t.Helper()
	table, err := BuildMaglev(bs, size, seed)
	if err != nil {
		t.Fatalf("BuildMaglev(%d backends, %d, %d): got error %v, want nil", len(bs), size, seed, err)
	}
	checkMaglevTable(t, table, bs, size)
	return table
}

func checkMaglevTable(t testing.TB, table []uint16, bs []MaglevBackend, size uint32) {
	t.Helper()
	if uint32(len(table)) != size {
		t.Fatalf("got table of %d slots, want %d", len(table), size)
	}
	weighted := false
	for _, b := range bs {
		weighted = weighted || b.Weight > 0
	}
	for s, e := range table {
		switch {
		case !weighted && e != MaglevNone:
			t.Fatalf("slot %d: got owner %d, want MaglevNone (no backend has weight)", s, e)
		case weighted && (int(e) >= len(bs) || bs[e].Weight == 0):
			t.Fatalf("slot %d: got owner %d, want a backend of weight > 0", s, e)
		}
	}
}

// ownerKeys maps a table to the owners' keys, "" for MaglevNone.
func ownerKeys(table []uint16, bs []MaglevBackend) []string {
	keys := make([]string, len(table))
	for s, e := range table {
		if e != MaglevNone {
			keys[s] = bs[e].Key
		}
	}
	return keys
}

func TestMaglevSizes(t *testing.T) {
	sizes := MaglevSizes()
	hasDefault := false
	for i, m := range sizes {
		for d := uint32(2); d*d <= m; d++ {
			if m%d == 0 {
				t.Errorf("size %d: got divisor %d, want a prime", m, d)
			}
		}
		if i > 0 && sizes[i-1] >= m {
			t.Errorf("sizes[%d] = %d after %d: want ascending", i, m, sizes[i-1])
		}
		if !IsMaglevSize(m) {
			t.Errorf("IsMaglevSize(%d): got false, want true", m)
		}
		hasDefault = hasDefault || m == DefaultMaglevSize
	}
	if !hasDefault {
		t.Errorf("MaglevSizes() = %v: got no DefaultMaglevSize %d, want it listed", sizes, DefaultMaglevSize)
	}
	sizes[0] = 7
	if got := MaglevSizes()[0]; got != 251 {
		t.Errorf("after changing a returned slice: got MaglevSizes()[0] = %d, want 251", got)
	}
	for _, m := range []uint32{0, 1, 2, 250, 65536, 65521} {
		if IsMaglevSize(m) {
			t.Errorf("IsMaglevSize(%d): got true, want false", m)
		}
	}
}

// TestMaglevHash pins the hash of contract item 1 to the reference
// MurmurHash3_x86_32 vectors (SMHasher) and to github.com/spaolacci/murmur3.
func TestMaglevHash(t *testing.T) {
	tests := []struct {
		in   string
		seed uint32
		want uint32
	}{
		{"", 0, 0x00000000},
		{"", 1, 0x514e28b7},
		{"hello", 0, 0x248bfa47},
		{"hello, world", 0, 0x149bbb7f},
		{"hello, world", 1, 0x6f5cb2e9},
		{"19 Jan 2038 at 3:14:07 AM", 0x2a, 0x58f745f6},
		{"The quick brown fox jumps over the lazy dog.", 0x2a, 0xc02d1434},
	}
	t.Run("SMHasher vectors", func(t *testing.T) {
		for _, tt := range tests {
			if got := maglevHash(tt.in, tt.seed); got != tt.want {
				t.Errorf("maglevHash(%q, %#x): got %#08x, want %#08x", tt.in, tt.seed, got, tt.want)
			}
		}
	})
	t.Run("equals spaolacci/murmur3", func(t *testing.T) {
		if raceEnabled() {
			t.Skip("murmur3.Sum32WithSeed fails checkptr under -race (spaolacci/murmur3#34)")
		}
		rng := rand.New(rand.NewPCG(5, 6))
		for run := range 2000 {
			b := make([]byte, rng.IntN(40))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			seed := rng.Uint32()
			if got, want := maglevHash(string(b), seed), murmur3.Sum32WithSeed(b, seed); got != want {
				t.Fatalf("run %d: maglevHash(%x, %#x): got %#08x, want murmur3 %#08x", run, b, seed, got, want)
			}
		}
	})
}

func TestMaglevErrors(t *testing.T) {
	tests := []struct {
		desc     string
		backends []MaglevBackend
		size     uint32
		want     string // substring of the error
	}{
		{"size not prime", maglevKeys(3, 1), 65536, "table size 65536"},
		{"size prime but not listed", maglevKeys(3, 1), 65521, "table size 65521"},
		{"size zero", nil, 0, "table size 0"},
		{"more backends than slots", maglevKeys(252, 1), 251, "252 backends, want at most 251"},
		{"more than MaxMaglevBackends", maglevKeys(MaxMaglevBackends+1, 0), 131071, "65535 backends, want at most 65534"},
		{"duplicate key", []MaglevBackend{{"10.0.0.1", 1}, {"10.0.0.2", 1}, {"10.0.0.1", 0}}, 251,
			`backend 2: duplicate key "10.0.0.1" (also backend 0)`},
		{"empty key", []MaglevBackend{{"10.0.0.1", 1}, {"", 1}}, 251, "backend 1: empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			table, err := BuildMaglev(tt.backends, tt.size, 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if table != nil {
				t.Errorf("got a table of %d slots with the error, want nil", len(table))
			}
		})
	}
	t.Run("into table of bad length", func(t *testing.T) {
		err := BuildMaglevInto(make([]uint16, 100), maglevKeys(3, 1), 0)
		if err == nil || !strings.Contains(err.Error(), "table size 100") {
			t.Fatalf("got error %v, want one containing %q", err, "table size 100")
		}
	})
	t.Run("MaxMaglevBackends accepted", func(t *testing.T) {
		bs := maglevKeys(MaxMaglevBackends, 1)
		mustBuildMaglev(t, bs, 131071, 0)
	})
}

func TestMaglevDeterminism(t *testing.T) {
	weighted := maglevKeys(50, 1)
	for i := range weighted {
		weighted[i].Weight = uint32(i % 7) // includes weight 0
	}
	heavy := maglevKeys(60, 1)
	heavy[42].Weight = 1000
	tests := []struct {
		desc     string
		backends []MaglevBackend
		size     uint32
		seed     uint32
	}{
		{"5 equal, 251", maglevKeys(5, 1), 251, 0},
		{"100 equal, default size", maglevKeys(100, 1), DefaultMaglevSize, 0},
		{"100 equal, seeded", maglevKeys(100, 3), DefaultMaglevSize, 0xdeadbeef},
		{"50 weighted with zeros", weighted, 4093, 7},
		{"skewed weights", []MaglevBackend{{"a", 1}, {"b", 1 << 31}, {"c", 5}, {"d", 1 << 20}}, 8191, 1},
		{"one heavy among many (heap schedule)", heavy, 8191, 1},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			want := ownerKeys(mustBuildMaglev(t, tt.backends, tt.size, tt.seed), tt.backends)
			rng := rand.New(rand.NewPCG(1, 2))
			for run := range 5 {
				bs := append([]MaglevBackend(nil), tt.backends...)
				rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
				got := ownerKeys(mustBuildMaglev(t, bs, tt.size, tt.seed), bs)
				for s := range got {
					if got[s] != want[s] {
						t.Fatalf("shuffle %d, slot %d: got owner %q, want %q", run, s, got[s], want[s])
					}
				}
			}
			// A different seed must give a different table.
			other := ownerKeys(mustBuildMaglev(t, tt.backends, tt.size, tt.seed+1), tt.backends)
			same := 0
			for s := range other {
				if other[s] == want[s] {
					same++
				}
			}
			if same == len(other) && len(tt.backends) > 1 {
				t.Errorf("seed %d and %d: got identical tables, want different", tt.seed, tt.seed+1)
			}
		})
	}
}

// TestMaglevSchedulesAgree checks that the round and the heap schedule give
// the same table (contract item 5 has one meaning).
func TestMaglevSchedulesAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for run := range 200 {
		n := 1 + rng.IntN(40)
		bs := maglevKeys(n, 0)
		maxW := []uint32{1, 4, 100, 1 << 16, 1<<32 - 1}[rng.IntN(5)]
		for i := range bs {
			bs[i].Weight = rng.Uint32N(maxW) + 1
			if rng.IntN(5) == 0 {
				bs[i].Weight = 0
			}
		}
		size := []uint32{251, 509, 1021, 2039}[rng.IntN(4)]
		seed := rng.Uint32()
		rounds, heap := make([]uint16, size), make([]uint16, size)
		if err := buildMaglev(rounds, bs, seed, maglevRounds); err != nil {
			t.Fatalf("run %d: rounds: got error %v, want nil", run, err)
		}
		if err := buildMaglev(heap, bs, seed, maglevHeap); err != nil {
			t.Fatalf("run %d: heap: got error %v, want nil", run, err)
		}
		for s := range rounds {
			if rounds[s] != heap[s] {
				t.Fatalf("run %d (%d backends, max weight %d, size %d, seed %d), slot %d: got heap owner %d, want round owner %d",
					run, n, maxW, size, seed, s, heap[s], rounds[s])
			}
		}
	}
}

// rleOwners renders a table as a run-length encoding of its owners' keys:
// one "key count" line per run, slot 0 first, "-" for MaglevNone.
func rleOwners(table []uint16, bs []MaglevBackend) []byte {
	var b bytes.Buffer
	keys := ownerKeys(table, bs)
	for s := 0; s < len(keys); {
		e := s
		for e < len(keys) && keys[e] == keys[s] {
			e++
		}
		k := keys[s]
		if k == "" {
			k = "-"
		}
		fmt.Fprintf(&b, "%s %d\n", k, e-s)
		s = e
	}
	return b.Bytes()
}

// TestMaglevGolden pins tables byte for byte (the compatibility contract in
// maglev.go). A failure here means other appliances would disagree: do not
// just regenerate with -update unless the change is deliberate.
func TestMaglevGolden(t *testing.T) {
	five := func(weights ...uint32) []MaglevBackend {
		bs := make([]MaglevBackend, len(weights))
		for i, w := range weights {
			bs[i] = MaglevBackend{Key: fmt.Sprintf("10.0.0.%d", i+1), Weight: w}
		}
		return bs
	}
	tests := []struct {
		file     string
		backends []MaglevBackend
		size     uint32
		seed     uint32
	}{
		{"maglev_251.golden", five(1, 1, 1, 1, 1), 251, 0},
		{"maglev_251_weighted.golden", five(1, 2, 0, 4, 5), 251, 42},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var b bytes.Buffer
			fmt.Fprintf(&b, "# BuildMaglev size=%d seed=%d backends=", tt.size, tt.seed)
			for i, be := range tt.backends {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "%s/%d", be.Key, be.Weight)
			}
			b.WriteString("\n# run-length encoded owners, slot 0 first: key count\n")
			b.Write(rleOwners(mustBuildMaglev(t, tt.backends, tt.size, tt.seed), tt.backends))
			got := b.Bytes()

			path := filepath.Join("testdata", tt.file)
			if *updateGolden {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden: %v (regenerate with go test -run TestMaglevGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
				for i := range max(len(gl), len(wl)) {
					g, w := "<eof>", "<eof>"
					if i < len(gl) {
						g = gl[i]
					}
					if i < len(wl) {
						w = wl[i]
					}
					if g != w {
						t.Fatalf("%s line %d: got %q, want %q", path, i+1, g, w)
					}
				}
			}
		})
	}
}

// maglevMoved counts slots owned, before and after, by backends other than
// key that changed owner, and the slots those backends held before.
func maglevMoved(before, after []string, key string) (moved, others int) {
	for s := range before {
		if before[s] == key || after[s] == key {
			continue
		}
		others++
		if before[s] != after[s] {
			moved++
		}
	}
	return moved, others
}

func TestMaglevDisruption(t *testing.T) {
	const n, size = 100, DefaultMaglevSize
	all := maglevKeys(n+1, 1)
	base, extra := all[:n], all[n]
	before := ownerKeys(mustBuildMaglev(t, base, size, 0), base)

	tests := []struct {
		desc    string
		after   []MaglevBackend
		changed string // key of the removed or added backend
	}{
		{"remove first", base[1:], base[0].Key},
		{"remove middle", append(append([]MaglevBackend(nil), base[:50]...), base[51:]...), base[50].Key},
		{"remove last", base[:n-1], base[n-1].Key},
		{"add one", all, extra.Key},
		{"drain one (weight 0)", func() []MaglevBackend {
			bs := append([]MaglevBackend(nil), base...)
			bs[17].Weight = 0
			return bs
		}(), base[17].Key},
		{"double one's weight", func() []MaglevBackend {
			bs := append([]MaglevBackend(nil), base...)
			bs[33].Weight = 2
			return bs
		}(), base[33].Key},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			after := ownerKeys(mustBuildMaglev(t, tt.after, size, 0), tt.after)
			moved, others := maglevMoved(before, after, tt.changed)
			pct := 100 * float64(moved) / float64(others)
			t.Logf("%d of %d slots of the other backends moved (%.3f%%)", moved, others, pct)
			if pct >= 2 {
				t.Errorf("got %.3f%% of the other backends' slots moved, want under 2%%", pct)
			}
		})
	}
}

func TestMaglevWeightedShares(t *testing.T) {
	tests := []struct {
		desc    string
		weights []uint32
		size    uint32
	}{
		{"1,2,3,4", []uint32{1, 2, 3, 4}, DefaultMaglevSize},
		{"1,2,3,4 with a 0", []uint32{1, 0, 2, 3, 4}, DefaultMaglevSize},
		{"equal 10", []uint32{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}, DefaultMaglevSize},
		{"100 and 1", []uint32{100, 1}, DefaultMaglevSize},
		{"large weights", []uint32{1 << 30, 3 << 29, 1<<32 - 1}, DefaultMaglevSize},
		{"1..64", func() []uint32 {
			ws := make([]uint32, 64)
			for i := range ws {
				ws[i] = uint32(i + 1)
			}
			return ws
		}(), 131071},
		{"all 0", []uint32{0, 0, 0}, 251},
		{"no backends", nil, 251},
		{"single", []uint32{7}, 251},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			bs := make([]MaglevBackend, len(tt.weights))
			var sum float64
			for i, w := range tt.weights {
				bs[i] = MaglevBackend{Key: fmt.Sprintf("192.0.2.%d", i+1), Weight: w}
				sum += float64(w)
			}
			table := mustBuildMaglev(t, bs, tt.size, 0)
			counts := make([]int, len(bs))
			none := 0
			for _, e := range table {
				if e == MaglevNone {
					none++
					continue
				}
				counts[e]++
			}
			if sum == 0 {
				if none != len(table) {
					t.Fatalf("got %d of %d slots MaglevNone, want all", none, len(table))
				}
				return
			}
			var shares []string
			for i, w := range tt.weights {
				want := float64(w) / sum
				got := float64(counts[i]) / float64(len(table))
				shares = append(shares, fmt.Sprintf("w%d:%.4f/%.4f", w, got, want))
				if w == 0 && counts[i] != 0 {
					t.Errorf("backend %d (weight 0): got %d slots, want 0", i, counts[i])
				}
				if d := got - want; d > want/100 || d < -want/100 {
					t.Errorf("backend %d (weight %d): got share %.5f, want %.5f ± 1%%", i, w, got, want)
				}
			}
			t.Logf("shares got/want: %s", strings.Join(shares, " "))
		})
	}
}

// buildSetting returns a setting of the test binary's build info.
func buildSetting(key string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == key {
				return s.Value
			}
		}
	}
	return ""
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool { return buildSetting("-race") == "true" }

// TestMaglevBuildTime: a default-size table for 1000 backends builds in
// under 5 ms (best of several runs, so a busy machine does not fail it).
func TestMaglevBuildTime(t *testing.T) {
	if testing.Short() || raceEnabled() || testing.CoverMode() != "" {
		t.Skip("timing test: skipped with -short, -race or -cover")
	}
	const limit = 5 * time.Millisecond
	bs := maglevKeys(1000, 1)
	table := make([]uint16, DefaultMaglevSize)
	best := time.Duration(1<<63 - 1)
	for range 7 {
		start := time.Now()
		if err := BuildMaglevInto(table, bs, 0); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
		if best < limit/2 {
			break
		}
	}
	t.Logf("1000 backends, %d slots: best build %v", DefaultMaglevSize, best)
	if best >= limit {
		t.Errorf("got best build time %v, want under %v", best, limit)
	}
}

func BenchmarkBuildMaglev(b *testing.B) {
	skewed := maglevKeys(1000, 1)
	skewed[0].Weight = 1 << 20
	for _, bc := range []struct {
		desc     string
		backends []MaglevBackend
		size     uint32
	}{
		{"backends=10", maglevKeys(10, 1), DefaultMaglevSize},
		{"backends=100", maglevKeys(100, 1), DefaultMaglevSize},
		{"backends=1000", maglevKeys(1000, 1), DefaultMaglevSize},
		{"backends=1000/skewed", skewed, DefaultMaglevSize},
		{"backends=10000/size=1048573", maglevKeys(10000, 1), 1048573},
	} {
		b.Run(bc.desc, func(b *testing.B) {
			b.ReportAllocs()
			table := make([]uint16, bc.size)
			for b.Loop() {
				if err := BuildMaglevInto(table, bc.backends, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzMaglev builds tables from arbitrary backend sets: no panic, every slot
// owned by a backend of weight > 0 (or all MaglevNone), and the same table
// for the reversed input.
func FuzzMaglev(f *testing.F) {
	f.Add(uint32(0), uint8(0), []byte{1, 0, 0, 0, 1, 0, 0, 0})
	f.Add(uint32(7), uint8(2), []byte{0, 0, 0, 0})
	f.Add(uint32(1), uint8(1), []byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint32(9), uint8(3), bytes.Repeat([]byte{3, 0, 0, 0}, 300))
	f.Fuzz(func(t *testing.T, seed uint32, sizeIdx uint8, weights []byte) {
		sizes := []uint32{251, 509, 1021, 4093}
		size := sizes[int(sizeIdx)%len(sizes)]
		bs := make([]MaglevBackend, len(weights)/4)
		for i := range bs {
			bs[i] = MaglevBackend{
				Key:    fmt.Sprintf("k%d", i),
				Weight: binary.LittleEndian.Uint32(weights[4*i:]),
			}
		}
		table, err := BuildMaglev(bs, size, seed)
		if len(bs) > int(size) {
			if err == nil {
				t.Fatalf("%d backends, size %d: got no error, want one", len(bs), size)
			}
			return
		}
		if err != nil {
			t.Fatalf("%d backends, size %d: got error %v, want nil", len(bs), size, err)
		}
		checkMaglevTable(t, table, bs, size)

		rev := make([]MaglevBackend, len(bs))
		for i, b := range bs {
			rev[len(bs)-1-i] = b
		}
		want := ownerKeys(table, bs)
		got := ownerKeys(mustBuildMaglev(t, rev, size, seed), rev)
		for s := range got {
			if got[s] != want[s] {
				t.Fatalf("reversed input, slot %d: got owner %q, want %q", s, got[s], want[s])
			}
		}
	})
}
