package pipeline

// IdlePollsForTest exposes idlePolls to the external tests.
const IdlePollsForTest = idlePolls

// HasFlowForTest reports whether ft holds an entry, live or expired, for
// k, placed with the flow table seed seed.
func (ft *FlowTable) HasFlowForTest(k *FlowKey, seed uint32) bool {
	addrs, tag := k.words()
	return ft.find(addrs, tag, slotHash(addrs, tag, seed)) != nil
}

// PollAtForTest is Poll with the worker's clock set to now and held there
// (the poll does not read the time).
func (w *Worker) PollAtForTest(now uint32) int {
	w.clockTick = 2 // Poll reads the clock only when it finds 0
	w.Now = now
	return w.Poll()
}
