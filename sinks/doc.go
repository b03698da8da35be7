// Package sinks applies plans made by package rules: the Redis sink unlinks
// keys (exactly, or by pattern with SCAN), moves revision keys forward and
// publishes channel messages, in one pipeline per batch of transactions; the
// alert sink logs and counts invariant violations.
//
// Apply methods return only when the plans are applied or the context is
// done: every failure (refused connection, timeout, READONLY, LOADING) is
// retried with capped backoff, because the caller acknowledges the
// transactions to PostgreSQL as soon as Apply returns nil. All sink actions
// are idempotent, so applying a plan twice after a restart is harmless.
//
// Plans must be applied from one goroutine, in commit order.
package sinks
