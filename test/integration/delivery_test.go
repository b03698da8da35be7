package integration

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
)

// load inserts climate runs 1, 2, 3, … one transaction each until stopped,
// after setting each run's key, and returns how many it committed.
type load struct {
	e    *env
	stop chan struct{}
	done chan struct{}
	n    atomic.Int64
	err  error
}

func (e *env) startLoad(pause time.Duration) *load {
	l := &load{e: e, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		ctx := context.Background()
		for i := 1; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			if _, err := e.db.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 's', 'h')`, i); err != nil {
				l.err = err
				return
			}
			l.n.Store(int64(i))
			if pause > 0 {
				time.Sleep(pause)
			}
		}
	}()
	return l
}

func (l *load) finish(t *testing.T) int {
	t.Helper()
	close(l.stop)
	<-l.done
	if l.err != nil {
		t.Fatalf("write load: %v", l.err)
	}
	return int(l.n.Load())
}

// readOnly makes Redis a replica of a port with nothing behind it: every
// write fails with READONLY until promote is called.
func readOnly(t *testing.T) (promote func()) {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := rds.Do(ctx, "REPLICAOF", "127.0.0.1", fmt.Sprint(port)); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := rds.Do(ctx, "REPLICAOF", "NO", "ONE"); err != nil {
			t.Fatal(err)
		}
	}
}

// watchConfirmed samples the slot's position for d and returns the highest.
func (e *env) watchConfirmed(d time.Duration) pglogrepl.LSN {
	var highest pglogrepl.LSN
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		highest = max(highest, e.confirmed())
	}
	return highest
}

func TestRedisReadOnlyDuringLoad(t *testing.T) {
	e := newEnv(t)
	const runs = 20000
	keys := make([]string, runs)
	for i := range keys {
		keys[i] = fmt.Sprintf("nodb:%d:climate", i+1)
	}
	e.set(keys...)
	d := e.startDaemon()
	l := e.startLoad(2 * time.Millisecond)
	time.Sleep(time.Second)

	// Read-only for 5 s: the sink retries; nothing after the fence (taken
	// once writes already fail) may be confirmed meanwhile.
	promote := readOnly(t)
	fence := e.lsn()
	if highest := e.watchConfirmed(5 * time.Second); highest > fence {
		t.Errorf("confirmed_flush_lsn reached %s while Redis was read-only; no commit after %s was applied", highest, fence)
	}
	promote()
	if d.metric("cdcd_sink_errors_total", "sink=redis") == 0 {
		t.Error("no Redis errors were counted: the fault did not happen")
	}
	time.Sleep(time.Second)

	// Again, but cdcd is killed before Redis comes back: whatever it held
	// must be re-sent after the restart, so it must not have been confirmed.
	promote = readOnly(t)
	fence = e.lsn()
	if highest := e.watchConfirmed(3 * time.Second); highest > fence {
		t.Errorf("confirmed_flush_lsn reached %s while Redis was read-only; no commit after %s was applied", highest, fence)
	}
	d.kill()
	promote()
	e.startDaemon()
	time.Sleep(time.Second)

	n := l.finish(t)
	if n >= runs {
		t.Fatalf("load wrote %d runs, more than the %d keys prepared", n, runs)
	}
	e.waitConfirmed(e.lsn(), 30*time.Second)
	stale := 0
	for i := 0; i < n; i++ {
		if e.exists(keys[i]) {
			stale++
			if stale <= 10 {
				t.Errorf("key %s is stale after Redis came back", keys[i])
			}
		}
	}
	if stale > 0 {
		t.Errorf("%d of %d keys stale", stale, n)
	}
	if !e.exists(keys[n]) {
		t.Errorf("key %s of a run never written was deleted", keys[n])
	}
	t.Logf("%d transactions", n)
}

func TestLargeTransactionUnlinksEachKeyOnce(t *testing.T) {
	e := newEnv(t)
	e.startDaemon()
	m := startMonitor(t)
	// 10,000 rows over 100 runs, one transaction.
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard)
		SELECT g % 100, 's' || g, 'h' FROM generate_series(1, 10000) g`)
	e.waitConfirmed(end, 30*time.Second)
	cmds := m.stop()

	count := map[string]int{}
	for _, c := range cmds {
		if len(c) == 0 {
			continue
		}
		switch strings.ToUpper(c[0]) {
		case "UNLINK":
			for _, k := range c[1:] {
				count[k]++
			}
		case "DEL":
			t.Errorf("cdcd sent DEL: %v", c)
		}
	}
	for run := 0; run < 100; run++ {
		k := fmt.Sprintf("nodb:%d:climate", run)
		if count[k] != 1 {
			t.Errorf("%s unlinked %d times, want once", k, count[k])
		}
		delete(count, k)
	}
	if len(count) > 0 {
		t.Errorf("unexpected keys unlinked: %v", count)
	}
}

