package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// flushed waits until the server has flushed WAL up to lsn (commits are
// asynchronous in the test server), so pg_walinspect can read it.
func (e *env) flushed(lsn pglogrepl.LSN) {
	e.t.Helper()
	waitFor(e.t, 10*time.Second, "WAL flush", func() bool {
		var s string
		if err := e.db.QueryRow(context.Background(), `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		l, _ := pglogrepl.ParseLSN(s)
		return l >= lsn
	})
}

// commitLSN returns the start LSN of the commit record of transaction xid,
// read from the WAL with pg_walinspect.
func (e *env) commitLSN(xid uint32, from, to pglogrepl.LSN) pglogrepl.LSN {
	e.t.Helper()
	e.exec(`CREATE EXTENSION IF NOT EXISTS pg_walinspect`)
	e.flushed(to)
	var s string
	err := e.db.QueryRow(context.Background(), `
		SELECT start_lsn::text FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)
		WHERE resource_manager = 'Transaction' AND record_type LIKE 'COMMIT%' AND xid = $3::text::xid`,
		from.String(), to.String(), fmt.Sprint(xid)).Scan(&s)
	if err != nil {
		e.t.Fatalf("find commit record of xid %d: %v", xid, err)
	}
	l, _ := pglogrepl.ParseLSN(s)
	return l
}

// commitEnds maps each transaction that committed between from and to to
// the end of its commit record: the position that acknowledges it.
func (e *env) commitEnds(from, to pglogrepl.LSN) map[uint32]pglogrepl.LSN {
	e.t.Helper()
	e.exec(`CREATE EXTENSION IF NOT EXISTS pg_walinspect`)
	e.flushed(to)
	rows, err := e.db.Query(context.Background(), `
		SELECT xid::text::bigint, end_lsn::text FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)
		WHERE resource_manager = 'Transaction' AND record_type LIKE 'COMMIT%'`, from.String(), to.String())
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	out := map[uint32]pglogrepl.LSN{}
	for rows.Next() {
		var xid uint32
		var s string
		if err := rows.Scan(&xid, &s); err != nil {
			e.t.Fatal(err)
		}
		out[xid], _ = pglogrepl.ParseLSN(s)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// write runs sql in its own transaction and returns its xid and the WAL
// position after it committed.
func (e *env) write(sql string, args ...any) (uint32, pglogrepl.LSN) {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	var xid uint32
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
	return xid, e.lsn()
}

// gone waits up to 1 s for every key to be deleted.
func (e *env) gone(keys ...string) {
	e.t.Helper()
	start := time.Now()
	for _, k := range keys {
		waitFor(e.t, time.Second-time.Since(start), "key "+k+" to be deleted", func() bool { return !e.exists(k) })
	}
}

func TestInsertUpdateDeleteInvalidateWithinOneSecond(t *testing.T) {
	e := newEnv(t)
	e.startDaemon()

	steps := []struct {
		name string
		sql  string
	}{
		{"insert", `INSERT INTO topics (title) VALUES ('climate')`},
		{"update", `UPDATE topics SET title = 'climate risk'`},
		{"delete", `DELETE FROM topics`},
	}
	for _, s := range steps {
		e.set("state:summary:core", "state:summary:progress")
		before := e.lsn()
		xid, after := e.write(s.sql)
		e.gone("state:summary:core")
		want := e.commitLSN(xid, before, after)
		waitFor(t, time.Second, s.name+" revision", func() bool { return e.get("state:summary:rev:core") == want.String() })
		if !e.exists("state:summary:progress") {
			t.Errorf("%s on topics deleted the progress section's key", s.name)
		}
	}
}

func TestColumnFilterAndMovedRowUnderFullIdentity(t *testing.T) {
	e := newEnv(t)
	e.exec(`INSERT INTO topics (title) VALUES ('t')`)
	e.exec(`INSERT INTO workplans (topic_id, title) SELECT id, 'w' FROM topics`)
	e.exec(`INSERT INTO tasks (workplan_id, title) SELECT id, 'task' FROM workplans`)
	e.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 'ssp245', 'flood')`)
	e.startDaemon()

	// notes is outside task-title's columns: the key stays.
	e.set("state:summary:core")
	_, after := e.write(`UPDATE tasks SET notes = 'n'`)
	e.waitConfirmed(after, 10*time.Second)
	if !e.exists("state:summary:core") {
		t.Fatal("an update of a column outside the rule's columns deleted the key")
	}
	// title is inside: the key goes.
	e.write(`UPDATE tasks SET title = 'renamed'`)
	e.gone("state:summary:core")

	// A climate run row moved from run 1 to run 2: both keys go, run 3's stays.
	e.set("nodb:1:climate", "nodb:2:climate", "nodb:3:climate")
	_, after = e.write(`UPDATE climate_runs SET run_id = 2 WHERE run_id = 1`)
	e.gone("nodb:1:climate", "nodb:2:climate")
	e.waitConfirmed(after, 10*time.Second)
	if !e.exists("nodb:3:climate") {
		t.Fatal("moving a row between runs 1 and 2 deleted run 3's key")
	}
}

