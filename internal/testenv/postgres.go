package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	envDatabaseURL = "CDCD_TEST_DATABASE_URL"
	envPGBin       = "CDCD_TEST_PG_BIN"

	pgStartTimeout    = 60 * time.Second
	pgShutdownTimeout = 30 * time.Second
	pgBusyRetry       = 10 * time.Second // how long Restart retries a busy port
	logTailBytes      = 4096
)

// Postgres is a running PostgreSQL server with wal_level=logical.
type Postgres struct {
	// URL is a superuser URL to the database "postgres", e.g.
	// postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable.
	URL  string
	Host string
	Port int

	owned   bool                // false when the server is external
	bin     string              // directory holding initdb and postgres
	base    string              // temporary directory: data dir, log, socket
	data    string              // data directory
	logFile string              // server log (the postmaster's stderr)
	cred    *syscall.Credential // OS user to run as; nil: ourselves

	mu      sync.Mutex // serialises Stop, Restart and Kill
	cmd     *exec.Cmd  // the postmaster, nil when not running
	exited  chan struct{}
	removed bool // Stop has removed base

	extraArgs []string // more postgres arguments, after (and overriding) ours; for tests
	sslQuery  string   // the TLS parameters of DatabaseURL; "" means sslmode=disable
}

// StartPostgres starts a private PostgreSQL server on a free 127.0.0.1 port,
// in a fresh temporary directory, configured for logical replication:
// wal_level=logical, 20 replication slots and WAL senders, no durability
// (fsync, synchronous_commit and full_page_writes off), small shared memory
// so that several test packages can run servers side by side, and trust
// authentication for the user "postgres" on 127.0.0.1, replication
// included. It returns once the server accepts connections (at most 60s);
// the server keeps running after ctx ends, until Stop.
//
// When the test process runs as root, initdb and postgres run as the OS user
// "postgres", which must exist.
//
// Each call starts another, independent server, with its own port,
// directory and system identifier, so that a test can run several.
//
// If CDCD_TEST_DATABASE_URL is set, StartPostgres uses that server instead,
// after checking that it has wal_level=logical; Stop, Restart and Kill then
// return an error. Every call then returns that same server: a test that
// needs a second, distinct one uses StartPrivatePostgres.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	if u := os.Getenv(envDatabaseURL); u != "" {
		return externalPostgres(ctx, u)
	}
	return StartPrivatePostgres(ctx)
}

// StartPrivatePostgres starts a private server as StartPostgres does, even
// when CDCD_TEST_DATABASE_URL is set: for a test that needs a server distinct
// from the one under test (a database behind the same URL that is another
// server, with another system identifier), whatever that one is.
func StartPrivatePostgres(ctx context.Context) (*Postgres, error) {
	return startPrivatePostgres(ctx, nil)
}

