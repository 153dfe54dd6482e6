package pipeline

import "unsafe"

// cacheLine is the cache line size of the CPUs dsrlb runs on (x86-64 and
// most arm64).
const cacheLine = 64

// isolatedSlice returns n zero Ts (capacity n) on cache lines that hold
// nothing else: at least a line's worth of unused Ts before and after.
// What one worker writes on its fast path is allocated this way when it is
// small: the allocator puts small objects of a size side by side, and the
// workers are created one after the other, so two workers' flow table
// headers or tx counts would otherwise share a line, and every write of
// one would take the line from the other's cache (false sharing).
func isolatedSlice[T any](n int) []T {
	var z T
	pad := 1
	if sz := int(unsafe.Sizeof(z)); sz > 0 && sz < cacheLine {
		pad = (cacheLine + sz - 1) / sz
	}
	return make([]T, n+2*pad)[pad : pad+n : pad+n]
}

// isolated returns a zero T on cache lines of its own (isolatedSlice).
func isolated[T any]() *T { return &isolatedSlice[T](1)[0] }
