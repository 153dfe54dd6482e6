package pipeline

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"unsafe"
)

// span is the memory of one object: its name, start and size in bytes.
type span struct {
	name string
	at   uintptr
	size uintptr
}

// sliceSpan is the span of s's backing array up to its capacity.
func sliceSpan[T any](name string, s []T) span {
	var z T
	return span{name, uintptr(unsafe.Pointer(unsafe.SliceData(s))), uintptr(cap(s)) * unsafe.Sizeof(z)}
}

// hotSpans are the objects w writes on its fast path (per packet or per
// burst), each allocated on its own.
func hotSpans(w *Worker) []span {
	return []span{
		{"Worker", uintptr(unsafe.Pointer(w)), unsafe.Sizeof(*w)},
		{"FlowTable", uintptr(unsafe.Pointer(w.Flows)), unsafe.Sizeof(*w.Flows)},
		sliceSpan("flow buckets", w.Flows.buckets),
		sliceSpan("tx", w.tx),
		sliceSpan("txN", w.txN),
		sliceSpan("nic", w.nic),
		sliceSpan("service counters", w.C.Services),
		sliceSpan("backend counters", w.C.Backends),
		sliceSpan("service new-flow buckets", w.svcFlows),
	}
}

// TestWorkersShareNoCacheLine: no cache line holds what two workers write on
// their fast paths. The allocator puts small objects of one size side by
// side, and the workers are created one after the other: two workers' flow
// table headers or tx counts on one line would make every write of one
// worker evict the line from the other's cache (false sharing), which the
// separate processes do not suffer.
func TestWorkersShareNoCacheLine(t *testing.T) {
	portMAC, gwMAC := MAC{2, 0, 0, 0, 0, 0x10}, MAC{2, 0, 0, 0, 0, 1}
	for _, nsvc := range []int{1, 2, 5, 17} {
		t.Run(fmt.Sprintf("services=%d", nsvc), func(t *testing.T) {
			var svcs []ServiceSpec
			for i := range nsvc {
				var bs []BackendSpec
				for j := 1; j <= 3; j++ {
					bs = append(bs, BackendSpec{ID: uint32(3*i + j), IP: netip.AddrFrom4([4]byte{10, 9, byte(i), byte(j)}), Weight: 1, NextHop: gwMAC})
				}
				svcs = append(svcs, ServiceSpec{ID: uint32(i), Name: fmt.Sprint("svc", i), VIP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}),
					Proto: ProtoTCP, Port: 80, Mode: ModeIPIP, Backends: bs, NewFlowsPerSecond: 1000})
			}
			s, err := NewSnapshot(SnapshotSpec{Ports: []PortSpec{{MAC: portMAC, IP: netip.MustParseAddr("192.0.2.10"), MTU: 1500}}, Services: svcs})
			if err != nil {
				t.Fatal(err)
			}
			var snap atomic.Pointer[Snapshot]
			snap.Store(s)
			var workers []*Worker
			for range 4 {
				w := NewWorker([]WorkerPort{{}}, &snap, 1<<10, DefaultFlowTimeouts, 0)
				w.Use(s)
				workers = append(workers, w)
			}
			const line = 64
			for i, a := range workers {
				for _, b := range workers[i+1:] {
					for _, x := range hotSpans(a) {
						for _, y := range hotSpans(b) {
							if x.size == 0 || y.size == 0 {
								continue
							}
							if x.at/line <= (y.at+y.size-1)/line && y.at/line <= (x.at+x.size-1)/line {
								t.Errorf("a worker's %s [%#x, +%d) and another's %s [%#x, +%d) share a cache line",
									x.name, x.at, x.size, y.name, y.at, y.size)
							}
						}
					}
				}
			}
		})
	}
}
