package pipeline

// IdlePollsForTest exposes idlePolls to the external tests.
const IdlePollsForTest = idlePolls

// HasFlowForTest reports whether ft holds an entry, live or expired, for
// k, placed with the flow table seed seed.
func (ft *FlowTable) HasFlowForTest(k *FlowKey, seed uint32) bool {
	addrs, tag := k.words()
	return ft.find(addrs, tag, slotHash(addrs, tag, seed)) != nil
}
