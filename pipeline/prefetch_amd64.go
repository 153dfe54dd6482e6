package pipeline

// asmPrefetch: prefetchLines issues PREFETCHT0 (prefetch_amd64.s).
const asmPrefetch = true

// prefetchLines asks the CPU to bring the cache lines at the n addresses
// into its caches. The addresses are only hints: they are not dereferenced
// and need not be valid.
//
//go:noescape
func prefetchLines(addrs *uintptr, n int)
