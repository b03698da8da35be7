// Package replication consumes one logical replication slot with the
// built-in pgoutput plugin and hands on whole committed transactions.
//
// A Stream owns one replication connection at a time. One file per concern:
//
//   - stream.go: Config, the Stream and its reconnect loop (Run);
//   - session.go: one connection's set-up (publication, slot, system
//     identity, OnStart) and start of streaming;
//   - receiver.go: the receive loop: decoding, keepalives, status updates,
//     silence detection, holding transactions back for a batch;
//   - assembler.go: a pure state machine that turns Begin, changes, Commit
//     and the protocol v2 stream messages into committed transactions;
//   - pgoutput.go: the bounds-checked decoder and the relation cache;
//   - handoff.go: the queue to the applier goroutine, which calls Apply;
//   - pacer.go: spacing of batches (reconnections back off with
//     internal/retry).
//
// Each transaction's changes go to the value Config.Begin returned for it,
// of the caller's type T (Tx[T]): the parts of a streamed transaction are
// Parts of its first value and are merged into it, so the whole transaction
// is evaluated as it began, whatever the caller changes meanwhile.
//
// Acknowledgement: the flush position sent to the server is the end LSN of
// the last transaction Apply returned for. When nothing is in flight (no
// open transaction, nothing queued or being applied), a keepalive's position
// is confirmed too, so a slot on a quiet publication does not retain WAL.
// A status update goes out at least every StatusInterval, at once when the
// server asks, and shortly after each applied batch. Every session starts
// from its own slot's confirmed position, after everything of the session
// before it was applied: a position is only ever confirmed to the server
// that sent it.
//
// The package knows nothing of rules or sinks: they reach it only through
// the T values and the Apply function. Stream's exported methods are safe
// for concurrent use; Run must be called once.
package replication
