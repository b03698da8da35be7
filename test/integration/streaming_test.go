package integration

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// streamedEnv makes the server stream any transaction larger than 64 kB
// (protocol v2) instead of holding it until commit.
func streamedEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.exec(fmt.Sprintf(`ALTER DATABASE %s SET logical_decoding_work_mem = '64kB'`, dbNameOf(e.dbURL)))
	return e
}

func (e *env) streamedTxns() int64 {
	e.t.Helper()
	var n int64
	_ = e.db.QueryRow(context.Background(), `SELECT coalesce(sum(stream_txns), 0)::bigint FROM pg_stat_replication_slots WHERE slot_name = $1`, e.slot).Scan(&n)
	return n
}

func TestStreamedTransactionAppliedOnlyAtCommit(t *testing.T) {
	e := streamedEnv(t)
	d := e.startDaemon()
	e.set("nodb:1:climate", "nodb:2:climate", "nodb:3:climate")

	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) SELECT 1, repeat('s', 100), 'h' FROM generate_series(1, 20000)`); err != nil {
		t.Fatal(err)
	}
	// Run 2's rows are written in a subtransaction that is rolled back.
	if _, err := tx.Exec(ctx, `SAVEPOINT sp`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) SELECT 2, repeat('s', 100), 'h' FROM generate_series(1, 20000)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT sp`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) SELECT 3, repeat('s', 100), 'h' FROM generate_series(1, 20000)`); err != nil {
		t.Fatal(err)
	}
	// The server streams the open transaction; nothing may be deleted yet.
	waitFor(t, 20*time.Second, "cdcd to receive the streamed changes", func() bool {
		return d.metric("cdcd_changes_total", "table=public.climate_runs", "op=insert") >= 40000
	})
	time.Sleep(300 * time.Millisecond)
	if !e.exists("nodb:1:climate") || !e.exists("nodb:3:climate") {
		t.Fatal("keys deleted before the streamed transaction committed")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.gone("nodb:1:climate", "nodb:3:climate")
	e.waitConfirmed(e.lsn(), 20*time.Second)
	if !e.exists("nodb:2:climate") {
		t.Error("the rolled-back subtransaction's key was deleted")
	}
	if n := e.streamedTxns(); n == 0 {
		t.Error("the server did not stream the transaction: the test proves nothing")
	}
}

func TestStreamedTransactionAbortedDeletesNothing(t *testing.T) {
	e := streamedEnv(t)
	d := e.startDaemon()
	e.set("nodb:5:climate")
	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) SELECT 5, repeat('s', 100), 'h' FROM generate_series(1, 60000)`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "cdcd to receive the streamed changes", func() bool {
		return d.metric("cdcd_changes_total", "table=public.climate_runs", "op=insert") >= 30000
	})
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// A later transaction passes through; the aborted one deleted nothing.
	e.set("nodb:6:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (6, 's', 'h')`)
	e.gone("nodb:6:climate")
	e.waitConfirmed(e.lsn(), 20*time.Second)
	if !e.exists("nodb:5:climate") {
		t.Error("an aborted streamed transaction deleted a key")
	}
}

// An invariant across a streamed transaction: coefficients changed in one
// statement and the version bumped in a later one is no violation.
func TestStreamedTransactionInvariantAcrossParts(t *testing.T) {
	e := streamedEnv(t)
	insertImpactFunction(e, 3)
	d := e.startDaemon()
	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, sql := range []string{
		`UPDATE impact_functions SET mdd_y[1] = 9`,
		`SAVEPOINT a`,
		`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT 1, repeat('s', 100), 'h' FROM generate_series(1, 60000)`,
		`RELEASE SAVEPOINT a`,
		`UPDATE impact_functions SET version = version + 1`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitConfirmed(e.lsn(), 20*time.Second)
	if n := d.metric("cdcd_invariant_violations_total"); n != 0 {
		t.Errorf("%v violations for a version bumped later in the same streamed transaction", n)
	}
	if n := e.streamedTxns(); n == 0 {
		t.Error("the server did not stream the transaction")
	}
}
