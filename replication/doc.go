// Package replication consumes one logical replication slot with the
// built-in pgoutput plugin and hands on whole committed transactions.
//
// A Stream owns one replication connection at a time. At the start of every
// session it checks (or creates) the publication and the slot, reads the
// slot's confirmed position, and starts streaming from it. One goroutine
// reads the stream, decodes pgoutput messages with bounds checks, keeps the
// relation cache, and feeds each transaction's changes to the Tx that
// Config.Begin returned for it. At Commit the transaction is queued; a
// second goroutine passes queued transactions to Config.Apply in commit
// order, in batches.
//
// Acknowledgement: the flush position sent to the server is the end LSN of
// the last transaction Apply returned for. When nothing is in flight (no
// open transaction, nothing queued or being applied), a keepalive's position
// is confirmed too, so a slot on a quiet publication does not retain WAL.
// A status update goes out at least every StatusInterval, at once when the
// server asks, and shortly after each applied batch.
//
// The package knows nothing of rules or sinks: they reach it only through
// the Tx values and the Apply function. Stream's exported methods are safe
// for concurrent use; Run must be called once.
package replication
