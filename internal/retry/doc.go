// Package retry is cdcd's one way of waiting between attempts: capped
// exponential backoff, with or without jitter, and a loop that retries an
// operation until it succeeds or its context is done.
//
// The replication stream's reconnections use Backoff directly (a healthy
// session resets it, a standby polls on its own period); the Redis and
// webhook sinks retry with Until. A Backoff is not safe for concurrent use;
// Until and Wait are.
package retry
