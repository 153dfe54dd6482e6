package pipeline

import (
	"runtime"
	"syscall"
	"unsafe"
)

// hugeMinBytes is the smallest table worth its own mapping: one 2 MiB huge
// page.
const hugeMinBytes = 2 << 20

// allocBuckets returns n zeroed buckets. A table of at least one huge page
// is mapped outside the Go heap and advised to use transparent huge pages
// (madvise(MADV_HUGEPAGE)): a flow table is read at random, one bucket per
// packet, and with 4 KiB pages nearly every lookup would also miss the TLB
// (in a VM, a two-dimensional page walk). The mapping is released when
// owner is garbage collected. Entries hold no pointers, so the collector
// need not see the memory.
func allocBuckets[B any](n int, owner *FlowTable) []B {
	var zero B
	size := n * int(unsafe.Sizeof(zero))
	if size < hugeMinBytes {
		return make([]B, n)
	}
	// Round up to whole huge pages so that the kernel can back all of it.
	size = (size + hugeMinBytes - 1) &^ (hugeMinBytes - 1)
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return make([]B, n)
	}
	_ = syscall.Madvise(mem, 14) // MADV_HUGEPAGE; a kernel without THP ignores it
	b := unsafe.Slice((*B)(unsafe.Pointer(&mem[0])), n)
	runtime.AddCleanup(owner, func(m []byte) { _ = syscall.Munmap(m) }, mem)
	return b
}
