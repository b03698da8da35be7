// Package readthrough fills a Redis cache from the database without ever
// leaving a stale value behind, under the protocol of docs/consistency.md.
//
// cdcd deletes a key after the transaction that changed its rows commits.
// A reader that read the database before that commit and stores its value
// after the delete would leave the old value cached for good. Get prevents
// it: on a miss it reads the key's covering revisions (the revision
// templates of the rules file, rendered with the values found in the key,
// created when absent), calls load, and stores the result only if none of
// those revisions moved meanwhile. cdcd moves a revision before, or
// atomically with, deleting the keys it covers, so a value read before a
// commit is either stored before the delete (and deleted with it) or
// refused.
//
// The rules file is the contract between the application and cdcd: every
// key passed to Get must match a key template of a section with a revision.
// A key no section names is an error, as is one whose section has no
// revision unless AllowUnguarded was given. A key two sections claim is
// guarded by both sections' revisions.
//
// A Cache is safe for concurrent use. Callers must not modify the slices
// Get returns. Readers of a read replica must say so (WithReplica): a value
// read from a replica that has not replayed the commit a revision names is
// returned but never stored.
package readthrough
