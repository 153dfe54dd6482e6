package pipeline

import (
	"fmt"
	"slices"
	"strings"
)

// Maglev consistent hashing: Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, section 3.4 ("Pseudocode 1"),
// extended with weights.
//
// COMPATIBILITY CONTRACT. Every appliance behind the same ECMP group MUST
// compute the identical table from the identical (backends, size, seed), so
// that a flow ECMP moves to another appliance still reaches the same
// backend. Changing any of the following re-shuffles every service during a
// rolling upgrade; they MUST NOT change (TestMaglevGolden pins them):
//
//  1. Hash: MurmurHash3 x86_32 (maglevHash) over the bytes of
//     MaglevBackend.Key, 4-byte blocks read little-endian. It equals
//     github.com/spaolacci/murmur3 Sum32WithSeed on little-endian hosts
//     (TestMaglevHash checks both against the SMHasher vectors).
//  2. Seeds: the offset hash uses seed; the skip hash uses
//     seed2 = seed ^ maglevSkipSeedXor (0x9E3779B9).
//  3. Permutation (Pseudocode 1): offset = h(key, seed) % M,
//     skip = h(key, seed2) % (M-1) + 1, permutation[j] = (offset + j*skip) % M.
//  4. Turn order: backends sorted by Key ascending, byte-wise (Go string
//     order); backends of weight 0 take no turns.
//  5. Weights: backend i takes a turn in round r (r = 1, 2, ...) iff
//     floor(r*w_i/w_max) > floor((r-1)*w_i/w_max), so its share of turns,
//     and of slots, is w_i/sum(w). Within a round turns follow the sorted
//     order; a turn claims the next free slot of the backend's permutation;
//     the build stops as soon as all M slots are taken.
//  6. The values of MaglevSizes (primes MAY be appended, none removed) and
//     of MaglevNone.

// DefaultMaglevSize is the default number of slots of a Maglev lookup table.
// The paper (section 3.4) picks M > 100*N for at most 1% imbalance, so 65537
// fits services of up to about 650 backends.
const DefaultMaglevSize uint32 = 65537

// MaglevNone is the table entry of a slot that no backend owns. Every slot
// is MaglevNone when no backend has a weight above zero. Its value MUST NOT
// change.
const MaglevNone uint16 = 0xFFFF

// MaxMaglevBackends is the most backends BuildMaglev accepts, so that every
// backend index fits a uint16 entry below MaglevNone.
const MaxMaglevBackends = 65534

// maglevSkipSeedXor derives the skip hash seed from the configured seed:
// seed2 = seed ^ maglevSkipSeedXor (the 32-bit golden ratio, 2^32/phi). Its
// value MUST NOT change.
const maglevSkipSeedXor uint32 = 0x9E3779B9

// maglevSizes are the allowed table sizes, all prime (the permutation
// formula needs a prime M so that every skip walks all M slots). Sizes MAY
// be appended; existing ones MUST NOT be removed or changed.
var maglevSizes = [...]uint32{
	251, 509, 1021, 2039, 4093, 8191, 16381, 32749,
	65537, 131071, 262139, 524287, 1048573,
}

// MaglevSizes returns the allowed Maglev table sizes, ascending. They are all
// prime; DefaultMaglevSize is one of them. The slice is a fresh copy.
func MaglevSizes() []uint32 {
	return slices.Clone(maglevSizes[:])
}

// IsMaglevSize reports whether size is one of MaglevSizes.
func IsMaglevSize(size uint32) bool {
	_, ok := slices.BinarySearch(maglevSizes[:], size)
	return ok
}

// MaglevBackend is one entry of the backend set given to BuildMaglev.
type MaglevBackend struct {
	// Key is the backend's stable identity, for example its IP address
	// "192.0.2.21". It MUST be unique and non-empty. Ownership follows the
	// Key, not the position in the slice.
	Key string
	// Weight is the backend's share of slots relative to the others;
	// 0 takes no slots (draining or down).
	Weight uint32
}

