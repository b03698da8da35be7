package replication

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
)

// confirmer runs Config.BeforeConfirm beside the receive loop. The call
// does sink I/O — in Redis a marker on every master and, with
// CDCD_REDIS_WAIT_REPLICAS, a WAIT of up to its timeout — and in the
// receive loop it stopped the stream, and so invalidation, for as long,
// about once a second while a replica was missing. The confirmer calls it
// every FeedbackDelay with the highest position that may be confirmed
// (Acked, capped by Config.Confirmable) and publishes the positions it
// accepted; the receive loop confirms none beyond them. While no new
// position comes it calls it again with the last one accepted, so that a
// sink that lost writes (a Redis failover) is found on an idle stream too.
// An error that ends the session reaches the receive loop through failed.
type confirmer struct {
	check   func(ctx context.Context, lsn pglogrepl.LSN) error
	target  func() pglogrepl.LSN // the highest position that may be confirmed now
	timeout time.Duration        // bounds a check
	every   time.Duration
	log     *slog.Logger
	wake    func() // prompts the receive loop to send what was secured

	secured atomic.Uint64 // highest position a check accepted
	failed  chan error    // the error that ends the session, at most one
	done    chan struct{}
}

func newConfirmer(check func(context.Context, pglogrepl.LSN) error, target func() pglogrepl.LSN, from pglogrepl.LSN,
	timeout, every time.Duration, log *slog.Logger, wake func()) *confirmer {
	c := &confirmer{check: check, target: target, timeout: timeout, every: every, log: log, wake: wake,
		failed: make(chan error, 1), done: make(chan struct{})}
	c.secured.Store(uint64(from))
	return c
}

// Secured returns the highest position a check accepted.
func (c *confirmer) Secured() pglogrepl.LSN { return pglogrepl.LSN(c.secured.Load()) }

// run checks until ctx ends or a check ends the session.
func (c *confirmer) run(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lsn, recheck := c.target(), false
		if secured := c.Secured(); lsn <= secured {
			lsn, recheck = secured, true
		}
		if lsn == 0 {
			continue
		}
		if err := c.secure(ctx, lsn, recheck); err != nil {
			c.failed <- err
			c.wake()
			return
		}
	}
}

// secure checks lsn and publishes it when accepted. It returns the errors
// that end the session; any other means lsn is not confirmed, and is logged
// unless recheck (lsn was accepted already: the sinks' own logs say what
// fails).
func (c *confirmer) secure(parent context.Context, lsn pglogrepl.LSN, recheck bool) error {
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	err := c.check(ctx, lsn)
	cancel()
	if errors.Is(err, ErrSuperseded) || errors.Is(err, ErrResync) {
		return err
	}
	if err != nil && !recheck && parent.Err() == nil {
		c.log.Warn("cannot record the position to confirm; confirming the previous one", "lsn", lsn.String(), "err", err)
	}
	if (err == nil || ackBeforeApply) && lsn > c.Secured() {
		c.secured.Store(uint64(lsn))
		c.wake()
	}
	return nil
}

// stop ends run and waits for it.
func (c *confirmer) stop(cancel context.CancelFunc) {
	cancel()
	<-c.done
}
