package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcd/cdcd/internal/retry"
	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pgx/v5"
)

// Under synchronous replication (synchronous_standby_names set) a commit
// writes its WAL, then waits for its standbys before other sessions can
// see it — and logical decoding sends it to cdcd meanwhile. Invalidating
// then would let a reader refill the old value, or store it under the new
// revision, before the commit is visible. So cdcd waits, before applying a
// batch, until none of its transactions is still in progress: a
// transaction holds the lock on its own id until after it became visible.
// pg_locks shows that lock to any role.
type visibility struct {
	dbURL string
	log   *slog.Logger
	on    atomic.Bool

	mu   sync.Mutex
	conn *pgx.Conn // of the applier goroutine, opened when first needed
}

// check reads synchronous_standby_names; a session start calls it.
func (v *visibility) check(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, v.dbURL)
	if err != nil {
		return fmt.Errorf("read synchronous_standby_names: %w", err)
	}
	defer conn.Close(context.Background())
	var names string
	if err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&names); err != nil {
		return fmt.Errorf("read synchronous_standby_names: %w", err)
	}
	on := names != ""
	if v.on.Swap(on) != on && on {
		v.log.Info("synchronous replication is on: each batch is applied once its transactions are visible to other sessions",
			"synchronous_standby_names", names)
	}
	return nil
}

// wait returns once none of xids is in progress, or with ctx's error.
func (v *visibility) wait(ctx context.Context, xids []uint32) error {
	if !v.on.Load() || len(xids) == 0 {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	ids := make([]string, len(xids))
	for i, x := range xids {
		ids[i] = strconv.FormatUint(uint64(x), 10)
	}
	delay := time.Millisecond
	for {
		n, err := v.inProgress(ctx, ids)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// inProgress counts the transactions of ids that still hold their lock.
func (v *visibility) inProgress(ctx context.Context, ids []string) (int, error) {
	if v.conn == nil || v.conn.IsClosed() {
		conn, err := pgx.Connect(ctx, v.dbURL)
		if err != nil {
			return 0, fmt.Errorf("check that the batch's transactions are visible: %w", err)
		}
		v.conn = conn
	}
	var n int
	err := v.conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks
		WHERE locktype = 'transactionid' AND transactionid::text = ANY($1::text[])`, ids).Scan(&n)
	if err != nil {
		v.conn.Close(context.Background())
		v.conn = nil
		return 0, fmt.Errorf("check that the batch's transactions are visible: %w", err)
	}
	return n, nil
}

// visible waits until the batch's transactions are visible to other
// sessions (see visibility), retrying while the database cannot be asked:
// it returns an error only when ctx is done.
func (d *daemon) visible(ctx context.Context, batch []replication.Committed[*rules.Builder]) error {
	if !d.vis.on.Load() {
		return nil
	}
	xids := make([]uint32, len(batch))
	for i, c := range batch {
		xids[i] = c.Xid
	}
	_, err := retry.Until(ctx, retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second},
		func() error { return d.vis.wait(ctx, xids) },
		func(err error, attempt int, delay time.Duration) {
			d.log.Warn("cannot check that a batch's transactions are visible; retrying", "err", err, "attempt", attempt, "retry_in", delay)
		})
	return err
}
