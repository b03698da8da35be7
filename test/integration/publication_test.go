package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withRule writes the example rules file plus one rule to a private path,
// makes it e's rules file and returns its path.
func (e *env) withRule(t *testing.T, rule string) string {
	t.Helper()
	base, err := os.ReadFile(filepath.Join(repoDir, "rules.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(base), `{ "name": "climate-run",`, rule+",\n    "+`{ "name": "climate-run",`, 1)
	if s == string(base) {
		t.Fatal("rules.json no longer has the climate-run rule this test writes before")
	}
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	e.rules = path
	return path
}

const nopkRule = `{ "name": "nopk", "tables": ["public.nopk"], "invalidate": ["run.climate"] }`

// rulesCheck runs `cdcd rules check` on e's rules file against e's database.
func (e *env) rulesCheck(t *testing.T) (int, string) {
	t.Helper()
	return runBinary(t, 30*time.Second, []string{"CDCD_DATABASE_URL=" + e.dbURL}, "rules", "check", e.rules)
}

// slotExists reports whether the daemon created e's slot.
func (e *env) slotExists() bool {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(e.t.Context(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n > 0
}

func (e *env) published(table string) bool {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(e.t.Context(), `SELECT count(*) FROM pg_publication_tables WHERE tablename = $1`, table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n > 0
}

// expectRefused checks that rules check fails with lines containing every
// one of want, and that the daemon refuses to start (exit 2) naming them,
// without creating its slot.
func expectRefused(t *testing.T, e *env, want ...string) {
	t.Helper()
	code, out := e.rulesCheck(t)
	expectExit(t, "rules check", 1, code, out, want)
	code, out = runBinaryEnv(t, e, 30*time.Second)
	out = strings.ReplaceAll(out, `\"`, `"`) // the text log quotes values
	expectExit(t, "the daemon", 2, code, out, want)
	if e.slotExists() {
		t.Error("the daemon created its slot although it refused to stream")
	}
}

func expectExit(t *testing.T, what string, wantCode, code int, out string, want []string) {
	t.Helper()
	ok := code == wantCode
	for _, w := range want {
		ok = ok && strings.Contains(out, w)
	}
	if !ok {
		t.Errorf("%s: exit %d, want %d and every one of\n  %s\noutput:\n%s", what, code, wantCode, strings.Join(want, "\n  "), out)
	}
}

// A DBA's publication that hides changes a rule needs: rules check fails
// naming the publication, the table and the option; the daemon refuses to
// start with the same words.
func TestPublicationOptionsThatHideChanges(t *testing.T) {
	cases := []struct {
		name  string
		setup []string
		want  []string
	}{
		{"publish without truncate", []string{`ALTER PUBLICATION cdcd SET (publish = 'insert, update, delete')`}, []string{
			`error: rule "summary-core": publication cdcd does not publish truncate (publish = 'insert, update, delete'), so no truncate of public.topics reaches cdcd`,
			`ALTER PUBLICATION "cdcd" SET (publish = 'insert, update, delete, truncate')`,
		}},
		{"row filter", []string{
			`ALTER PUBLICATION cdcd DROP TABLE climate_runs`,
			`ALTER PUBLICATION cdcd ADD TABLE climate_runs WHERE (run_id > 10)`,
		}, []string{
			`error: publication cdcd has a row filter on public.climate_runs (WHERE (run_id > 10))`,
			`ALTER PUBLICATION "cdcd" DROP TABLE public.climate_runs; ALTER PUBLICATION "cdcd" ADD TABLE public.climate_runs; COMMIT`,
		}},
		{"column list hiding a rule column", []string{
			`ALTER TABLE climate_runs REPLICA IDENTITY DEFAULT`,
			`ALTER PUBLICATION cdcd DROP TABLE climate_runs`,
			`ALTER PUBLICATION cdcd ADD TABLE climate_runs (id, scenario, hazard)`,
		}, []string{
			`error: publication cdcd publishes only columns id, scenario, hazard of public.climate_runs: it hides run_id (rule "climate-run")`,
			`ADD TABLE public.climate_runs ("id", "run_id", "scenario", "hazard"); COMMIT`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			for _, sql := range c.setup {
				e.exec(sql)
			}
			expectRefused(t, e, c.want...)
		})
	}
}

// A column list is fine as long as it leaves out only columns nothing
// needs.
func TestColumnListOfUnneededColumnsIsAccepted(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE climate_runs REPLICA IDENTITY DEFAULT`)
	e.exec(`ALTER PUBLICATION cdcd DROP TABLE climate_runs`)
	e.exec(`ALTER PUBLICATION cdcd ADD TABLE climate_runs (id, run_id)`)
	if code, out := e.rulesCheck(t); code != 0 || strings.Contains(out, "error:") {
		t.Errorf("rules check: exit %d:\n%s", code, out)
	}
	e.set("nodb:1:climate")
	d := e.startDaemon()
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	e.gone("nodb:1:climate")
	d.stop(syscall.SIGTERM, 10*time.Second)
}

// A rule on a table without a usable replica identity: cdcd never adds it
// to a publication that publishes updates or deletes, since the
// application's UPDATE and DELETE on it would fail from then on.
func TestTableWithoutReplicaIdentityIsNeverPublished(t *testing.T) {
	e := newEnv(t)
	e.exec(`DROP PUBLICATION cdcd`) // cdcd creates and manages its own
	e.exec(`CREATE TABLE nopk (run_id int, v text)`)
	e.exec(`INSERT INTO nopk VALUES (1, 'a')`)
	fix := "Fix: ALTER TABLE public.nopk REPLICA IDENTITY FULL, or add a primary key"
	appWrites := func() {
		t.Helper()
		e.exec(`UPDATE nopk SET v = 'b'`)
		e.exec(`DELETE FROM nopk WHERE v = 'nothing'`)
	}

	// No publication yet: cdcd would create it with the table.
	e.withRule(t, nopkRule)
	expectRefused(t, e, "table public.nopk has no usable replica identity (REPLICA IDENTITY DEFAULT and no primary key)", fix)
	var pubs int
	_ = e.db.QueryRow(t.Context(), `SELECT count(*) FROM pg_publication WHERE pubname = 'cdcd'`).Scan(&pubs)
	if pubs != 0 {
		t.Error("cdcd created its publication although one of the tables would break the application's writes")
	}
	appWrites()

	// cdcd's own publication exists: it would add the table to it.
	e.rules = filepath.Join(repoDir, "rules.json")
	d := e.startDaemon()
	d.stop(syscall.SIGTERM, 10*time.Second)
	_, _ = e.db.Exec(t.Context(), `SELECT pg_drop_replication_slot($1)`, e.slot)
	e.withRule(t, nopkRule)
	expectRefused(t, e, "adding it to publication cdcd, which publishes updates and deletes, would make every UPDATE and DELETE the application runs on it fail", fix)
	if e.published("nopk") {
		t.Error("cdcd added the table to its publication")
	}
	appWrites()
}

// A DBA's publication that already holds a table without a usable replica
// identity, or one whose identity index was dropped, is reported the same
// way.
func TestReplicaIdentityProblemsInADBAsPublication(t *testing.T) {
	cases := []struct {
		name  string
		setup []string
		want  string
	}{
		{"identity index dropped", []string{
			`CREATE TABLE nopk (run_id int NOT NULL, v text)`,
			`CREATE UNIQUE INDEX nopk_run_id ON nopk (run_id)`,
			`ALTER TABLE nopk REPLICA IDENTITY USING INDEX nopk_run_id`,
			`DROP INDEX nopk_run_id`,
			`ALTER PUBLICATION cdcd ADD TABLE nopk`,
		}, "table public.nopk has no usable replica identity (REPLICA IDENTITY USING INDEX, whose index was dropped): it is in publication cdcd, which publishes updates and deletes, so every UPDATE and DELETE the application runs on it fails"},
		{"identity nothing, deletes published", []string{
			`CREATE TABLE nopk (run_id int PRIMARY KEY, v text)`,
			`ALTER TABLE nopk REPLICA IDENTITY NOTHING`,
			`ALTER PUBLICATION cdcd SET (publish = 'insert, delete, truncate')`,
			`ALTER PUBLICATION cdcd ADD TABLE nopk`,
		}, "table public.nopk has no usable replica identity (REPLICA IDENTITY NOTHING): it is in publication cdcd, which publishes deletes, so every DELETE the application runs on it fails"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			for _, sql := range c.setup {
				e.exec(sql)
			}
			e.withRule(t, nopkRule)
			code, out := e.rulesCheck(t)
			if code != 1 || !strings.Contains(out, "error: "+c.want) {
				t.Errorf("rules check: exit %d, want 1 and %q:\n%s", code, c.want, out)
			}
		})
	}

	// Inserts and truncates only: the writes do not fail, and a rule that
	// needs only those is fine.
	e := newEnv(t)
	e.exec(`CREATE TABLE nopk (run_id int, v text)`)
	e.exec(`ALTER PUBLICATION cdcd SET (publish = 'insert, truncate')`)
	e.exec(`ALTER PUBLICATION cdcd ADD TABLE nopk`)
	e.exec(`UPDATE nopk SET v = 'b'`)
	only := `{"sections": {"s": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["public.nopk"], "operations": ["insert", "truncate"], "invalidate": ["s"]}]}`
	e.rules = filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(e.rules, []byte(only), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := e.rulesCheck(t); code != 0 {
		t.Errorf("rules check of an insert-only rule on an insert-only publication: exit %d:\n%s", code, out)
	}
}

// A reload that would add a table without a usable replica identity is
// rejected: the old rules stay, the table stays out of the publication and
// the application's writes keep working.
func TestReloadAddingTableWithoutReplicaIdentityIsRejected(t *testing.T) {
	e := newEnv(t)
	e.exec(`DROP PUBLICATION cdcd`) // cdcd creates and manages its own
	e.exec(`CREATE TABLE nopk (run_id int, v text)`)
	e.exec(`INSERT INTO nopk VALUES (1, 'a')`)
	path := e.privateRules(t)
	d := e.startDaemon("CDCD_RULES_POLL=1h")

	withNopk := e.withRule(t, nopkRule)
	data, _ := os.ReadFile(withNopk)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 15*time.Second, "the rejected reload", func() bool {
		return d.metric("cdcd_rules_reload_total", "result=error") == 1
	})
	if n := d.metric("cdcd_rules_reload_total", "result=ok"); n != 0 {
		t.Errorf("%v reloads taken", n)
	}
	rejected := d.logEntries("rules reload rejected")
	if len(rejected) != 1 || !strings.Contains(rejected[0]["err"].(string), "table public.nopk has no usable replica identity") {
		t.Errorf("the rejection does not name the table: %v", rejected)
	}
	if e.published("nopk") {
		t.Error("the table was added to the publication")
	}
	e.exec(`UPDATE nopk SET v = 'b'`)
	e.exec(`DELETE FROM nopk WHERE v = 'b'`)

	// The old rules keep working.
	e.set("nodb:1:climate")
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	e.gone("nodb:1:climate")
}
