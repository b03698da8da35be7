package sinks

import (
	"context"

	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
)

// A Sink is where plans are applied. The Applier is its only caller: it
// applies every plan — the stream's, a gap's — in commit order, from one
// goroutine, and asks before each confirmation how far the sink has applied
// them durably. The Redis sink is one; a sink for another store needs no
// Redis globs from a plan (rules.Pattern.Matches says which keys a pattern
// covers).
type Sink interface {
	// Apply applies plans, in order, and returns nil once they are applied;
	// it retries failures itself and returns an error only when ctx is
	// done. Plans may be applied again after a restart: every action must
	// be idempotent.
	Apply(ctx context.Context, plans []*rules.Plan) error
	// Confirmable returns the highest position at or below lsn up to which
	// every applied plan has taken effect (work the sink does in the
	// background holds it back). It does not block.
	Confirmable(lsn pglogrepl.LSN) pglogrepl.LSN
	// Secure is called before lsn, confirmable, is confirmed to the
	// server: it makes what was applied up to lsn survive the sink's own
	// failover, or returns an error and lsn is not confirmed. An error
	// wrapping ErrLostWrites says the sink lost writes it had applied,
	// before positions already confirmed: the stream must start again and
	// invalidate everything. ErrLostUnconfirmed says it lost only writes
	// after the last confirmed position: the stream must start again from
	// there.
	Secure(ctx context.Context, lsn pglogrepl.LSN) error
	// Lost, at the start of a session whose server resumes after
	// confirmed, says why the sink lost writes it had applied before
	// confirmed ("" when it did not).
	Lost(ctx context.Context, confirmed pglogrepl.LSN) (string, error)
}
