package readthrough

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Replica describes the streaming read replica load reads. A revision that
// holds an LSN names the last commit cdcd applied to it; a value read from
// a replica is stored only if the replica replayed that commit before the
// read (pg_last_wal_replay_lsn() past the revision's LSN, which is the
// start of the commit record).
type Replica struct {
	// Replayed returns the replica's replay position:
	// SELECT pg_last_wal_replay_lsn() on the replica.
	Replayed func(ctx context.Context) (pglogrepl.LSN, error)
	// Primary, when set, returns the primary's current position:
	// SELECT pg_current_wal_lsn() on the primary. A revision that holds no
	// LSN yet (a reader's token) names no commit to wait for; the replica
	// must then have replayed what the primary had written when the
	// revision was read. Without Primary such fills are refused.
	Primary func(ctx context.Context) (pglogrepl.LSN, error)
	// Wait bounds how long Get waits for the replica to catch up before it
	// loads anyway and returns the value without storing it. Default
	// 100ms.
	Wait time.Duration
	// Poll is the interval between reads of Replayed. Default 5ms.
	Poll time.Duration
}

// replicaTarget returns the position the replica must reach before load
// for a fill under the observed revision values to be stored: past every
// LSN (strictly: a revision holds the start of its commit record), and at
// least the primary's position when a value is not an LSN. reason is set
// when no position can be known.
func (r *Replica) target(ctx context.Context, observed []string) (target pglogrepl.LSN, reason string, err error) {
	tokens := false
	for _, v := range observed {
		lsn, perr := pglogrepl.ParseLSN(v)
		if perr != nil {
			tokens = true
			continue
		}
		target = max(target, lsn+1)
	}
	if !tokens {
		return target, "", nil
	}
	if r.Primary == nil {
		return 0, RefusedReplicaUnknown, nil
	}
	p, err := r.Primary(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("read the primary's position: %w", err)
	}
	return max(target, p), "", nil
}

// await waits until the replica has replayed target, or r.Wait passed; it
// reports whether it has.
func (r *Replica) await(ctx context.Context, target pglogrepl.LSN) (bool, error) {
	wait, poll := r.Wait, r.Poll
	if wait <= 0 {
		wait = 100 * time.Millisecond
	}
	if poll <= 0 {
		poll = 5 * time.Millisecond
	}
	deadline := time.Now().Add(wait)
	for {
		at, err := r.Replayed(ctx)
		if err != nil {
			return false, fmt.Errorf("read the replica's replay position: %w", err)
		}
		if at >= target {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(poll):
		}
	}
}
