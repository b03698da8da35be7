package testenv

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func queryString(t *testing.T, ctx context.Context, url, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Setenv(envDatabaseURL, "") // always a private server here
	p := MustPostgres(t)

	if got := queryString(t, ctx, p.URL, "SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level = %q, want logical", got)
	}
	if !strings.HasPrefix(p.URL, "postgres://postgres@127.0.0.1:") || p.Port == 0 || p.Host != "127.0.0.1" {
		t.Fatalf("URL %q, Host %q, Port %d", p.URL, p.Host, p.Port)
	}

	dbURL, err := p.CreateDatabase(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if dbURL != p.DatabaseURL("app") {
		t.Fatalf("CreateDatabase URL %q != DatabaseURL %q", dbURL, p.DatabaseURL("app"))
	}
	dir := t.TempDir()
	migrations := map[string]string{
		"001_items.sql": "CREATE TABLE items (id int PRIMARY KEY, name text);\nINSERT INTO items VALUES (1, 'one');",
		"002_more.sql":  "INSERT INTO items VALUES (2, 'two'); ALTER TABLE items REPLICA IDENTITY FULL;",
		"README.md":     "not a migration",
	}
	for name, sql := range migrations {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sql), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := ApplyMigrations(ctx, dbURL, dir); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ctx, dbURL, "SELECT string_agg(name, ',' ORDER BY id) FROM items"); got != "one,two" {
		t.Fatalf("items = %q", got)
	}
	// A failing migration is named in the error.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "001_bad.sql"), []byte("SELECT 1; SELEC 2;"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ApplyMigrations(ctx, dbURL, bad); err == nil || !strings.Contains(err.Error(), "001_bad.sql") {
		t.Fatalf("bad migration: err = %v", err)
	}
	// Recreating drops the old database, even with a session open on it.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := p.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ctx, dbURL, "SELECT count(*)::text FROM pg_tables WHERE tablename = 'items'"); got != "0" {
		t.Fatalf("items survived CreateDatabase: %s", got)
	}
	if err := ApplyMigrations(ctx, dbURL, dir); err != nil {
		t.Fatal(err)
	}

	// Logical replication works: a pgoutput slot can be created.
	if got := queryString(t, ctx, dbURL, "SELECT slot_name::text FROM pg_create_logical_replication_slot('s1', 'pgoutput')"); got != "s1" {
		t.Fatalf("slot = %q", got)
	}

	port := p.Port
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Port != port {
		t.Fatalf("port changed on restart: %d -> %d", port, p.Port)
	}
	if got := queryString(t, ctx, dbURL, "SELECT string_agg(name, ',' ORDER BY id) FROM items"); got != "one,two" {
		t.Fatalf("after restart: items = %q", got)
	}

	// Kill crashes the server, leaving none of its processes running (an
	// orphaned backend would hold its shared memory and make the next start
	// fail); Restart recovers it.
	children := childProcesses(p.cmd.Process.Pid)
	if len(children) == 0 {
		t.Fatal("the postmaster has no children")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, c := range children {
		if st, ok := readProcStat(strconv.Itoa(c)); ok && st.alive() {
			t.Errorf("process %d (%s) of the killed server is still running", c, st.state)
		}
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	if c, err := pgx.Connect(cctx, p.URL); err == nil {
		c.Close(cctx)
		t.Fatal("connected to a killed server")
	}
	ccancel()
	if err := p.Kill(); err == nil {
		t.Fatal("Kill of a dead server succeeded")
	}
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ctx, dbURL, "SELECT count(*)::text FROM pg_replication_slots"); got != "1" {
		t.Fatalf("after crash: %s slots", got)
	}
	if !strings.Contains(p.Log(), "database system was interrupted") {
		t.Errorf("no crash recovery in the log:\n%s", p.Log())
	}

	base := p.base
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(base); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s not removed: %v", base, err)
	}
	if err := p.Restart(ctx); err == nil {
		t.Fatal("Restart after Stop succeeded")
	}
}

func TestExternalPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv(envDatabaseURL, "")
	p := MustPostgres(t)

	t.Setenv(envDatabaseURL, p.URL)
	ext, err := StartPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ext.URL != p.URL || ext.Port != p.Port || ext.Host != p.Host {
		t.Fatalf("external: %+v", ext)
	}
	if got, want := ext.DatabaseURL("x"), p.DatabaseURL("x"); got != want {
		t.Fatalf("DatabaseURL = %q, want %q", got, want)
	}
	for name, err := range map[string]error{"Stop": ext.Stop(), "Restart": ext.Restart(ctx), "Kill": ext.Kill()} {
		if !errors.Is(err, errExternal) {
			t.Errorf("%s on external server: %v", name, err)
		}
	}
	// The private server is untouched.
	if got := queryString(t, ctx, p.URL, "SELECT 'ok'"); got != "ok" {
		t.Fatal(got)
	}

	// A server without wal_level=logical is refused.
	p.mu.Lock()
	p.extraArgs = []string{"-c", "wal_level=replica"}
	p.mu.Unlock()
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := StartPostgres(ctx); err == nil || !strings.Contains(err.Error(), "wal_level=replica") {
		t.Fatalf("replica server: err = %v", err)
	}
}

func TestRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv(envRedisURL, "")
	r := MustRedis(t)
	if !strings.HasPrefix(r.URL, "redis://127.0.0.1:") || r.Addr == "" || r.Port == 0 {
		t.Fatalf("URL %q, Addr %q, Port %d", r.URL, r.Addr, r.Port)
	}

	do := func(want string, args ...string) {
		t.Helper()
		got, err := r.Do(ctx, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if got != want {
			t.Fatalf("%v = %q, want %q", args, got, want)
		}
	}
	do("PONG", "PING")
	do("OK", "SET", "k", "hello\r\nworld")
	do("hello\r\nworld", "GET", "k")
	do("", "GET", "missing")
	do("1", "RPUSH", "l", "a")
	do("2", "RPUSH", "l", "b")
	do("a\nb", "LRANGE", "l", "0", "-1")
	do("save\n", "CONFIG", "GET", "save")
	do("appendonly\nno", "CONFIG", "GET", "appendonly")
	do("notify-keyspace-events\n", "CONFIG", "GET", "notify-keyspace-events")
	if _, err := r.Do(ctx, "NOSUCHCOMMAND"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("error reply: err = %v", err)
	}

	// Restart: same port, empty.
	port := r.Port
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Port != port {
		t.Fatalf("port changed on restart: %d -> %d", port, r.Port)
	}
	do("0", "DBSIZE")

	// Pause: nothing answers; Resume: answers again.
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	start := time.Now()
	_, err := r.Do(pctx, "PING")
	pcancel()
	if err == nil {
		t.Fatal("PING answered while paused")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("paused PING: err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("paused PING took %v", d)
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	do("PONG", "PING")

	// Stop works on a paused server too.
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	dir := r.dir
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s not removed: %v", dir, err)
	}
	if err := r.Pause(); err == nil {
		t.Fatal("Pause after Stop succeeded")
	}
}

// TestRedisReplicaRestartEmpty checks that Restart empties a server even
// after it saved a full sync as a replica, and that Do carries REPLICAOF.
func TestRedisReplicaRestartEmpty(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv(envRedisURL, "")
	primary, replica := MustRedis(t), MustRedis(t)
	if _, err := primary.Do(ctx, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := replica.Do(ctx, "REPLICAOF", "127.0.0.1", strconv.Itoa(primary.Port)); err != nil {
		t.Fatal(err)
	}
	for {
		v, err := replica.Do(ctx, "GET", "k")
		if err != nil {
			t.Fatal(err)
		}
		if v == "v" {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("replica never synced")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := replica.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := replica.Do(ctx, "DBSIZE"); err != nil || n != "0" {
		t.Fatalf("DBSIZE after restart = %q, %v", n, err)
	}
}

func TestExternalRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Setenv(envRedisURL, "")
	r := MustRedis(t)
	t.Setenv(envRedisURL, "redis://"+r.Addr+"/3")
	ext, err := StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ext.Addr != r.Addr || ext.Port != r.Port {
		t.Fatalf("external: %+v", ext)
	}
	if _, err := ext.Do(ctx, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	// Do on the external server works in database 3, as its URL says.
	if v, err := ext.Do(ctx, "DBSIZE"); err != nil || v != "1" {
		t.Fatalf("db 3 DBSIZE = %q, %v", v, err)
	}
	if v, err := r.Do(ctx, "DBSIZE"); err != nil || v != "0" {
		t.Fatalf("db 0 DBSIZE = %q, %v", v, err)
	}
	for name, err := range map[string]error{"Stop": ext.Stop(), "Restart": ext.Restart(ctx), "Pause": ext.Pause(), "Resume": ext.Resume()} {
		if !errors.Is(err, errExternal) {
			t.Errorf("%s on external server: %v", name, err)
		}
	}
	if _, err := r.Do(ctx, "PING"); err != nil {
		t.Fatalf("private server touched: %v", err)
	}

	t.Setenv(envRedisURL, "redis://127.0.0.1:1/0")
	if _, err := StartRedis(ctx); err == nil {
		t.Fatal("StartRedis with an unreachable CDCD_TEST_REDIS_URL succeeded")
	}
}

func TestFreePort(t *testing.T) {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if p <= 0 || p > 65535 {
		t.Fatalf("port %d", p)
	}
}

// TestBusyPort checks that a start failing because its port is taken is
// recognised as such (StartPostgres, StartRedis and Restart retry then).
func TestBusyPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv(envDatabaseURL, "")
	t.Setenv(envRedisURL, "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port

	wantBusyStart(t, ctx, MustPostgres(t), taken)

	r := MustRedis(t)
	r.mu.Lock()
	r.shutdown()
	port := r.Port
	r.Port, r.Addr = taken, l.Addr().String()
	busy, err := r.start(ctx)
	r.Port, r.Addr = port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	r.mu.Unlock()
	if err == nil || !busy {
		t.Fatalf("redis on a taken port: busy %v, err %v", busy, err)
	}
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}
