package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The recorded state deleted from a Redis that was not emptied is a gap:
// cdcd cannot tell which server it streamed from or where it stopped.
func TestGapRecordedStateMissing(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()
	_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
	e.waitConfirmed(end, 10*time.Second)
	d.stop(syscall.SIGTERM, 10*time.Second)

	if n := e.rdb.Del(context.Background(), "cdcd:slot:"+e.slot).Val(); n != 1 {
		t.Fatalf("deleted %d state keys, want 1", n)
	}
	e.set(sectionKeys...)
	d = e.startDaemon()
	for _, k := range sectionKeys {
		waitFor(t, 5*time.Second, k+" to be invalidated", func() bool { return !e.exists(k) })
	}
	if n := d.metric("cdcd_gap_invalidations_total", "reason=state_missing"); n != 1 {
		t.Errorf("gap counter %v, want 1", n)
	}
}

// A Redis that was emptied lost every key that could be stale with the
// state: not a gap.
func TestNoGapWhenRedisWasEmptied(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()
	_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
	e.waitConfirmed(end, 10*time.Second)
	d.stop(syscall.SIGTERM, 10*time.Second)

	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	e.set("nodb:7:climate")
	d = e.startDaemon()
	time.Sleep(300 * time.Millisecond)
	if !e.exists("nodb:7:climate") {
		t.Fatal("an emptied Redis was treated as a gap")
	}
	if n := d.metric("cdcd_gap_invalidations_total"); n != 0 {
		t.Fatalf("%v gaps counted", n)
	}
	// The state is recorded again: deleting it now is a gap.
	if !e.exists("cdcd:slot:" + e.slot) {
		t.Fatal("no state recorded after the start")
	}
}

// A standby instance polls the slot another instance streams from; it must
// never write the recorded state (its reset raced the active instance's
// progress), and a restart after the standby polled is not a gap.
func TestStandbyDoesNotWriteRecordedState(t *testing.T) {
	e := newEnv(t)
	active := e.startDaemon()
	_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
	e.waitConfirmed(end, 10*time.Second)

	mon := startMonitor(t)
	standby := e.spawn()
	waitFor(t, 20*time.Second, "the standby to poll the slot twice", func() bool {
		return len(standby.logEntries("slot is in use")) >= 1 && standby.metric("cdcd_replication_reconnects_total") >= 2
	})
	// The state's server is written only by the reset at a session's start
	// (HSET … system_id …, in the script or, before, outright); the active
	// instance's progress moves only its position.
	for _, c := range mon.stop() {
		line := strings.Join(c, " ")
		if strings.EqualFold(c[0], "HSET") && strings.Contains(line, "cdcd:slot:"+e.slot) && strings.Contains(line, "system_id") {
			t.Errorf("recorded state reset while the active instance streams: %s", line)
		}
		if strings.Contains(line, "cdcd:slot:"+e.slot+":marker") {
			t.Errorf("a session start while the active instance streams: %s", line)
		}
	}
	// The active instance keeps recording its progress.
	_, end = e.write(`INSERT INTO topics (title) VALUES ('t2')`)
	e.waitConfirmed(end, 10*time.Second)
	standby.stop(syscall.SIGTERM, 10*time.Second)
	active.stop(syscall.SIGTERM, 10*time.Second)
	e.set("nodb:7:climate")
	d := e.startDaemon()
	time.Sleep(300 * time.Millisecond)
	if n := d.metric("cdcd_gap_invalidations_total"); n != 0 || !e.exists("nodb:7:climate") {
		t.Fatalf("a restart after a standby polled counted %v gaps", n)
	}
}

