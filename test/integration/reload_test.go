package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rulesV2 is the example rules file with climate runs invalidating a
// different key.
func rulesV2(t *testing.T) []byte {
	t.Helper()
	base, err := os.ReadFile(filepath.Join(repoDir, "rules.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(base), `"keys": ["nodb:{run_id}:climate"]`, `"keys": ["v2:{run_id}:climate"]`, 1)
	if s == string(base) {
		t.Fatal("rules.json no longer has the climate key this test rewrites")
	}
	return []byte(s)
}

func (e *env) privateRules(t *testing.T) string {
	t.Helper()
	base, err := os.ReadFile(filepath.Join(repoDir, "rules.json"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, base, 0o644); err != nil {
		t.Fatal(err)
	}
	e.rules = path
	return path
}

func TestReloadOnSignalAndBrokenFile(t *testing.T) {
	e := newEnv(t)
	path := e.privateRules(t)
	d := e.startDaemon("CDCD_RULES_POLL=1h") // SIGHUP only
	reloads := func(result string) float64 { return d.metric("cdcd_rules_reload_total", "result="+result) }

	if err := os.WriteFile(path, rulesV2(t), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload", func() bool { return reloads("ok") == 1 })
	e.set("nodb:1:climate", "v2:1:climate")
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	e.gone("v2:1:climate")
	e.waitConfirmed(end, 10*time.Second)
	if !e.exists("nodb:1:climate") {
		t.Error("the old rule still applied after the reload")
	}

	// A broken file: rejected, counted, and the rules in use keep working.
	if err := os.WriteFile(path, []byte(`{"sections": {`), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the rejected reload", func() bool { return reloads("error") == 1 })
	if len(d.logEntries("rules reload rejected")) != 1 {
		t.Error("the rejected reload was not logged")
	}
	e.set("v2:2:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (2, 's', 'h')`)
	e.gone("v2:2:climate")
}

func TestReloadWhenTheFileChangesOnDisk(t *testing.T) {
	e := newEnv(t)
	path := e.privateRules(t)
	d := e.startDaemon("CDCD_RULES_POLL=100ms")
	reloads := func() float64 { return d.metric("cdcd_rules_reload_total", "result=ok") }

	// Edited in place.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rulesV2(t)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitFor(t, 10*time.Second, "the in-place edit to be reloaded", func() bool { return reloads() == 1 })
	e.set("v2:1:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	e.gone("v2:1:climate")

	// Renamed into place: back to the original rules.
	base, _ := os.ReadFile(filepath.Join(repoDir, "rules.json"))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, base, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the renamed file to be reloaded", func() bool { return reloads() == 2 })
	e.set("nodb:2:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (2, 's', 'h')`)
	e.gone("nodb:2:climate")
}

// A transaction is evaluated under one rules file: reloading while large
// transactions stream never splits one between the old and the new rules.
func TestReloadNeverSplitsATransaction(t *testing.T) {
	e := newEnv(t)
	path := e.privateRules(t)
	d := e.startDaemon("CDCD_RULES_POLL=1h")
	v1, _ := os.ReadFile(path)
	v2 := rulesV2(t)
	for round := 0; round < 6; round++ {
		var keys []string
		for run := 0; run < 50; run++ {
			keys = append(keys, fmt.Sprintf("nodb:%d:climate", run), fmt.Sprintf("v2:%d:climate", run))
		}
		e.set(keys...)
		next := v2
		if round%2 == 1 {
			next = v1
		}
		if err := os.WriteFile(path, next, 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(time.Duration(round*3) * time.Millisecond)
			_ = d.cmd.Process.Signal(syscall.SIGHUP)
		}()
		_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard)
			SELECT g % 50, 's', 'h' FROM generate_series(1, 20000) g`)
		<-done
		e.waitConfirmed(end, 20*time.Second)
		var oldGone, newGone int
		for run := 0; run < 50; run++ {
			if !e.exists(fmt.Sprintf("nodb:%d:climate", run)) {
				oldGone++
			}
			if !e.exists(fmt.Sprintf("v2:%d:climate", run)) {
				newGone++
			}
		}
		allOld, allNew := oldGone == 50 && newGone == 0, oldGone == 0 && newGone == 50
		if !allOld && !allNew {
			t.Fatalf("round %d: %d keys of one rules file and %d of the other deleted by one transaction", round, oldGone, newGone)
		}
		waitFor(t, 10*time.Second, "the reload", func() bool {
			return d.metric("cdcd_rules_reload_total", "result=ok") == float64(round+1)
		})
	}
}

func TestReloadAddsNewTableToManagedPublication(t *testing.T) {
	e := newEnv(t)
	e.exec(`DROP PUBLICATION cdcd`) // cdcd creates and manages its own
	e.exec(`CREATE TABLE scenarios (id int PRIMARY KEY, name text)`)
	path := e.privateRules(t)
	d := e.startDaemon("CDCD_RULES_POLL=1h")
	base, _ := os.ReadFile(path)
	withScenarios := strings.Replace(string(base), `{ "name": "climate-run",`,
		`{ "name": "scenario", "tables": ["public.scenarios"], "invalidate": ["run.climate"] },
    { "name": "climate-run",`, 1)
	if err := os.WriteFile(path, []byte(withScenarios), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload", func() bool { return d.metric("cdcd_rules_reload_total", "result=ok") == 1 })
	waitFor(t, 10*time.Second, "the table to join the publication", func() bool {
		var n int
		_ = e.db.QueryRow(t.Context(), `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'cdcd' AND tablename = 'scenarios'`).Scan(&n)
		return n == 1
	})
	e.set("nodb:1:climate", "nodb:2:climate")
	e.write(`INSERT INTO scenarios VALUES (1, 'ssp245')`)
	// run.climate's key template needs run_id, which scenarios lacks: the
	// section's pattern goes.
	e.gone("nodb:1:climate", "nodb:2:climate")
}

func TestExplainPeekLeavesTheSlotWhereItWas(t *testing.T) {
	e := newEnv(t)
	e.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, e.slot)
	before := e.confirmed()
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (4, 's', 'h')`)
	e.write(`UPDATE climate_runs SET run_id = 5 WHERE run_id = 4`)
	e.write(`INSERT INTO impact_functions (name, hazard, intensity_unit, mdd_x, mdd_y, paa_x, paa_y) VALUES ('f', 'h', 'm', '{1}', '{1}', '{1}', '{1}')`)
	e.write(`UPDATE impact_functions SET mdd_y = '{2}'`)

	code, out := runBinary(t, 30*time.Second, []string{"CDCD_DATABASE_URL=" + e.dbURL},
		"rules", "explain", e.rules, "--peek", "--slot", e.slot)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{
		"UNLINK nodb:4:climate", "UNLINK nodb:5:climate", "VIOLATION of impact-function-version-bump",
		"changed mdd_y: {1} -> {2}",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "transaction "); n != 4 {
		t.Errorf("%d transactions explained, want 4:\n%s", n, out)
	}
	if after := e.confirmed(); after != before {
		t.Errorf("peeking moved the slot from %s to %s", before, after)
	}
	// A second peek sees the same transactions.
	_, again := runBinary(t, 30*time.Second, []string{"CDCD_DATABASE_URL=" + e.dbURL},
		"rules", "explain", e.rules, "--peek", "--slot", e.slot, "--limit", "1")
	if strings.Count(again, "transaction ") != 1 || !strings.Contains(again, "nodb:4:climate") {
		t.Errorf("second peek with --limit 1:\n%s", again)
	}
}

func TestRulesCheckAgainstTheLiveCatalog(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE impact_functions REPLICA IDENTITY DEFAULT`)
	e.exec(`ALTER PUBLICATION cdcd DROP TABLE progress_events`)
	base, err := os.ReadFile(filepath.Join(repoDir, "rules.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(base), `"tables": ["public.climate_runs"]`, `"tables": ["public.climate_runs", "public.no_such_table"]`, 1)
	s = strings.Replace(s, `"columns": ["title", "status"]`, `"columns": ["title", "state"]`, 1)
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runBinary(t, 30*time.Second, []string{"CDCD_DATABASE_URL=" + e.dbURL}, "rules", "check", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"error: table public.no_such_table does not exist",
		`error: rule "task-title" columns: table public.tasks has no column "state"`,
		"error: table public.progress_events is not in publication cdcd",
		`error: invariant "impact-function-version-bump" cannot be checked: table public.impact_functions has REPLICA IDENTITY DEFAULT`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, path+":") {
			t.Errorf("line without FILE:LINE:COL: %q", line)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}

	// The example file on the reference schema: clean, also with --strict.
	ok := newEnv(t)
	code, out = runBinary(t, 30*time.Second, []string{"CDCD_DATABASE_URL=" + ok.dbURL}, "rules", "check", "--strict", ok.rules)
	if code != 0 {
		t.Errorf("the example rules fail the strict live check:\n%s", out)
	}
}
