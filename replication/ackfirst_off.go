//go:build !cdcd_ackfirst

package replication

// ackBeforeApply is false in every real build. The fault suite builds cdcd
// with -tags cdcd_ackfirst to prove that its checker catches a daemon that
// acknowledges transactions before applying them.
const ackBeforeApply = false
