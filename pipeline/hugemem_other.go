//go:build !linux

package pipeline

// allocBuckets returns n zeroed buckets from the Go heap.
func allocBuckets(n int, owner *FlowTable) [][flowWays]flowEntry {
	return make([][flowWays]flowEntry, n)
}
