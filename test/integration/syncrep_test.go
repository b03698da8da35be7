package integration

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Under synchronous replication a commit is decoded and sent to cdcd while
// it still waits for its standby, before other sessions can see it. cdcd
// must not invalidate until it is visible: a reader would refill the old
// value.
func TestSynchronousCommitIsInvalidatedOnceVisible(t *testing.T) {
	e := newEnv(t)
	two := startSecondServer(t, e) // ALTER SYSTEM would stall every test on the shared server
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, two.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	setStandbys := func(names string) {
		t.Helper()
		if _, err := admin.Exec(ctx, `ALTER SYSTEM SET synchronous_standby_names = '`+names+`'`); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() { setStandbys("") }) // runs before admin is closed
	setStandbys("ghost")                  // a standby that never answers: commits wait

	d := e.startDaemonAt(two.url)
	e.set("nodb:5:climate")

	writer, err := pgx.Connect(ctx, two.url)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	if _, err := writer.Exec(ctx, `SET synchronous_commit = on`); err != nil { // the test servers run with it off
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := writer.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (5, 's', 'h')`)
		done <- err
	}()
	// The commit is in the WAL and decoded, but not visible.
	time.Sleep(3 * time.Second)
	var visible int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM climate_runs WHERE run_id = 5`).Scan(&visible); err != nil {
		t.Fatal(err)
	}
	if visible != 0 {
		t.Fatal("setup: the commit is visible already")
	}
	if !e.exists("nodb:5:climate") {
		t.Fatal("the key was deleted before its transaction became visible")
	}
	setStandbys("")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the key to be deleted once the commit is visible", func() bool { return !e.exists("nodb:5:climate") })
	_ = d
}