// startPrivatePostgres starts a private server, calling prepare (if not
// nil) on it after initdb and before its first start.
func startPrivatePostgres(ctx context.Context, prepare func(*Postgres) error) (*Postgres, error) {
	p, err := initPostgres(ctx)
	if err == nil && prepare != nil {
		if err = prepare(p); err != nil {
			os.RemoveAll(p.base)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	// Another process may take the free port before the server binds it:
	// then try another one.
	for attempt := 1; ; attempt++ {
		var busy bool
		if p.Port, err = FreePort(); err == nil {
			busy, err = p.start(ctx)
		}
		if err == nil {
			break
		}
		if busy && attempt < 5 {
			continue
		}
		os.RemoveAll(p.base)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	p.URL = p.DatabaseURL("postgres")
	return p, nil
}

// externalPostgres checks the server named by CDCD_TEST_DATABASE_URL.
func externalPostgres(ctx context.Context, u string) (*Postgres, error) {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %s: %w", envDatabaseURL, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %s: %w", envDatabaseURL, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return nil, fmt.Errorf("start postgres: %s: %w", envDatabaseURL, err)
	}
	if level != "logical" {
		return nil, fmt.Errorf("start postgres: %s names a server with wal_level=%s; logical is needed", envDatabaseURL, level)
	}
	return &Postgres{URL: u, Host: cfg.Host, Port: int(cfg.Port)}, nil
}

// initPostgres creates the temporary directory and runs initdb in it.
func initPostgres(ctx context.Context) (_ *Postgres, err error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	p := &Postgres{owned: true, bin: bin, Host: "127.0.0.1"}
	if os.Geteuid() == 0 {
		// Postgres refuses to run as root.
		if p.cred, err = lookupCredential("postgres"); err != nil {
			return nil, fmt.Errorf("running as root needs an OS user to run postgres as: %w", err)
		}
	}
	if p.base, err = os.MkdirTemp("", "cdcd-pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(p.base)
		}
	}()
	p.data = filepath.Join(p.base, "data")
	p.logFile = filepath.Join(p.base, "postgres.log")
	if err := os.Chmod(p.base, 0o755); err != nil {
		return nil, err
	}
	if p.cred != nil {
		if err := traversable(filepath.Dir(p.base)); err != nil {
			return nil, err
		}
	}
	if err := p.chown(p.base); err != nil {
		return nil, err
	}

	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", p.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = p.base
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}

	// initdb -A trust already trusts everyone; spell it out so that the
	// setup does not depend on the version's template.
	hba := "" +
		"local all         all                trust\n" +
		"local replication all                trust\n" +
		"host  all         all  127.0.0.1/32  trust\n" +
		"host  replication all  127.0.0.1/32  trust\n"
	if err := os.WriteFile(filepath.Join(p.data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	if err := os.Chmod(p.data, 0o700); err != nil {
		return nil, err
	}
	if err := p.chown(p.data); err != nil {
		return nil, err
	}
	return p, nil
}

// DatabaseURL returns a superuser URL to database name on the server.
func (p *Postgres) DatabaseURL(name string) string {
	if !p.owned {
		u, err := url.Parse(p.URL)
		if err != nil {
			return p.URL
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String()
	}
	host := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	query := p.sslQuery
	if query == "" {
		query = "sslmode=disable"
	}
	return fmt.Sprintf("postgres://postgres@%s/%s?%s", host, url.PathEscape(name), query)
}

// CreateDatabase creates database name, dropping it first (WITH (FORCE),
// which disconnects its sessions) if it exists, and returns a superuser URL
// to it.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("create database %s: drop: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.DatabaseURL(name), nil
}

// Log returns the tail (about 4KB) of the server log, for failure messages.
// It is empty for an external server.
func (p *Postgres) Log() string {
	if !p.owned {
		return ""
	}
	return logTail(p.logFile, 0, logTailBytes)
}

// ApplyMigrations runs every *.sql file in dir, in lexical order, against
// the database at url. Each file is sent as one simple-protocol query, so it
// may hold several statements (and runs as one implicit transaction unless
// it has its own BEGIN/COMMIT). A dir without *.sql files is an error.
func ApplyMigrations(ctx context.Context, url, dir string) error {
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".sql") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	if len(files) == 0 {
		return fmt.Errorf("apply migrations: no *.sql files in %s", dir)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, f := range files {
		sql, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("apply migrations: %w", err)
		}
		if _, err := conn.PgConn().Exec(ctx, string(sql)).ReadAll(); err != nil {
			return fmt.Errorf("apply migration %s: %w", f, err)
		}
	}
	return nil
}

// MustPostgres starts a server with StartPostgres or fails t (it never
// skips), and stops the server when t ends.
func MustPostgres(t testing.TB) *Postgres {
	t.Helper()
	return mustPostgres(t, StartPostgres)
}

// MustPrivatePostgres is MustPostgres with StartPrivatePostgres.
func MustPrivatePostgres(t testing.TB) *Postgres {
	t.Helper()
	return mustPostgres(t, StartPrivatePostgres)
}

func mustPostgres(t testing.TB, start func(context.Context) (*Postgres, error)) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*pgStartTimeout)
	defer cancel()
	p, err := start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.owned {
			return
		}
		if err := p.Stop(); err != nil {
			t.Log(err)
		}
	})
	return p
}