// BuildMaglev returns a Maglev lookup table of size slots for backends.
// Entry s is the index into backends (the caller's order) of the backend
// that owns slot s, or MaglevNone for every slot when no backend has a
// weight above zero. A flow with hash h goes to backends[table[h%size]].
//
// size MUST be one of MaglevSizes. The table depends only on the set of
// (Key, Weight) pairs, size and seed, never on the order of backends; the
// result is identical on every instance (see the compatibility contract
// above). It fails when size is not allowed, when there are more backends
// than size or MaxMaglevBackends, or when a Key is empty or repeated.
func BuildMaglev(backends []MaglevBackend, size uint32, seed uint32) ([]uint16, error) {
	if !IsMaglevSize(size) {
		return nil, fmt.Errorf("maglev: table size %d is not one of %v", size, maglevSizes)
	}
	table := make([]uint16, size)
	if err := BuildMaglevInto(table, backends, seed); err != nil {
		return nil, err
	}
	return table, nil
}

// BuildMaglevInto is BuildMaglev writing into a caller-provided table whose
// length is the table size (one of MaglevSizes). It allocates only per-backend
// state (O(len(backends))), never a table-sized buffer. On error the table's
// contents are unspecified.
func BuildMaglevInto(table []uint16, backends []MaglevBackend, seed uint32) error {
	return buildMaglev(table, backends, seed, maglevAuto)
}

// maglevSchedule picks how turns are ordered; every choice gives the same
// table (TestMaglevSchedulesAgree).
type maglevSchedule uint8

const (
	maglevAuto maglevSchedule = iota
	maglevRounds
	maglevHeap
)

func buildMaglev(table []uint16, backends []MaglevBackend, seed uint32, sched maglevSchedule) error {
	if !IsMaglevSize(uint32(len(table))) {
		return fmt.Errorf("maglev: table size %d is not one of %v", len(table), maglevSizes)
	}
	m := uint32(len(table))
	if len(backends) > int(m) || len(backends) > MaxMaglevBackends {
		return fmt.Errorf("maglev: %d backends, want at most %d (table size %d, limit %d)",
			len(backends), min(int(m), MaxMaglevBackends), m, MaxMaglevBackends)
	}

	// Sort positions by Key (contract item 4); the table stores the
	// caller's indices.
	order := make([]uint16, len(backends))
	for i := range order {
		order[i] = uint16(i)
	}
	slices.SortFunc(order, func(a, b uint16) int {
		return strings.Compare(backends[a].Key, backends[b].Key)
	})
	for j, i := range order {
		if backends[i].Key == "" {
			return fmt.Errorf("maglev: backend %d: empty key", i)
		}
		if j > 0 && backends[order[j-1]].Key == backends[i].Key {
			return fmt.Errorf("maglev: backend %d: duplicate key %q (also backend %d)",
				max(i, order[j-1]), backends[i].Key, min(i, order[j-1]))
		}
	}

	perms := make([]maglevPerm, 0, len(backends))
	var maxW, sumW uint64
	seed2 := seed ^ maglevSkipSeedXor
	for _, i := range order {
		b := &backends[i]
		if b.Weight == 0 {
			continue
		}
		perms = append(perms, maglevPerm{
			pos:    maglevHash(b.Key, seed) % m,
			skip:   maglevHash(b.Key, seed2)%(m-1) + 1,
			weight: uint64(b.Weight),
			index:  i,
		})
		maxW = max(maxW, uint64(b.Weight))
		sumW += uint64(b.Weight)
	}

	for s := range table {
		table[s] = MaglevNone
	}
	if len(perms) == 0 {
		return nil
	}
	// Both schedules yield the same turn sequence (contract item 5). Rounds
	// visit every weighted backend per round: cheap when weights are alike.
	// Under strong skew most visits would be idle, so order the turns with
	// a heap instead (O(M log N) whatever the weights).
	if sched == maglevAuto {
		sched = maglevHeap
		if maxW*uint64(len(perms)) <= maglevRoundWaste*sumW {
			sched = maglevRounds
		}
	}
	if sched == maglevRounds {
		maglevFillRounds(table, perms, maxW)
	} else {
		maglevFillHeap(table, perms, maxW)
	}
	return nil
}

// maglevRoundWaste bounds the idle visits per turn under which the round
// schedule is used (a speed choice only: both schedules give one result).
const maglevRoundWaste = 8

