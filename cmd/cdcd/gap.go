package main

import (
	"context"
	"fmt"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/cdcd/cdcd/sinks"
	"github.com/jackc/pglogrepl"
)

// Gap reasons, labels of cdcd_gap_invalidations_total.
var gapReasons = []string{"wal_lost", "system_identifier_changed", "slot_recreated", "slot_advanced"}

// onStart fails closed on gaps: when cdcd cannot prove it saw every change
// since the position it last confirmed, it invalidates every section before
// streaming, and says why.
func (d *daemon) onStart(ctx context.Context, st replication.Start) error {
	prev, known, err := d.redis.LoadState(ctx, d.cfg.Slot)
	if err != nil {
		return fmt.Errorf("read the recorded state of slot %s from redis: %w", d.cfg.Slot, err)
	}
	var reason, why string
	switch {
	case st.WALLost:
		reason, why = "wal_lost", "the server removed WAL the slot still needed; the slot was recreated"
	case !known:
		// First start, or Redis lost its data, and with it every key that
		// could be stale.
	case prev.SystemID != st.SystemID:
		reason = "system_identifier_changed"
		why = fmt.Sprintf("the database's system identifier changed from %s to %s (restored from a backup, or a different server)", prev.SystemID, st.SystemID)
	case st.SlotCreated:
		reason = "slot_recreated"
		why = fmt.Sprintf("the slot was missing and had to be created; changes after %s, where cdcd last confirmed, were not kept", prev.Confirmed)
	case st.Confirmed > prev.Confirmed:
		reason = "slot_advanced"
		why = fmt.Sprintf("the server resumes at %s, past %s where cdcd last confirmed: something else consumed or advanced the slot", st.Confirmed, prev.Confirmed)
	}
	if reason != "" {
		d.log.Error("cannot prove every change was seen: invalidating every section before streaming",
			"reason", reason, "detail", why, "slot", d.cfg.Slot)
		p := d.rules.Load().Everything(reason, replication.Commit{CommitLSN: st.Confirmed, CommitTime: time.Now()})
		if err := d.redis.Apply(ctx, []*rules.Plan{p}); err != nil {
			return err
		}
		d.gaps.WithLabelValues(reason).Inc()
	}
	return d.redis.ResetState(ctx, d.cfg.Slot, sinks.State{SystemID: st.SystemID, Confirmed: st.Confirmed})
}

// beforeConfirm records a position in Redis before it is confirmed to the
// server, so the next start can tell cdcd's own progress from a gap.
func (d *daemon) beforeConfirm(ctx context.Context, lsn pglogrepl.LSN) error {
	return d.redis.AdvanceState(ctx, d.cfg.Slot, lsn)
}