func TestMovedRowUnderDefaultIdentityFallsBackToPattern(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE climate_runs REPLICA IDENTITY DEFAULT`)
	e.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 'ssp245', 'flood')`)
	d := e.startDaemon()

	e.set("nodb:1:climate", "nodb:2:climate", "unrelated:key")
	e.write(`UPDATE climate_runs SET run_id = 2 WHERE run_id = 1`)
	e.gone("nodb:1:climate", "nodb:2:climate")
	if !e.exists("unrelated:key") {
		t.Fatal("the pattern fallback deleted a key outside the section")
	}
	waitFor(t, 5*time.Second, "the pattern invalidation to be counted", func() bool {
		return d.metric("cdcd_pattern_invalidations_total", "section=run.climate", "reason=old_row_unknown") == 1
	})
}

func TestRolledBackTransactionDeletesNothing(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE scratch (id int)`) // not in the publication
	e.startDaemon()
	e.set("state:summary:core", "nodb:7:climate")

	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO topics (title) VALUES ('never')`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (7, 's', 'h')`); err != nil {
		t.Fatal(err)
	}
	// Let a concurrent committed transaction pass through the stream while
	// the doomed one is open, then roll back.
	_, after := e.write(`INSERT INTO scratch VALUES (1)`)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	e.exec(`INSERT INTO scratch VALUES (2)`)
	end := e.lsn()
	e.waitConfirmed(max(after, end), 15*time.Second)
	for _, k := range []string{"state:summary:core", "nodb:7:climate"} {
		if !e.exists(k) {
			t.Errorf("a rolled-back transaction deleted %s", k)
		}
	}
	// cdcd is alive and would have deleted them had they committed.
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (7, 's', 'h')`)
	e.gone("nodb:7:climate")
}

func TestKillAndRestartLosesNothing(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()
	e.write(`INSERT INTO topics (title) VALUES ('first')`) // the slot is in use
	d.kill()

	keys := []string{"state:summary:core", "state:summary:progress"}
	for i := 1; i <= 20; i++ {
		keys = append(keys, fmt.Sprintf("nodb:%d:climate", i))
	}
	e.set(keys...)
	e.write(`INSERT INTO topics (title) VALUES ('while down')`)
	e.exec(`INSERT INTO workplans (topic_id, title) SELECT id, 'w' FROM topics LIMIT 1`)
	e.exec(`INSERT INTO tasks (workplan_id, title) SELECT id, 't' FROM workplans`)
	e.exec(`INSERT INTO progress_events (task_id, message) SELECT id, 'started' FROM tasks`)
	for i := 1; i <= 20; i++ {
		e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 's', 'h')`, i)
	}
	end := e.lsn()

	e.startDaemon()
	e.waitConfirmed(end, 20*time.Second)
	for _, k := range keys {
		if e.exists(k) {
			t.Errorf("key %s written while cdcd was down survived its restart", k)
		}
	}
}

// Consecutive transactions with a 1 s status interval (the tests' setting,
// equal to the feedback delay) once stalled the receive loop until each
// periodic status update.
func TestConsecutiveTransactionsAreNotDelayed(t *testing.T) {
	e := newEnv(t)
	e.startDaemon()
	var slow int
	for i := 0; i < 20; i++ {
		e.set("nodb:9:climate")
		start := time.Now()
		e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (9, 's', 'h')`)
		waitFor(t, 5*time.Second, "the key to be deleted", func() bool { return !e.exists("nodb:9:climate") })
		if d := time.Since(start); d > 300*time.Millisecond {
			slow++
			t.Logf("transaction %d: key gone after %s", i, d.Round(time.Millisecond))
		}
	}
	if slow > 2 {
		t.Errorf("%d of 20 transactions took longer than 300ms to invalidate", slow)
	}
}

func TestStandbyTakesOverWithin15s(t *testing.T) {
	e := newEnv(t)
	active := e.startDaemon()
	standby := e.spawn()
	waitFor(t, 15*time.Second, "the second instance to stand by", func() bool {
		code, body, err := standby.get("/readyz")
		return err == nil && code == 503 && strings.Contains(body, "held by another consumer") &&
			standby.metric("cdcd_standby") == 1
	})
	if active.metric("cdcd_standby") != 0 {
		t.Error("the active instance reports standby")
	}

	active.kill()
	killed := time.Now()
	standby.waitReady(15 * time.Second)
	t.Logf("took over %s after the active instance died", time.Since(killed).Round(time.Millisecond))
	if standby.metric("cdcd_standby") != 0 {
		t.Error("cdcd_standby still 1 after taking over")
	}
	e.set("nodb:3:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (3, 's', 'h')`)
	e.gone("nodb:3:climate")
}
