package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readingsSchema is a partitioned table with two partitions, every one of
// them with REPLICA IDENTITY FULL (which does not cascade).
const readingsSchema = `
CREATE TABLE readings (id bigint NOT NULL, site text NOT NULL, value int, PRIMARY KEY (id, site)) PARTITION BY LIST (site);
CREATE TABLE readings_eu PARTITION OF readings FOR VALUES IN ('eu');
CREATE TABLE readings_us PARTITION OF readings FOR VALUES IN ('us');
ALTER TABLE readings REPLICA IDENTITY FULL;
ALTER TABLE readings_eu REPLICA IDENTITY FULL;
ALTER TABLE readings_us REPLICA IDENTITY FULL;`

// partitionRules has a rule on the partitioned table and one on a
// partition.
const partitionRules = `{
  "sections": {
    "site": { "keys": ["site:{site}"], "revision": "site:{site}:rev" },
    "all":  { "keys": ["readings:all"], "revision": "readings:all:rev" },
    "eu":   { "keys": ["eu:{id}"], "revision": "eu:{id}:rev" }
  },
  "rules": [
    { "name": "readings", "tables": ["public.readings"], "invalidate": ["site", "all"] },
    { "name": "eu-only", "tables": ["public.readings_eu"], "invalidate": ["eu"] }
  ]
}`

// partitioned gives e the partitioned schema and private rules naming it.
func (e *env) partitioned(t *testing.T) {
	t.Helper()
	e.exec(readingsSchema)
	e.rules = filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(e.rules, []byte(partitionRules), 0o644); err != nil {
		t.Fatal(err)
	}
}

// awaitGone waits up to 10 s for keys to be deleted: after a start, the
// stream first replays what was not confirmed.
func (e *env) awaitGone(keys ...string) {
	e.t.Helper()
	for _, k := range keys {
		waitFor(e.t, 10*time.Second, "key "+k+" to be deleted", func() bool { return !e.exists(k) })
	}
}

// everyPartitionChange makes each kind of change through the partitioned
// table and straight into a partition, and a partition while cdcd
// streams, and checks that each invalidates the rule on the partitioned
// table (and the one on readings_eu).
func (e *env) everyPartitionChange() {
	e.t.Helper()
	e.set("site:eu", "site:us", "eu:1", "readings:all")
	e.write(`INSERT INTO readings VALUES (1, 'eu', 1)`)
	e.gone("site:eu", "eu:1", "readings:all")
	e.write(`INSERT INTO readings_us VALUES (2, 'us', 1)`)
	e.gone("site:us")

	// A row moved between partitions: a DELETE from one and an INSERT
	// into the other.
	e.set("site:eu", "site:us", "eu:1")
	e.write(`UPDATE readings SET site = 'us' WHERE id = 1`)
	e.gone("site:eu", "site:us", "eu:1")
	e.set("site:us")
	e.write(`DELETE FROM readings WHERE id = 2`)
	e.gone("site:us")
	e.set("site:eu", "site:x", "readings:all")
	e.write(`TRUNCATE readings`)
	e.gone("site:eu", "site:x", "readings:all")

	e.exec(`CREATE TABLE readings_asia PARTITION OF readings FOR VALUES IN ('asia')`)
	e.set("site:asia")
	e.write(`INSERT INTO readings_asia VALUES (3, 'asia', 1)`)
	e.gone("site:asia")
}

// restart stops d cleanly, runs meanwhile (if set) while it is down, and
// starts cdcd again, ready.
func (e *env) restart(d *daemon, meanwhile func(), extra ...string) *daemon {
	e.t.Helper()
	if code, _ := d.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		e.t.Fatalf("exit %d", code)
	}
	if meanwhile != nil {
		meanwhile()
	}
	return e.startDaemon(extra...)
}

// The publication cdcd creates for a rule on a partitioned table: every
// kind of change, through the parent or straight into a partition,
// partitions created, attached and detached while cdcd streams or while it
// is down, and a restart that finds the publication as it left it.
func TestPartitionedTableWithCdcdsPublication(t *testing.T) {
	e := newEnv(t)
	e.partitioned(t)
	d := e.startDaemon("CDCD_PUBLICATION=cdcd_parts")
	e.everyPartitionChange()

	e.set("site:eu", "site:us", "site:x", "readings:all")
	e.write(`TRUNCATE readings_us`)
	e.gone("site:eu", "site:us", "site:x", "readings:all")

	e.exec(`CREATE TABLE readings_af (LIKE readings)`)
	e.exec(`ALTER TABLE readings ATTACH PARTITION readings_af FOR VALUES IN ('af')`)
	e.set("site:af")
	e.write(`INSERT INTO readings VALUES (4, 'af', 1)`)
	e.gone("site:af")

	// Detached: what the partition got before is the rule's, what it gets
	// after is not (the publication no longer holds it).
	e.set("site:asia")
	e.write(`INSERT INTO readings_asia VALUES (5, 'asia', 1); ALTER TABLE readings DETACH PARTITION readings_asia`)
	e.gone("site:asia")
	e.set("site:asia")
	_, end := e.write(`INSERT INTO readings_asia VALUES (6, 'asia', 1)`)
	e.waitConfirmed(end, 10*time.Second)
	if !e.exists("site:asia") {
		t.Error("a change to a detached partition was matched to the partitioned table's rule")
	}

	// Down: a change to a partition that is detached before cdcd is back.
	// The catalog no longer knows it as a partition: in doubt, it is
	// matched to the partitioned table.
	d = e.restart(d, func() {
		e.write(`INSERT INTO readings VALUES (7, 'af', 1)`)
		e.exec(`ALTER TABLE readings DETACH PARTITION readings_af`)
		e.set("site:af")
	}, "CDCD_PUBLICATION=cdcd_parts")
	e.awaitGone("site:af")
	if len(d.logEntries("created or extended publication")) != 0 {
		t.Error("the restart altered a publication that already covered the partitioned table")
	}
	if len(d.logEntries("no longer shows this relation")) == 0 {
		t.Error("the detached partition's change was not reported as in doubt")
	}
}

