package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// tlsEnv is an env whose Postgres and Redis accept only TLS connections
// with a client certificate, from a CA made for the test.
func tlsEnv(t *testing.T) (*env, *testenv.CA, *testenv.Redis) {
	t.Helper()
	ctx := context.Background()
	ca := testenv.MustCA(t)
	server := testenv.MustPostgresTLS(t, ca, true)
	name := fmt.Sprintf("tls_%d_%d", os.Getpid(), dbSeq.Add(1))
	dbURL, err := server.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.ApplyMigrations(ctx, dbURL, filepath.Join(repoDir, "migrations")); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	red := testenv.MustRedis(t, testenv.WithTLS(ca, testenv.RequireClientCert))
	rdb := redis.NewClient(&redis.Options{Addr: red.Addr, TLSConfig: ca.ClientConfig()})
	t.Cleanup(func() { rdb.Close() })
	return &env{t: t, dbURL: dbURL, slot: "s_" + name, db: pool, rdb: rdb, rules: filepath.Join(repoDir, "rules.json")}, ca, red
}

// TLS on both ends, with client certificates: libpq's sslmode=verify-full,
// sslrootcert, sslcert and sslkey through cdcd's own replication
// connection, and a rediss:// Redis that demands a client certificate.
func TestTLSOnBothEnds(t *testing.T) {
	e, ca, red := tlsEnv(t)
	redisVars := []string{
		"CDCD_REDIS_URL=" + red.URL,
		"CDCD_REDIS_TLS_CA_FILE=" + ca.CertFile,
		"CDCD_REDIS_TLS_CERT_FILE=" + ca.ClientCertFile,
		"CDCD_REDIS_TLS_KEY_FILE=" + ca.ClientKeyFile,
	}
	d := e.startDaemon(redisVars...)
	e.set("nodb:1:climate", "state:summary:core")
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h'); INSERT INTO topics (title) VALUES ('t')`)
	e.gone("nodb:1:climate", "state:summary:core")
	e.waitConfirmed(end, 20*time.Second)
	if e.get("state:summary:rev:core") == "" {
		t.Error("no revision set over TLS")
	}
	d.stop(syscall.SIGTERM, 10*time.Second)

	// Without the client certificate Redis refuses cdcd: it says so and
	// confirms nothing.
	d = e.spawn(redisVars[:2]...)
	d.waitUnready(30*time.Second, "redis")
	_, end = e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (2, 's', 'h')`)
	time.Sleep(2 * time.Second)
	if c := e.confirmed(); c >= end {
		t.Fatalf("confirmed %s past %s without reaching Redis", c, end)
	}
}
