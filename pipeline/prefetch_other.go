//go:build !amd64

package pipeline

// asmPrefetch is false without an assembly prefetch: Forwarder.classify
// loads the buckets instead.
const asmPrefetch = false

func prefetchLines(addrs *uintptr, n int) {}
