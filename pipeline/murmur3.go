package pipeline

import "math/bits"

// MurmurHash3 x86_32 (Austin Appleby, SMHasher), in pieces shared by the
// flow hash and the Maglev permutations. Both are pinned by tests to the
// reference vectors and to github.com/spaolacci/murmur3; they MUST NOT
// change, since appliances of one ECMP group must agree on them.

const (
	murmurC1 = 0xcc9e2d51
	murmurC2 = 0x1b873593
)

// murmurScramble is the per-block key mixing.
func murmurScramble(k uint32) uint32 {
	k *= murmurC1
	k = bits.RotateLeft32(k, 15)
	return k * murmurC2
}

// murmurStep mixes the 4-byte little-endian block k into h.
func murmurStep(h, k uint32) uint32 {
	h ^= murmurScramble(k)
	h = bits.RotateLeft32(h, 13)
	return h*5 + 0xe6546b64
}

// murmurFinal folds in the input length n and avalanches h.
func murmurFinal(h, n uint32) uint32 {
	h ^= n
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
