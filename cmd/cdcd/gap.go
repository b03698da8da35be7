package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/cdcd/cdcd/sinks"
	"github.com/jackc/pglogrepl"
)

// Gap reasons, labels of cdcd_gap_invalidations_total.
var gapReasons = []string{"wal_lost", "system_identifier_changed", "timeline_changed", "slot_recreated", "slot_advanced", "state_missing", "redis_lost_writes"}

// gapOf decides whether a session that starts as st, after cdcd recorded
// rec, can prove it sees every change since cdcd last confirmed a position.
// It returns the reason it cannot, and why in words; "" when it can.
func gapOf(rec sinks.Recorded, st replication.Start) (reason, why string) {
	switch {
	case st.WALLost:
		return "wal_lost", "the server removed WAL the slot still needed; the slot was recreated"
	case !rec.Known && rec.Marked:
		return "state_missing", "cdcd's recorded state of the slot is gone from Redis (deleted or evicted) while Redis was not emptied: " +
			"cdcd cannot tell which server it streamed from or where it stopped"
	case !rec.Known:
		// First start, or Redis was emptied, and with it every key that
		// could be stale.
		return "", ""
	case rec.SystemID != st.SystemID:
		return "system_identifier_changed", fmt.Sprintf("the database's system identifier changed from %s to %s (another server, or restored from a backup)", rec.SystemID, st.SystemID)
	case rec.Timeline != 0 && rec.Timeline != st.Timeline:
		return "timeline_changed", fmt.Sprintf("the server's timeline changed from %d to %d (a promotion or a point-in-time recovery)", rec.Timeline, st.Timeline)
	case st.SlotCreated:
		return "slot_recreated", fmt.Sprintf("the slot was missing and had to be created; changes after %s, where cdcd last confirmed, were not kept", rec.Confirmed)
	case st.Confirmed > rec.Confirmed:
		return "slot_advanced", fmt.Sprintf("the server resumes at %s, past %s where cdcd last confirmed: something else consumed or advanced the slot, or Redis lost cdcd's recorded state and markers together (a failover while cdcd was stopped)", st.Confirmed, rec.Confirmed)
	}
	return "", ""
}

// onStart fails closed on gaps: when cdcd cannot prove it saw every change
// since the position it last confirmed, it invalidates every section before
// streaming, and says why. Then it records the session's server and
// position, unless another instance changed the state meanwhile.
func (d *daemon) onStart(ctx context.Context, st replication.Start) error {
	if err := d.vis.check(ctx); err != nil {
		return err
	}
	rec, err := d.state.Load(ctx)
	if err != nil {
		return fmt.Errorf("read the recorded state of slot %s: %w", d.cfg.Slot, err)
	}
	reason, why := gapOf(rec, st)
	switch reason {
	case "", "slot_advanced", "state_missing":
		// A sink losing writes may also lose the recorded state's
		// progress: say which it was when the sinks tell. Against the
		// position cdcd itself confirmed last: past it (a slot advanced
		// by something else) cdcd marked nothing.
		confirmed := st.Confirmed
		if rec.Known && rec.Confirmed < confirmed {
			confirmed = rec.Confirmed
		}
		lost, err := d.applier.Lost(ctx, confirmed)
		if err != nil {
			return fmt.Errorf("check the sinks for lost writes: %w", err)
		}
		if prev := d.lostWrites.Swap(nil); prev != nil && lost == "" {
			lost = *prev
		}
		if lost != "" {
			reason, why = "redis_lost_writes", lost
		}
	}
	if reason != "" {
		d.log.Error("cannot prove every change was seen: invalidating every section before streaming",
			"reason", reason, "detail", why, "slot", d.cfg.Slot, "lsn", st.Confirmed.String())
		p := d.rules.Load().Everything(reason, replication.Commit{CommitLSN: st.Confirmed, EndLSN: st.Confirmed, CommitTime: time.Now()})
		p.Gap = true
		// Through the applier, as every plan: nothing of the session
		// before is in flight (OnStart runs once it was all applied).
		if err := d.applier.Apply(ctx, []*rules.Plan{p}); err != nil {
			return err
		}
		d.gaps.WithLabelValues(reason).Inc()
	}
	cur := sinks.State{SystemID: st.SystemID, Timeline: st.Timeline, Confirmed: st.Confirmed}
	if err := d.state.Reset(ctx, rec, cur); err != nil {
		if errors.Is(err, sinks.ErrStateChanged) {
			return fmt.Errorf("%w: %w", replication.ErrSuperseded, err)
		}
		return fmt.Errorf("record the state of slot %s: %w", d.cfg.Slot, err)
	}
	d.server.Store(&cur)
	return nil
}

// beforeConfirm records a position, then has the sinks secure what they
// applied up to it, before it is confirmed to the server, so the next start
// can tell cdcd's own progress from a gap. The record comes first so that
// the sinks' WAIT for replicas covers it too: recorded after, a failover
// to a replica that held every delete but not the record read as a slot
// advanced by something else, a full invalidation where nothing was lost.
// A record ahead of what the server was told is harmless: the server
// resends from its own position.
func (d *daemon) beforeConfirm(ctx context.Context, lsn pglogrepl.LSN) error {
	if server := d.server.Load(); server != nil { // nil: the fault suite's broken build skips OnStart
		err := d.state.Advance(ctx, *server, lsn)
		if errors.Is(err, sinks.ErrStateChanged) {
			return fmt.Errorf("%w: %w", replication.ErrSuperseded, err)
		}
		if err != nil {
			return err
		}
	}
	if err := d.applier.Secure(ctx, lsn); err != nil {
		if errors.Is(err, sinks.ErrLostWrites) {
			// Keys cdcd deleted may be back, and their positions are
			// confirmed already: the next session invalidates everything.
			d.log.Error("a sink lost writes cdcd had applied; restarting the session to invalidate every section", "err", err)
			why := err.Error()
			d.lostWrites.Store(&why)
			return fmt.Errorf("%w: %w", replication.ErrResync, err)
		}
		if errors.Is(err, sinks.ErrLostUnconfirmed) {
			// Nothing confirmed is lost: the server sends the
			// transactions after the confirmed position again.
			d.log.Warn("a sink lost writes made after the last confirmed position; restarting the session to apply them again", "err", err)
			return fmt.Errorf("%w: %w", replication.ErrResync, err)
		}
		return err
	}
	return nil
}

// checkEviction warns when Redis may evict cdcd's recorded state or the
// revision keys readers rely on: allkeys-* policies evict keys without a
// TTL too.
func (d *daemon) checkEviction(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	policy, err := d.redis.EvictionPolicy(ctx)
	switch {
	case err != nil:
		d.log.Info("cannot read redis maxmemory-policy; make sure it cannot evict keys without a TTL (noeviction or volatile-*)", "err", err)
	case strings.HasPrefix(policy, "allkeys-"):
		d.log.Warn("redis may evict keys without a TTL, including cdcd's recorded state and revision keys: "+
			"a lost state is treated as a gap (every section invalidated) and a lost revision lets readers store stale values; "+
			"set maxmemory-policy to volatile-lru (or another volatile-* policy) and give cache entries a TTL, or to noeviction",
			"maxmemory_policy", policy)
	}
}
