package integration

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Under a busy stream the applier takes what arrived while it waited for
// its turn (CDCD_APPLY_RATE round trips a second after a burst of ten), and
// still deletes every key and confirms every transaction.
func TestBusyStreamIsAppliedInPacedBatches(t *testing.T) {
	e := newEnv(t)
	const rate, txs = 20, 200
	d := e.startDaemon(fmt.Sprintf("CDCD_APPLY_RATE=%d", rate))
	keys := make([]string, txs)
	for i := range keys {
		keys[i] = fmt.Sprintf("nodb:%d:climate", 5000+i)
	}
	e.set(keys...)
	before := d.metric("cdcd_apply_batch_transactions")

	// One transaction every 3ms, each flushed at commit: the server sends
	// each on its own, and unpaced each would be a round trip.
	conn, err := e.db.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(context.Background(), `SET synchronous_commit = on`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range txs {
		if _, err := conn.Exec(context.Background(), `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 's', 'h')`, 5000+i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Millisecond)
	}
	end := e.lsn()
	waitFor(t, 30*time.Second, "every key to be deleted", func() bool {
		n, err := e.rdb.Exists(context.Background(), keys...).Result()
		return err == nil && n == 0
	})
	elapsed := time.Since(start)
	e.waitConfirmed(end, 10*time.Second)

	batches := d.metric("cdcd_apply_batch_transactions") - before
	// A burst of ten, then at most rate a second (and one more for the
	// interval in progress).
	if limit := 10 + rate*elapsed.Seconds() + 1; batches > limit {
		t.Errorf("%d transactions in %s took %.0f round trips; pacing allows %.0f", txs, elapsed.Round(time.Millisecond), batches, limit)
	}
	if got := d.metric("cdcd_transactions_total"); got < txs {
		t.Errorf("cdcd_transactions_total = %.0f, want at least %d", got, txs)
	}
	t.Logf("%d transactions in %s: %.0f round trips, paced for %.2fs", txs, elapsed.Round(time.Millisecond), batches, d.metric("cdcd_apply_paced_seconds_total"))
}

// A stream slower than the cap is never delayed: each transaction is
// applied as it arrives, well past the burst.
func TestQuietStreamIsNotPaced(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon("CDCD_APPLY_RATE=20") // one round trip per 50ms
	for i := range 30 {
		e.set("nodb:9:climate")
		start := time.Now()
		e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (9, 's', 'h')`)
		waitFor(t, 5*time.Second, "the key to be deleted", func() bool { return !e.exists("nodb:9:climate") })
		if took := time.Since(start); took > 300*time.Millisecond {
			t.Errorf("transaction %d: key gone after %s", i, took.Round(time.Millisecond))
		}
		time.Sleep(60 * time.Millisecond)
	}
	if paced := d.metric("cdcd_apply_paced_seconds_total"); paced != 0 {
		t.Errorf("paced for %.3fs with one transaction every 60ms", paced)
	}
}

// A backlog is applied as fast as Redis takes it: pacing only makes a busy
// stream share round trips, and a full batch has nothing to wait for.
func TestBacklogIsNotPaced(t *testing.T) {
	e := newEnv(t)
	e.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, e.slot)
	// 40,000 one-row transactions wait in the slot before cdcd starts.
	e.exec(`DO $$ BEGIN
		FOR i IN 1..40000 LOOP
			INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (6000 + i % 100, 's', 'h');
			COMMIT;
		END LOOP;
	END $$`)
	e.set("nodb:7777:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (7777, 's', 'h')`)
	// One round trip a second after a burst of ten: paced, the backlog's
	// 40 or more full queues would wait 30s or more.
	d := e.startDaemon("CDCD_APPLY_RATE=1")
	start := time.Now()
	waitFor(t, 60*time.Second, "the backlog's last key to be deleted", func() bool { return !e.exists("nodb:7777:climate") })
	paced := d.metric("cdcd_apply_paced_seconds_total")
	t.Logf("backlog applied in %s, paced for %.2fs in %.0f round trips", time.Since(start).Round(time.Millisecond), paced, d.metric("cdcd_apply_batch_transactions"))
	if paced > 2 {
		t.Errorf("the backlog waited %.2fs for pacing", paced)
	}
}