// Rules reloaded while a large transaction streams (protocol v2, in parts):
// the transaction is evaluated under the rules it began with, and the
// daemon does not crash merging parts begun under different rules.
func TestReloadWhileTransactionStreams(t *testing.T) {
	e := streamedEnv(t)
	path := e.privateRules(t)
	d := e.startDaemon()
	e.set("nodb:1:climate", "nodb:3:climate", "v2:1:climate", "v2:3:climate")

	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	insert := func(run int) {
		t.Helper()
		if _, err := tx.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) SELECT $1, repeat('s', 100), 'h' FROM generate_series(1, 20000)`, run); err != nil {
			t.Fatal(err)
		}
	}
	insert(1)
	waitFor(t, 20*time.Second, "the first part to stream", func() bool {
		return d.metric("cdcd_changes_total", "table=public.climate_runs", "op=insert") >= 10000
	})
	// The section is renamed and its key changed: a part evaluated under
	// these rules names a section the first part's rules do not have.
	v2 := strings.ReplaceAll(string(rulesV2(t)), `"run.climate"`, `"run.climate.v2"`)
	if err := os.WriteFile(path, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload", func() bool { return d.metric("cdcd_rules_reload_total", "result=ok") >= 1 })
	if _, err := tx.Exec(ctx, `SAVEPOINT sp`); err != nil {
		t.Fatal(err)
	}
	insert(3) // a new part: another subtransaction
	waitFor(t, 20*time.Second, "the second part to stream", func() bool {
		return d.metric("cdcd_changes_total", "table=public.climate_runs", "op=insert") >= 30000
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	e.gone("nodb:1:climate", "nodb:3:climate")
	e.waitConfirmed(e.lsn(), 20*time.Second)
	select {
	case <-d.done:
		t.Fatalf("cdcd exited: %v", d.err)
	default:
	}
	if !e.exists("v2:1:climate") || !e.exists("v2:3:climate") {
		t.Error("the transaction was evaluated partly under the reloaded rules")
	}
	if n := e.streamedTxns(); n == 0 {
		t.Error("the server did not stream the transaction: the test proves nothing")
	}
	// The next transaction uses the new rules.
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (3, 's', 'h')`)
	e.waitConfirmed(end, 10*time.Second)
	if e.exists("v2:3:climate") {
		t.Error("a transaction after the reload did not use the new rules")
	}
}

// A streamed transaction with one subtransaction per row — a PL/pgSQL loop
// with an EXCEPTION block, as bulk loads write — keeps cdcd's memory
// bounded, and every key is invalidated.
func TestMillionSubtransactionsBoundedMemory(t *testing.T) {
	const rows = 1_000_000
	e := newEnv(t)
	// Streamed in parts of about 25,000 subtransactions each. (Each part
	// costs the server time in every subtransaction so far: at 64kB the
	// server, not cdcd, takes minutes.)
	e.exec(fmt.Sprintf(`ALTER DATABASE %s SET logical_decoding_work_mem = '4MB'`, dbNameOf(e.dbURL)))
	saved := binary
	binary = plainBinary(t)
	defer func() { binary = saved }()
	d := e.startDaemon()
	e.set("nodb:1:climate", "nodb:500:climate", "nodb:1000:climate", "nodb:1001:climate", "unrelated")

	start := time.Now()
	_, end := e.write(`DO $$
BEGIN
  FOR i IN 1..` + strconv.Itoa(rows) + ` LOOP
    BEGIN
      INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1 + i % 1000, 's', 'h');
    EXCEPTION WHEN unique_violation THEN NULL;
    END;
  END LOOP;
END $$`)
	t.Logf("wrote %d subtransactions in %s", rows, time.Since(start).Round(time.Second))
	e.waitConfirmed(end, 5*time.Minute)
	t.Logf("applied %s after the start", time.Since(start).Round(time.Second))

	rss := peakRSS(t, d.cmd.Process.Pid)
	t.Logf("peak RSS %.1f MB", float64(rss)/(1<<20))
	if rss > 100<<20 {
		t.Errorf("peak RSS %d MB, want under 100 MB", rss>>20)
	}
	if n := d.metric("cdcd_changes_total", "table=public.climate_runs", "op=insert"); n != rows {
		t.Errorf("%v inserts received, want %d", n, rows)
	}
	for _, k := range []string{"nodb:1:climate", "nodb:500:climate", "nodb:1000:climate"} {
		if e.exists(k) {
			t.Errorf("%s survived", k)
		}
	}
	if !e.exists("nodb:1001:climate") || !e.exists("unrelated") {
		t.Error("a key no change named was deleted")
	}
	if n := e.streamedTxns(); n == 0 {
		t.Error("the server did not stream the transaction: the test proves nothing")
	}
}

// An eviction policy that can evict keys without a TTL could evict cdcd's
// recorded state and the revision keys readers rely on: say so at start.
func TestWarnsOfEvictionPolicy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.rdb.ConfigSet(context.Background(), "maxmemory-policy", "noeviction") })
	d := e.startDaemon()
	entries := d.logEntries("maxmemory-policy")
	if len(entries) != 1 || entries[0]["level"] != "WARN" || entries[0]["maxmemory_policy"] != "allkeys-lru" {
		t.Fatalf("log: %v", entries)
	}
	if !strings.Contains(entries[0]["msg"].(string), "volatile-lru") {
		t.Errorf("the warning does not say what to set: %v", entries[0]["msg"])
	}
	d.stop(syscall.SIGTERM, 10*time.Second)

	if err := e.rdb.ConfigSet(ctx, "maxmemory-policy", "volatile-lru").Err(); err != nil {
		t.Fatal(err)
	}
	d = e.startDaemon()
	if entries := d.logEntries("maxmemory-policy"); len(entries) != 0 {
		t.Fatalf("warned under volatile-lru: %v", entries)
	}
}
