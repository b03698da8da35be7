package integration

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

// dropSlotWhileStopped streams a transaction, stops the daemon cleanly and
// drops its slot: the next start must treat it as a gap (slot_recreated).
func (e *env) dropSlotWhileStopped() {
	e.t.Helper()
	d := e.startDaemon()
	_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
	e.waitConfirmed(end, 10*time.Second)
	if code, _ := d.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		e.t.Fatalf("exit %d", code)
	}
	e.exec(`SELECT pg_drop_replication_slot($1)`, e.slot)
}

// A gap reaches every consumer: warmers and in-process caches listening on
// a section's channel hear that everything may be stale, and why.
func TestGapPublishedOnEveryChannel(t *testing.T) {
	e := newEnv(t)
	e.dropSlotWhileStopped()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := e.rdb.Subscribe(ctx, "cdcd:invalidations")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	e.startDaemon()

	select {
	case m := <-sub.Channel():
		var got map[string]any
		if err := json.Unmarshal([]byte(m.Payload), &got); err != nil {
			t.Fatalf("payload %s: %v", m.Payload, err)
		}
		if got["gap"] != true || got["reason"] != "slot_recreated" || got["section"] != "run.climate" || got["lsn"] == "" {
			t.Errorf("payload %s", m.Payload)
		}
		if pats, _ := got["patterns"].([]any); len(pats) != 1 || pats[0] != "nodb:*:climate" {
			t.Errorf("patterns in %s", m.Payload)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no message on cdcd:invalidations after a gap")
	}
}
