package integration

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A pattern invalidation scanning a big keyspace does not hold up later,
// unrelated invalidations; only the confirmed position waits for it.
func TestPatternDoesNotStallTheStream(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const unrelated = 400_000
	for i := 0; i < unrelated; i += 10_000 {
		pipe := e.rdb.Pipeline()
		for j := i; j < i+10_000; j++ {
			pipe.Set(ctx, fmt.Sprintf("other:%d", j), "v", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.exec(`ALTER TABLE climate_runs REPLICA IDENTITY DEFAULT`)
	e.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	d := e.startDaemon()
	e.set("nodb:1:climate", "nodb:2:climate", "state:summary:core")

	// The old run_id is unknown under REPLICA IDENTITY DEFAULT: a pattern.
	_, patternEnd := e.write(`UPDATE climate_runs SET run_id = 2 WHERE run_id = 1`)
	_, exactEnd := e.write(`INSERT INTO topics (title) VALUES ('t')`)
	overtaken := false
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && e.exists("nodb:1:climate") {
		if !e.exists("state:summary:core") && d.metric("cdcd_pattern_backlog") > 0 {
			overtaken = true
			if c := e.confirmed(); c >= patternEnd {
				t.Fatalf("confirmed %s past the transaction whose pattern is still running (%s)", c, patternEnd)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !overtaken {
		t.Fatal("the later transaction's key was not deleted while the pattern ran")
	}
	e.gone("nodb:1:climate")
	e.waitConfirmed(exactEnd, 30*time.Second)
	if d.metric("cdcd_pattern_seconds") < 1 {
		t.Error("no pattern job counted")
	}
	if e.rdb.DBSize(ctx).Val() < unrelated {
		t.Error("the pattern deleted unrelated keys")
	}
}
