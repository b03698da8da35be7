package integration

import (
	"context"
	"testing"
	"time"

	"github.com/cdcd/cdcd/readthrough"
)

// readDB returns the text of one value from the database.
func (e *env) readDB(ctx context.Context, sql string) string {
	e.t.Helper()
	var s string
	if err := e.db.QueryRow(ctx, sql).Scan(&s); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// The stale-set race, forced with real cdcd: the reader reads the database,
// a write commits and cdcd invalidates, then the reader fills. A plain
// GET/SET reader stores the old value for good; a guarded one does not.
func TestReadThroughForcedRace(t *testing.T) {
	e := newEnv(t)
	e.startDaemon()
	insertImpactFunction(e, 3)
	ctx := t.Context()

	cases := []struct {
		name, key, read, write string
	}{
		// An exact invalidation: a literal key and its literal revision.
		{"exact", "state:summary:core", `SELECT count(*)::text FROM topics`, `INSERT INTO topics (title) VALUES ('t')`},
		// A pattern invalidation: a truncate names no rows, so cdcd moves
		// the revisions it finds and scans the keys away.
		{"pattern", "impact:1:v1", `SELECT coalesce(max(version)::text, 'none') FROM impact_functions WHERE id = 1`, `TRUNCATE impact_functions RESTART IDENTITY`},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/plain fill stores the old value", func(t *testing.T) {
			old := e.readDB(ctx, tc.read)
			_, end := e.write(tc.write)
			e.waitConfirmed(end, 10*time.Second)
			if err := e.rdb.Set(ctx, tc.key, old, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if now := e.readDB(ctx, tc.read); e.get(tc.key) != old || now == old {
				t.Fatalf("the control did not race: cached %q, database %q", e.get(tc.key), now)
			}
			e.rdb.Del(ctx, tc.key)
		})
	}
	if t.Failed() {
		return
	}
	insertImpactFunction(e, 3) // id 1 again
	c, err := readthrough.New(e.rdb, e.rules)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name+"/guarded fill refuses it", func(t *testing.T) {
			var old string
			v, err := c.Get(ctx, tc.key, func(ctx context.Context) ([]byte, error) {
				old = e.readDB(ctx, tc.read)
				_, end := e.write(tc.write)
				e.waitConfirmed(end, 10*time.Second)
				return []byte(old), nil
			})
			if err != nil || string(v) != old {
				t.Fatalf("Get = %q, %v; want %q", v, err, old)
			}
			if e.exists(tc.key) {
				t.Fatalf("the value read before the write, %q, was stored (the database now says %q)", e.get(tc.key), e.readDB(ctx, tc.read))
			}
			// The next miss reads the new value and keeps it.
			now := e.readDB(ctx, tc.read)
			if v, err := c.Get(ctx, tc.key, func(ctx context.Context) ([]byte, error) { return []byte(e.readDB(ctx, tc.read)), nil }); err != nil || string(v) != now {
				t.Fatalf("Get after = %q, %v; want %q", v, err, now)
			}
			if got := e.get(tc.key); got != now {
				t.Fatalf("cached %q, want %q", got, now)
			}
		})
	}
	// A fill that lands before cdcd's delete is deleted with the key.
	t.Run("fill before the invalidation", func(t *testing.T) {
		e.rdb.Del(ctx, "state:summary:core")
		if _, err := c.Get(ctx, "state:summary:core", func(ctx context.Context) ([]byte, error) {
			return []byte(e.readDB(ctx, `SELECT count(*)::text FROM topics`)), nil
		}); err != nil {
			t.Fatal(err)
		}
		if !e.exists("state:summary:core") {
			t.Fatal("nothing was stored")
		}
		e.write(`INSERT INTO topics (title) VALUES ('u')`)
		e.gone("state:summary:core")
	})
}
