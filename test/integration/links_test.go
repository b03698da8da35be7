package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// viaProxy points the env's daemon URL at a proxy in front of server addr;
// the test's own connections stay direct.
func (e *env) viaProxy(t *testing.T, addr string) (*testenv.Proxy, string) {
	t.Helper()
	p := testenv.MustProxy(t, addr)
	return p, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, dbNameOf(e.dbURL))
}

func (e *env) startDaemonAt(dbURL string, extra ...string) *daemon {
	e.t.Helper()
	saved := e.dbURL
	e.dbURL = dbURL
	defer func() { e.dbURL = saved }()
	return e.startDaemon(extra...)
}

// waitUnready waits for /readyz to fail with a reason containing want.
func (d *daemon) waitUnready(timeout time.Duration, want string) {
	d.t.Helper()
	var body string
	waitFor(d.t, timeout, "/readyz to report "+want, func() bool {
		code, b, err := d.get("/readyz")
		body = b
		return err == nil && code == 503 && strings.Contains(b, want)
	})
	d.t.Logf("/readyz: %s", strings.TrimSpace(body))
}

// A blackholed route to Postgres sends no FIN and no RST: cdcd notices the
// silence, reports unready, and reconnects once the route is back.
func TestReplicationLinkGoesSilent(t *testing.T) {
	e := newEnv(t)
	proxy, url := e.viaProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port))
	d := e.startDaemonAt(url, "CDCD_REPLICATION_SILENCE_TIMEOUT=3s")
	e.set("nodb:1:climate")

	proxy.Blackhole()
	d.waitUnready(15*time.Second, "silent")
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	proxy.Restore()
	// Well before the server's wal_sender_timeout (60s) ends the dropped
	// session on its own.
	d.waitReady(20 * time.Second)
	e.gone("nodb:1:climate")
	e.waitConfirmed(end, 20*time.Second)
}

// A silent link to Redis: commands time out and are retried on new
// connections, nothing is confirmed meanwhile, and /readyz says why.
func TestRedisLinkGoesSilent(t *testing.T) {
	e := newEnv(t)
	proxy := testenv.MustProxy(t, rds.Addr)
	d := e.startDaemon(fmt.Sprintf("CDCD_REDIS_URL=redis://127.0.0.1:%d/0", proxy.Port))
	e.set("nodb:1:climate")

	proxy.Blackhole()
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	d.waitUnready(10*time.Second, "redis")
	time.Sleep(4 * time.Second) // past the Redis client's timeouts
	if c := e.confirmed(); c >= end {
		t.Fatalf("confirmed %s, past the commit %s whose key was not deleted", c, end)
	}
	if !e.exists("nodb:1:climate") {
		t.Fatal("key deleted through a blackholed link")
	}
	proxy.Restore()
	// The sink retries with backoff (at most 5s apart).
	waitFor(t, 15*time.Second, "the key to be deleted once the link is back", func() bool { return !e.exists("nodb:1:climate") })
	e.waitConfirmed(end, 20*time.Second)
	d.waitReady(10 * time.Second)
}

// secondServer is another PostgreSQL cluster (another system identifier)
// holding a database of the same name and schema as the env's: the
// database behind the URL after a blue/green switch or a restore.
type secondServer struct {
	pg  *testenv.Postgres
	url string
}

var (
	secondOnce sync.Once
	second     *testenv.Postgres
	secondErr  error
)

func startSecondServer(t *testing.T, e *env) *secondServer {
	t.Helper()
	secondOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		second, secondErr = testenv.StartPrivatePostgres(ctx)
		if secondErr == nil {
			stopAtExit = append(stopAtExit, func() { _ = second.Stop() })
		}
	})
	if secondErr != nil {
		t.Fatalf("second postgres: %v", secondErr)
	}
	ctx := context.Background()
	url, err := second.CreateDatabase(ctx, dbNameOf(e.dbURL))
	if err != nil {
		t.Fatalf("create database on the second server: %v", err)
	}
	if err := testenv.ApplyMigrations(ctx, url, repoDir+"/migrations"); err != nil {
		t.Fatalf("migrations on the second server: %v", err)
	}
	return &secondServer{pg: second, url: url}
}

func (s *secondServer) query(t *testing.T, sql string, args ...any) string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func (s *secondServer) lsn(t *testing.T, sql string, args ...any) pglogrepl.LSN {
	t.Helper()
	l, err := pglogrepl.ParseLSN(s.query(t, sql, args...))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The database behind the URL becomes another server whose WAL is far
// behind the first one's. cdcd must not confirm the first server's
// position to it (the server would resume there and skip everything
// before), must treat the switch as a gap, and revisions must keep moving.
func TestDatabaseSwitchedBehindURL(t *testing.T) {
	e := newEnv(t)
	two := startSecondServer(t, e)
	proxy, url := e.viaProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port))
	d := e.startDaemonAt(url)

	// Push the first server's WAL well past the second's.
	e.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT 100000 + g, repeat('s', 200), 'h' FROM generate_series(1, 50000) g`)
	_, end := e.write(`INSERT INTO topics (title) VALUES ('before the switch')`)
	e.waitConfirmed(end, 30*time.Second)
	revBefore := e.get("state:summary:rev:core")
	if revBefore == "" {
		t.Fatal("no revision set before the switch")
	}
	if wal2 := two.lsn(t, `SELECT pg_current_wal_insert_lsn()::text`); wal2 >= end {
		t.Fatalf("the second server's WAL (%s) is not behind the first's (%s): the test proves nothing", wal2, end)
	}

	e.set(append(sectionKeys, "unrelated")...)
	proxy.Switch(fmt.Sprintf("127.0.0.1:%d", two.pg.Port))
	waitFor(t, 30*time.Second, "the switch to be counted as a gap", func() bool {
		return d.metric("cdcd_gap_invalidations_total", "reason=system_identifier_changed") == 1
	})
	for _, k := range sectionKeys {
		waitFor(t, 5*time.Second, k+" to be invalidated", func() bool { return !e.exists(k) })
	}
	if !e.exists("unrelated") {
		t.Error("a key outside every section was deleted")
	}
	d.waitReady(20 * time.Second)

	// Writes on the new server are invalidated, and its slot is only ever
	// confirmed at positions it sent.
	e.set("nodb:7:climate")
	conn, err := pgx.Connect(context.Background(), two.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `INSERT INTO topics (title) VALUES ('after the switch'); INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (7, 's', 'h')`); err != nil {
		t.Fatal(err)
	}
	wal := two.lsn(t, `SELECT pg_current_wal_insert_lsn()::text`)
	waitFor(t, 20*time.Second, "the second server's change to be invalidated", func() bool { return !e.exists("nodb:7:climate") })
	waitFor(t, 20*time.Second, "the second server's slot to be confirmed", func() bool {
		c := two.lsn(t, `SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1`, e.slot)
		if cur := two.lsn(t, `SELECT pg_current_wal_insert_lsn()::text`); c > cur {
			t.Fatalf("slot confirmed at %s, past the server's WAL %s", c, cur)
		}
		return c >= wal
	})
	revAfter := e.get("state:summary:rev:core")
	if revAfter == "" || revAfter == revBefore {
		t.Fatalf("revision %q after a write on the new server, %q before the switch: it no longer moves", revAfter, revBefore)
	}
	if l, err := pglogrepl.ParseLSN(revAfter); err != nil || l > wal {
		t.Fatalf("revision %q is not a position of the new server (WAL at %s)", revAfter, wal)
	}
}