// maglevPerm is one weighted backend's permutation, computed on the fly:
// pos is permutation[next] of Pseudocode 1, so no M-sized array per backend.
type maglevPerm struct {
	pos, skip uint32
	index     uint16 // caller's index, stored in the table
	weight    uint64
	credit    uint64 // rounds: weight accrued and not yet spent, < maxW
	turns     uint64 // heap: turns taken so far
	round     uint64 // heap: round of the next turn
}

// claim gives p the next slot of its permutation that is still free.
// Termination: M is prime and 1 <= skip < M, so the permutation visits every
// slot; callers claim only while a slot is free.
func (p *maglevPerm) claim(table []uint16, m uint32) {
	c := p.pos
	for table[c] != MaglevNone {
		c += p.skip
		if c >= m {
			c -= m
		}
	}
	table[c] = p.index
	c += p.skip
	if c >= m {
		c -= m
	}
	p.pos = c
}

// maglevFillRounds runs contract item 5 round by round: each backend accrues
// its weight and takes a turn whenever a full maxW is accrued. Since
// weight <= maxW, a backend takes at most one turn per round, and after r
// rounds it has taken floor(r*w/maxW) turns.
func maglevFillRounds(table []uint16, perms []maglevPerm, maxW uint64) {
	m := uint32(len(table))
	for n := uint32(0); ; {
		for i := range perms {
			p := &perms[i]
			p.credit += p.weight
			if p.credit < maxW {
				continue
			}
			p.credit -= maxW
			p.claim(table, m)
			if n++; n == m {
				return
			}
		}
	}
}

// maglevFillHeap runs contract item 5 in (round, sorted position) order
// with a min-heap. Turn k (1-based) of a backend falls in round
// ceil(k*maxW/w), the first round r with floor(r*w/maxW) >= k.
func maglevFillHeap(table []uint16, perms []maglevPerm, maxW uint64) {
	m := uint32(len(table))
	heap := make([]uint16, len(perms)) // positions in perms
	for i := range perms {
		p := &perms[i]
		p.round = (maxW + p.weight - 1) / p.weight
		heap[i] = uint16(i)
	}
	less := func(a, b uint16) bool {
		ra, rb := perms[a].round, perms[b].round
		return ra < rb || (ra == rb && a < b)
	}
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(heap) {
				return
			}
			c := l
			if r := l + 1; r < len(heap) && less(heap[r], heap[l]) {
				c = r
			}
			if !less(heap[c], heap[i]) {
				return
			}
			heap[i], heap[c] = heap[c], heap[i]
			i = c
		}
	}
	for i := len(heap)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for n := uint32(0); n < m; n++ {
		p := &perms[heap[0]]
		p.claim(table, m)
		// k*maxW <= M*2^32 < 2^53: no overflow.
		p.turns++
		p.round = ((p.turns+1)*maxW + p.weight - 1) / p.weight
		down(0)
	}
}

// maglevHash is MurmurHash3 x86_32 (Austin Appleby, SMHasher) of key's
// bytes, 4-byte blocks read little-endian on every host (contract item 1).
//
// It is written out rather than calling github.com/spaolacci/murmur3: that
// package's Sum32WithSeed turns a uintptr back into a pointer, which the
// checkptr instrumentation of -race rejects for any input of 4 bytes or more
// held on the heap or stack ("pointer arithmetic result points to invalid
// allocation", spaolacci/murmur3#34), and it reads blocks in native byte
// order. It also hashes the string without converting it to []byte.
func maglevHash(key string, seed uint32) uint32 {
	h := seed
	n := len(key) &^ 3
	for i := 0; i < n; i += 4 {
		h = murmurStep(h, uint32(key[i])|uint32(key[i+1])<<8|uint32(key[i+2])<<16|uint32(key[i+3])<<24)
	}
	var k uint32
	switch len(key) & 3 {
	case 3:
		k ^= uint32(key[n+2]) << 16
		fallthrough
	case 2:
		k ^= uint32(key[n+1]) << 8
		fallthrough
	case 1:
		k ^= uint32(key[n])
		h ^= murmurScramble(k)
	}
	return murmurFinal(h, uint32(len(key)))
}
