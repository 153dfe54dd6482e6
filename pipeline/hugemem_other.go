//go:build !linux

package pipeline

// allocBuckets returns n zeroed buckets from the Go heap.
func allocBuckets[B any](n int, owner *FlowTable) []B {
	return make([]B, n)
}
