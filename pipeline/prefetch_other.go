//go:build !amd64

package pipeline

import (
	"unsafe"

	"github.com/dsrlb/dsrlb/pipeline/packet"
)

// asmPrefetch is false without an assembly prefetch: Forwarder.classify
// loads the buckets instead.
const asmPrefetch = false

func prefetchLines(addrs *uintptr, n int) {}

func prefetchBuckets(fp *[packet.BurstSize]fastPkt, mask uint32, base unsafe.Pointer, bmask uint32, both bool) {
}
