package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

var sectionKeys = []string{"state:summary:core", "state:summary:progress", "nodb:1:climate", "nodb:2:climate", "impact:1:v1"}

func TestGapSlotDroppedWhileStopped(t *testing.T) {
	e := newEnv(t)
	e.dropSlotWhileStopped()
	e.set(append(sectionKeys, "unrelated")...)
	e.write(`UPDATE climate_runs SET run_id = 1`) // a change nobody will ever stream

	d := e.startDaemon()
	for _, k := range sectionKeys {
		waitFor(t, 5*time.Second, k+" to be invalidated", func() bool { return !e.exists(k) })
	}
	if !e.exists("unrelated") {
		t.Error("a key outside every section was deleted")
	}
	if n := d.metric("cdcd_gap_invalidations_total", "reason=slot_recreated"); n != 1 {
		t.Errorf("gap counter %v, want 1", n)
	}
	entries := d.logEntries("cannot prove every change was seen")
	if len(entries) != 1 || entries[0]["level"] != "ERROR" || entries[0]["reason"] != "slot_recreated" {
		t.Errorf("log: %v", entries)
	}
}

func TestGapSlotAdvancedBehindCdcdsBack(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()
	d.stop(syscall.SIGTERM, 10*time.Second)
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (2, 's', 'h')`)
	e.exec(`SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, e.slot)
	e.set(sectionKeys...)
	d = e.startDaemon()
	for _, k := range sectionKeys {
		waitFor(t, 5*time.Second, k+" to be invalidated", func() bool { return !e.exists(k) })
	}
	if n := d.metric("cdcd_gap_invalidations_total", "reason=slot_advanced"); n != 1 {
		t.Errorf("gap counter %v, want 1", n)
	}
}

// Ordinary restarts, clean or crashed, are not gaps.
func TestNoGapOnOrdinaryRestarts(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()
	for i := 0; i < 3; i++ {
		_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
		e.waitConfirmed(end, 10*time.Second)
		if i%2 == 0 {
			d.kill()
		} else {
			d.stop(syscall.SIGTERM, 10*time.Second)
		}
		e.write(`INSERT INTO progress_events (task_id, message) SELECT id, 'm' FROM tasks LIMIT 0`)
		e.set("nodb:7:climate")
		d = e.startDaemon()
		time.Sleep(300 * time.Millisecond)
		if !e.exists("nodb:7:climate") {
			t.Fatalf("restart %d invalidated everything", i+1)
		}
		if n := d.metric("cdcd_gap_invalidations_total"); n != 0 {
			t.Fatalf("restart %d counted a gap", i+1)
		}
	}
}

func TestSlotWALRetentionIsReported(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon("CDCD_WAL_POLL=200ms", "CDCD_LAG_WARN_BYTES=1")
	e.write(`INSERT INTO topics (title) VALUES ('t')`)
	waitFor(t, 10*time.Second, "retained WAL to be measured", func() bool {
		return d.metric("cdcd_slot_retained_wal_bytes") > 0
	})
	waitFor(t, 5*time.Second, "the retention warning", func() bool { return len(d.logEntries("retains a lot of WAL")) == 1 })
	_, body, _ := d.get("/readyz")
	if !strings.Contains(body, "wal_status: reserved") {
		t.Errorf("/readyz does not show the slot's wal_status:\n%s", body)
	}
}
