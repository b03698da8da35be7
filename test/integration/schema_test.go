package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Schema changes on a rule table while cdcd streams.
func TestSchemaChangesWhileStreaming(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()

	e.exec(`ALTER TABLE climate_runs ADD COLUMN notes text`)
	e.set("nodb:1:climate", "nodb:9:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard, notes) VALUES (1, 's', 'h', 'n')`)
	e.gone("nodb:1:climate")

	e.exec(`ALTER TABLE climate_runs ALTER COLUMN run_id TYPE text USING run_id::text`)
	e.set("nodb:2:climate")
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ('2', 's', 'h')`)
	e.gone("nodb:2:climate")
	e.waitConfirmed(end, 10*time.Second)
	if !e.exists("nodb:9:climate") {
		t.Fatal("an exact-key change deleted another run's key")
	}

	// The template's column renamed away: the section's pattern, reported.
	e.exec(`ALTER TABLE climate_runs RENAME COLUMN run_id TO run`)
	e.set("nodb:3:climate", "nodb:9:climate", "unrelated")
	e.write(`INSERT INTO climate_runs (run, scenario, hazard) VALUES ('3', 's', 'h')`)
	e.gone("nodb:3:climate", "nodb:9:climate")
	if !e.exists("unrelated") {
		t.Error("the fallback deleted a key outside the section")
	}
	waitFor(t, 5*time.Second, "the missing column to be counted", func() bool {
		return d.metric("cdcd_missing_columns_total", "rule=climate-run", "column=run_id") >= 1
	})
	if len(d.logEntries("no longer has")) != 1 {
		t.Error("the missing column was not logged once")
	}

	// Dropped: the same.
	e.exec(`ALTER TABLE climate_runs DROP COLUMN run`)
	e.set("nodb:4:climate")
	e.write(`INSERT INTO climate_runs (scenario, hazard) VALUES ('s', 'h')`)
	e.gone("nodb:4:climate")

	// A column filter whose column was renamed matches every update.
	e.exec(`ALTER TABLE tasks RENAME COLUMN title TO name`)
	e.exec(`INSERT INTO topics (title) VALUES ('t')`)
	e.exec(`INSERT INTO workplans (topic_id, title) SELECT id, 'w' FROM topics`)
	e.exec(`INSERT INTO tasks (workplan_id, name) SELECT id, 'x' FROM workplans`)
	_, end = e.write(`SELECT 1`)
	e.waitConfirmed(end, 10*time.Second)
	e.set("state:summary:core")
	e.write(`UPDATE tasks SET notes = 'n'`)
	e.gone("state:summary:core")
}

// Values nobody anticipated, end to end: exact keys, never a pattern that
// matches more than the template can produce.
func TestHostileValues(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, []byte(`{
  "sections": {
    "hostile": { "keys": ["h:{scenario}"] },
    "glob":    { "keys": ["g*[{hazard}]?"] }
  },
  "rules": [ { "name": "hostile", "tables": ["public.climate_runs"], "invalidate": ["hostile", "glob"] } ]
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	e.rules = path
	e.exec(`ALTER PUBLICATION cdcd SET TABLE climate_runs`)
	e.startDaemon()

	values := []string{"with space", "new\nline", "{braces}", "}}", "star*", "q?", "[x]", `back\slash`, "ünïcødé ☃",
		strings.Repeat("x", 1<<20)}
	for _, v := range values {
		e.set("h:"+v, "h:other", "g*[h]?")
		e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, $1, 'h')`, v)
		e.gone("h:"+v, "g*[h]?")
		if !e.exists("h:other") {
			t.Fatalf("value %.20q deleted another key", v)
		}
	}
	// NULL renders as the empty string.
	e.exec(`ALTER TABLE climate_runs ALTER COLUMN scenario DROP NOT NULL`)
	e.set("h:", "h:other")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, NULL, 'h')`)
	e.gone("h:")
	if !e.exists("h:other") {
		t.Fatal("NULL deleted another key")
	}
	// A truncate deletes the template's pattern, its glob characters
	// escaped: "g*[x]?" is deleted, "gX[x]!" (which an unescaped pattern
	// would match) stays.
	e.set("g*[x]?", "gX[x]!", "h:other")
	e.write(`TRUNCATE climate_runs`)
	e.gone("g*[x]?", "h:other")
	if !e.exists("gX[x]!") {
		t.Error("the pattern of a template with glob characters matched a key it cannot produce")
	}
}
