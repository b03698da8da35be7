//go:build cdcd_ackfirst

package replication

// ackBeforeApply makes this build acknowledge every batch before applying
// it, even when it cannot record the position, and skip gap detection: a
// deliberately broken daemon for the fault suite's self-test. Never ship it.
const ackBeforeApply = true
