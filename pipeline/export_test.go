package pipeline

// IdlePollsForTest exposes idlePolls to the external tests.
const IdlePollsForTest = idlePolls
