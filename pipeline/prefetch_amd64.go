package pipeline

import (
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// asmPrefetch: prefetchLines and prefetchBuckets issue PREFETCHT0
// (prefetch_amd64.s).
const asmPrefetch = true

// prefetchLines asks the CPU to bring the cache lines at the n addresses
// into its caches. The addresses are only hints: they are not dereferenced
// and need not be valid.
//
//go:noescape
func prefetchLines(addrs *uintptr, n int)

// prefetchBuckets asks the CPU to bring into its caches the first cache
// line of the flow table bucket of each packet i in mask (bit i), the
// bucket fp[i].hash&bmask of the table at base, and with both the second
// line too. Hints only, like prefetchLines: nothing is dereferenced but
// fp[i].hash.
//
//go:noescape
func prefetchBuckets(fp *[packet.BurstSize]fastPkt, mask uint32, base unsafe.Pointer, bmask uint32, both bool)

// The layout prefetchBuckets assumes: a fastPkt of 24 bytes with hash at
// offset 16, a bucket of 128 bytes. A constant index out of range does
// not compile.
var _ = [1]struct{}{}[unsafe.Sizeof(fastPkt{})-24]
var _ = [1]struct{}{}[unsafe.Offsetof(fastPkt{}.hash)-16]
var _ = [1]struct{}{}[unsafe.Sizeof([flowWays]flowEntry{})-128]