func TestIdleSlotFollowsServerWhenOnlyUnpublishedTablesChange(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE audit_log (id bigint GENERATED ALWAYS AS IDENTITY, entry text)`)
	// The contract's status interval, not the tests' shorter one.
	e.startDaemon("CDCD_STATUS_INTERVAL=10s")
	for i := 0; i < 200; i++ {
		e.exec(`INSERT INTO audit_log (entry) VALUES (repeat('x', 1000))`)
	}
	target := e.lsn()
	start := time.Now()
	e.waitConfirmed(target, 15*time.Second)
	t.Logf("confirmed %s within %s", target, time.Since(start).Round(time.Millisecond))
}

func TestVersionBumpInvariant(t *testing.T) {
	e := newEnv(t)
	e.exec(`INSERT INTO impact_functions (name, hazard, intensity_unit, mdd_x, mdd_y, paa_x, paa_y, attribution)
		VALUES ('river flood', 'flood', 'm', '{0,1,2}', '{0,0.5,1}', '{0,1,2}', '{0,1,1}', 'JRC')`)
	d := e.startDaemon()
	violations := func() float64 {
		return d.metric("cdcd_invariant_violations_total", "invariant=impact-function-version-bump", "table=public.impact_functions")
	}

	// Coefficients changed, version not bumped: one warning, counter 1.
	_, end := e.write(`UPDATE impact_functions SET mdd_y = '{0,0.6,1}'`)
	e.waitConfirmed(end, 10*time.Second)
	waitFor(t, 2*time.Second, "the violation to be counted", func() bool { return violations() == 1 })
	entries := d.logEntries("invariant violated")
	if len(entries) != 1 {
		t.Fatalf("%d violation log lines, want 1", len(entries))
	}
	v := entries[0]
	if v["level"] != "WARN" {
		t.Errorf("level %v, want WARN", v["level"])
	}
	for _, f := range []string{"invariant", "severity", "table", "primary_key", "changed", "unchanged", "lsn", "xid", "commit_time"} {
		if _, ok := v[f]; !ok {
			t.Errorf("violation log line lacks %q: %v", f, v)
		}
	}
	if v["invariant"] != "impact-function-version-bump" || v["table"] != "public.impact_functions" {
		t.Errorf("wrong invariant or table: %v", v)
	}
	changed, _ := v["changed"].(map[string]any)
	mdd, _ := changed["mdd_y"].(map[string]any)
	if mdd["old"] != "{0,0.5,1}" || mdd["new"] != "{0,0.6,1}" {
		t.Errorf("changed = %v, want mdd_y old {0,0.5,1} new {0,0.6,1}", changed)
	}
	if len(changed) != 1 {
		t.Errorf("changed lists %d columns, want only mdd_y: %v", len(changed), changed)
	}
	version, _ := v["unchanged"].(map[string]any)["version"].(map[string]any)
	if version["old"] != "1" || version["new"] != "1" {
		t.Errorf("unchanged version = %v, want old 1 new 1", version)
	}
	if pk, _ := v["primary_key"].(map[string]any); pk["id"] != "1" {
		t.Errorf("primary_key = %v, want id 1", v["primary_key"])
	}

	// With a bump, and an attribution-only change: silent.
	e.write(`UPDATE impact_functions SET mdd_y = '{0,0.7,1}', version = version + 1`)
	_, end = e.write(`UPDATE impact_functions SET attribution = 'JRC 2024'`)
	e.waitConfirmed(end, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := violations(); n != 1 {
		t.Errorf("counter at %v after a bumped and an attribution-only update, want 1", n)
	}
	if n := len(d.logEntries("invariant violated")); n != 1 {
		t.Errorf("%d violation log lines after a bumped and an attribution-only update, want 1", n)
	}
}

func TestSIGTERMUnderLoadExitsAndConfirms(t *testing.T) {
	e := newEnv(t)
	const runs = 60000
	keys := make([]string, runs+1)
	for i := 1; i <= runs; i++ {
		keys[i] = fmt.Sprintf("nodb:%d:climate", i)
	}
	e.set(keys[1:]...)
	start := e.lsn()
	d := e.startDaemon()
	l := e.startLoad(0)
	time.Sleep(2 * time.Second)

	code, took := d.stop(syscall.SIGTERM, 10*time.Second)
	n := l.finish(t)
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if n >= runs {
		t.Fatalf("load wrote %d runs, more than the %d keys prepared", n, runs)
	}
	confirmed := e.confirmed()
	t.Logf("exited in %s; %d transactions written, slot confirms %s", took.Round(time.Millisecond), n, confirmed)

	// Each run's transaction is applied when its key is gone, and confirmed
	// when its commit record ends at or before the slot's position: the two
	// must agree run by run.
	ends := e.commitEnds(start, e.lsn())
	rows, err := e.db.Query(context.Background(), `SELECT run_id, xmin::text::bigint FROM climate_runs`)
	if err != nil {
		t.Fatal(err)
	}
	var appliedN, confirmedN int
	for rows.Next() {
		var run int
		var xid uint32
		if err := rows.Scan(&run, &xid); err != nil {
			t.Fatal(err)
		}
		end, ok := ends[xid]
		if !ok {
			t.Fatalf("no commit record for xid %d", xid)
		}
		applied := !e.exists(keys[run])
		isConfirmed := end <= confirmed
		if applied {
			appliedN++
		}
		if isConfirmed {
			confirmedN++
		}
		if isConfirmed && !applied {
			t.Errorf("run %d (commit ending %s) is confirmed but its key is still cached", run, end)
		}
		if applied && !isConfirmed {
			t.Errorf("run %d (commit ending %s) was applied but not confirmed (slot at %s)", run, end, confirmed)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if appliedN == 0 {
		t.Fatal("nothing was applied before SIGTERM")
	}
	t.Logf("%d applied, %d confirmed", appliedN, confirmedN)
}
