// Package testenv starts private PostgreSQL and Redis servers for the
// integration tests and `make demo`: each on a free port, in a temporary
// directory, gone when stopped. Environment variables name existing servers
// instead: CDCD_TEST_DATABASE_URL (a superuser URL to a server with
// wal_level=logical) and CDCD_TEST_REDIS_URL.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a running PostgreSQL server with wal_level=logical.
type Postgres struct {
	// URL is a superuser URL to the database "postgres".
	URL  string
	Host string
	Port int

	owned   bool // false when the server is external
	bin     string
	base    string // temporary directory holding data and log
	data    string
	logFile string
	cred    *syscall.Credential

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

var errExternal = errors.New("the server is external (named by an environment variable); the harness cannot control it")

// StartPostgres starts a private server, or connects to the one named by
// CDCD_TEST_DATABASE_URL.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	if u := os.Getenv("CDCD_TEST_DATABASE_URL"); u != "" {
		return externalPostgres(ctx, u)
	}
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	p := &Postgres{owned: true, bin: bin, Host: "127.0.0.1"}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("start postgres: running as root needs a postgres OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	p.base, err = os.MkdirTemp("", "cdcd-pg-")
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := os.Chmod(p.base, 0o755); err != nil {
		return nil, err
	}
	p.data = filepath.Join(p.base, "data")
	p.logFile = filepath.Join(p.base, "postgres.log")
	if p.cred != nil {
		if err := os.Chown(p.base, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return nil, err
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", p.data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(p.base)
		return nil, fmt.Errorf("start postgres: initdb: %w\n%s", err, out)
	}
	p.Port, err = FreePort()
	if err != nil {
		os.RemoveAll(p.base)
		return nil, err
	}
	if err := p.start(ctx); err != nil {
		os.RemoveAll(p.base)
		return nil, err
	}
	p.URL = p.DatabaseURL("postgres")
	return p, nil
}

func externalPostgres(ctx context.Context, u string) (*Postgres, error) {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("CDCD_TEST_DATABASE_URL: %w", err)
	}
	defer conn.Close(ctx)
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return nil, fmt.Errorf("CDCD_TEST_DATABASE_URL: %w", err)
	}
	if level != "logical" {
		return nil, fmt.Errorf("CDCD_TEST_DATABASE_URL: the server has wal_level=%s; the tests need logical", level)
	}
	cfg := conn.Config()
	return &Postgres{URL: u, Host: cfg.Host, Port: int(cfg.Port)}, nil
}

// pgBinDir finds the directory holding initdb and postgres.
func pgBinDir() (string, error) {
	if d := os.Getenv("CDCD_TEST_PG_BIN"); d != "" {
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found: install them or set CDCD_TEST_PG_BIN")
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func (p *Postgres) start(ctx context.Context) error {
	args := []string{
		"-D", p.data,
		"-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + p.base,
		"-c", "wal_level=logical",
		"-c", "max_replication_slots=40",
		"-c", "max_wal_senders=40",
		"-c", "max_connections=200",
		"-c", "shared_buffers=64MB",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "wal_writer_delay=10ms",
		"-c", "full_page_writes=off",
		"-c", "wal_sender_timeout=60s",
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning",
	}
	lf, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited, p.stopped = cmd, exited, false
	p.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, p.DatabaseURL("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("start postgres: the server exited:\n%s", p.Log())
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = cmd.Process.Kill()
			return fmt.Errorf("start postgres: not accepting connections after 60s: %v\n%s", err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DatabaseURL returns a superuser URL to database name.
func (p *Postgres) DatabaseURL(name string) string {
	if !p.owned {
		u, err := url.Parse(p.URL)
		if err != nil {
			return p.URL
		}
		u.Path = "/" + name
		return u.String()
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, url.PathEscape(name))
}

// CreateDatabase (re)creates database name and returns a superuser URL to it.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.DatabaseURL(name), nil
}

// Stop shuts the server down (fast) and removes its directory. Idempotent.
func (p *Postgres) Stop() error {
	if !p.owned {
		return nil
	}
	err := p.shutdown(syscall.SIGINT)
	os.RemoveAll(p.base)
	return err
}

// Restart shuts the server down (fast) and starts it again on the same port
// and data directory.
func (p *Postgres) Restart(ctx context.Context) error {
	if !p.owned {
		return errExternal
	}
	if err := p.shutdown(syscall.SIGINT); err != nil {
		return err
	}
	return p.start(ctx)
}

// Kill crashes the server (SIGKILL to the postmaster). Restart starts it
// again, with crash recovery.
func (p *Postgres) Kill() error {
	if !p.owned {
		return errExternal
	}
	return p.shutdown(syscall.SIGKILL)
}

func (p *Postgres) shutdown(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, exited, stopped := p.cmd, p.exited, p.stopped
	p.stopped = true
	p.mu.Unlock()
	if cmd == nil || stopped {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	if sig == syscall.SIGKILL {
		// Orphaned backends would keep the shared memory and port busy.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// Log returns the tail of the server log.
func (p *Postgres) Log() string {
	b, err := os.ReadFile(p.logFile)
	if err != nil {
		return ""
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// ApplyMigrations runs every *.sql file in dir, in lexical order, each as
// one multi-statement script.
func ApplyMigrations(ctx context.Context, url, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no migrations in %s", dir)
	}
	sort.Strings(files)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	defer conn.Close(ctx)
	for _, f := range files {
		sql, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if _, err := conn.PgConn().Exec(ctx, string(sql)).ReadAll(); err != nil {
			return fmt.Errorf("migration %s: %w", filepath.Base(f), err)
		}
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// MustPostgres starts a server for t or fails it (never skips); the server
// stops when t ends.
func MustPostgres(t testing.TB) *Postgres {
	t.Helper()
	p, err := StartPostgres(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	return p
}
