package integration

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

// A gap reaches every consumer: warmers and in-process caches listening on
// a section's channel hear that everything may be stale, and why.
func TestGapPublishedOnEveryChannel(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()
	_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
	e.waitConfirmed(end, 10*time.Second)
	if code, _ := d.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	e.exec(`SELECT pg_drop_replication_slot($1)`, e.slot)

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
		var got struct {
			Section  string   `json:"section"`
			Keys     []string `json:"keys"`
			Patterns []string `json:"patterns"`
			LSN      string   `json:"lsn"`
			Gap      bool     `json:"gap"`
			Reason   string   `json:"reason"`
		}
		if err := json.Unmarshal([]byte(m.Payload), &got); err != nil {
			t.Fatalf("payload %s: %v", m.Payload, err)
		}
		if !got.Gap || got.Reason != "slot_recreated" || got.Section != "run.climate" ||
			len(got.Patterns) != 1 || got.Patterns[0] != "nodb:*:climate" || got.LSN == "" {
			t.Errorf("payload %s", m.Payload)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no message on cdcd:invalidations after a gap")
	}
}