// A DBA's publication of the partitioned table, without and with
// publish_via_partition_root, and a rule that names a partition.
func TestPartitionedTableWithDBAPublication(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   string
		viaRoot bool
	}{
		{"partitions under their own names", `ALTER PUBLICATION cdcd ADD TABLE readings`, false},
		{"publish_via_partition_root", `CREATE PUBLICATION cdcd_root FOR TABLE readings WITH (publish_via_partition_root = true)`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.partitioned(t)
			e.exec(tc.setup)
			var extra []string
			if tc.viaRoot {
				extra = append(extra, "CDCD_PUBLICATION=cdcd_root")
			}
			d := e.startDaemon(extra...)
			e.everyPartitionChange()

			// A change to another partition: under the partitions' own
			// names it is not the partition rule's; under the root's name
			// it cannot be told apart, and is matched.
			e.set("eu:7")
			_, end := e.write(`INSERT INTO readings_us VALUES (7, 'us', 1)`)
			if tc.viaRoot {
				e.gone("eu:7")
			} else {
				e.waitConfirmed(end, 10*time.Second)
				if !e.exists("eu:7") {
					t.Error("a change to readings_us matched the rule on readings_eu")
				}
				// The server publishes a TRUNCATE of one partition only
				// under the partitions' own names.
				e.set("site:x")
				e.write(`TRUNCATE readings_us`)
				e.gone("site:x")
			}

			e.restart(d, nil, extra...)
			e.set("site:eu")
			e.write(`INSERT INTO readings_eu VALUES (8, 'eu', 1)`)
			e.gone("site:eu")
		})
	}
}

// rules check says what it found of partitioned rule tables, and reports
// the publications that hide their changes.
func TestRulesCheckReportsPartitions(t *testing.T) {
	e := newEnv(t)
	e.partitioned(t)
	e.exec(`ALTER PUBLICATION cdcd ADD TABLE readings`)
	e.exec(`CREATE PUBLICATION cdcd_root FOR TABLE readings WITH (publish_via_partition_root = true)`)
	e.exec(`CREATE PUBLICATION cdcd_some FOR TABLE readings_eu`)
	check := func(pub string, strict bool) (int, string) {
		args := []string{"rules", "check", e.rules}
		if strict {
			args = append(args, "--strict")
		}
		return runBinary(t, 30*time.Second, []string{"CDCD_DATABASE_URL=" + e.dbURL, "CDCD_PUBLICATION=" + pub}, args...)
	}
	for _, tc := range []struct {
		pub    string
		code   int
		want   []string
		absent []string
	}{
		{"cdcd", 0, []string{
			"note: table public.readings is partitioned into 2 partitions (public.readings_eu, public.readings_us)",
			"publication cdcd publishes each partition's changes under the partition's name",
			"note: table public.readings_eu is a partition of public.readings",
		}, []string{"error:", "warning:"}},
		{"cdcd_root", 1, []string{
			"publishes their changes under the root's name (publish_via_partition_root)",
			"error: publication cdcd_root publishes partitions of public.readings under their root's name (publish_via_partition_root): the server does not publish a TRUNCATE of one partition alone",
			"warning: table public.readings_eu is a partition of public.readings, and publication cdcd_root publishes its changes under the name of public.readings",
			"error: publication cdcd_root publishes public.readings_eu under the name of public.readings",
		}, nil},
		{"cdcd_some", 1, []string{
			"error: publication cdcd_some holds only some partitions of public.readings: changes to public.readings_us are not streamed",
		}, []string{"is not in publication"}},
	} {
		code, out := check(tc.pub, true)
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d", tc.pub, code, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q", tc.pub, w)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(out, a) {
				t.Errorf("%s: output has %q", tc.pub, a)
			}
		}
		if t.Failed() {
			t.Logf("%s:\n%s", tc.pub, out)
		}
	}

	// A partition created later gets REPLICA IDENTITY DEFAULT: said.
	e.exec(`CREATE TABLE readings_asia PARTITION OF readings FOR VALUES IN ('asia')`)
	code, out := check("cdcd", false)
	if code != 0 || !strings.Contains(out, "warning: table public.readings has REPLICA IDENTITY FULL but its partitions public.readings_asia (DEFAULT) do not") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// A partitioned table without partitions in cdcd's publication: the
// publication lists no table for it, yet holds it. A restart must not try
// to add it again (the server refuses with "already member", forever).
func TestRestartWithAnEmptyPartitionedTable(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)`)
	e.rules = filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(e.rules, []byte(`{
  "sections": { "event": { "keys": ["event:{id}"] } },
  "rules": [ { "name": "events", "tables": ["public.events"], "invalidate": ["event"] } ]
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.startDaemon("CDCD_PUBLICATION=cdcd_parts")
	d = e.restart(d, nil, "CDCD_PUBLICATION=cdcd_parts")
	if n := len(d.logEntries("replication session failed")); n != 0 {
		t.Errorf("%d failed sessions after the restart", n)
	}

	e.exec(`CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`)
	e.set("event:1")
	e.write(`INSERT INTO events VALUES (1, '2024-05-01')`)
	e.gone("event:1")
}
