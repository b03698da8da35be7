package testenv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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

// lookupCredential returns the credential of OS user name.
func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// traversable checks that every user may enter dir and its parents, as the
// postgres OS user must to reach its data directory.
func traversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("directory %s is not searchable by other users, so the postgres OS user cannot reach the data directory; point TMPDIR elsewhere", d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// chown gives the tree at root to the OS user postgres runs as, if any.
func (p *Postgres) chown(root string) error {
	if p.cred == nil {
		return nil
	}
	uid, gid := int(p.cred.Uid), int(p.cred.Gid)
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// pgBinDir finds the directory holding initdb and postgres: $CDCD_TEST_PG_BIN,
// else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin
// (Debian, Ubuntu), else $PATH.
func pgBinDir() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(envPGBin); d != "" {
		if !has(d) {
			return "", fmt.Errorf("%s=%s: no initdb and postgres there", envPGBin, d)
		}
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); has(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(binDir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(path); has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) not found: install them or set %s", envPGBin)
}

// start runs the postmaster on p.Port and waits until it accepts
// connections. busy reports that it failed because the port was taken.
// The caller holds p.mu or owns p exclusively.
func (p *Postgres) start(ctx context.Context) (busy bool, err error) {
	// A Unix socket path must fit in sockaddr_un (108 bytes); TCP is all the
	// tests use, so do without the socket rather than fail on a long TMPDIR.
	sockDir := p.base
	if len(sockDir)+len("/.s.PGSQL.65535.lock") >= 100 {
		sockDir = ""
	}
	args := []string{
		"-D", p.data,
		"-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + sockDir,
		"-c", "wal_level=logical",
		"-c", "max_replication_slots=20",
		"-c", "max_wal_senders=20",
		"-c", "wal_sender_timeout=60s",
		"-c", "max_connections=100",
		"-c", "shared_buffers=32MB",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		// Asynchronous commits reach the walsender only once flushed.
		"-c", "wal_writer_delay=10ms",
		"-c", "full_page_writes=off",
		"-c", "logging_collector=off",
	}
	args = append(args, p.extraArgs...)
	offset := fileSize(p.logFile)
	lf, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer lf.Close()
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
	cmd.Dir = p.base
	cmd.Stdout, cmd.Stderr = lf, lf // stdin is /dev/null: the server outlives our stdio
	// Own process group: Kill and Stop can reach every backend. Pdeathsig:
	// the server dies with the test process (on Linux).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return false, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited

	connURL := p.DatabaseURL("postgres")
	deadline := time.Now().Add(pgStartTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		dir, cerr := connectDataDirectory(cctx, connURL)
		cancel()
		if cerr == nil {
			if dir == filepath.Clean(p.data) {
				return false, nil
			}
			// Another server took the port between FreePort and our bind
			// (a concurrent start): ours cannot bind, and taking that one
			// for ours would make two Postgres values share a server.
			p.shutdown(syscall.SIGKILL)
			return true, fmt.Errorf("port %d: another server answers there (data directory %s)", p.Port, dir)
		}
		select {
		case <-exited:
			p.shutdown(syscall.SIGKILL)
			log := logTail(p.logFile, offset, logTailBytes)
			busy := strings.Contains(log, "Address already in use") || strings.Contains(log, "could not bind")
			return busy, fmt.Errorf("the server exited during startup (%v); log:\n%s", cmd.ProcessState, log)
		default:
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			p.shutdown(syscall.SIGKILL)
			reason := fmt.Sprintf("not accepting connections after %v: %v", pgStartTimeout, cerr)
			if ctx.Err() != nil {
				reason = fmt.Sprintf("waiting for the server: %v", ctx.Err())
			}
			return false, fmt.Errorf("%s; log:\n%s", reason, logTail(p.logFile, offset, logTailBytes))
		}
		select {
		case <-exited:
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connectDataDirectory connects to connURL and returns the server's data
// directory, which tells our server from another one on the same port.
func connectDataDirectory(ctx context.Context, connURL string) (string, error) {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var dir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dir); err != nil {
		return "", fmt.Errorf("show data_directory: %w", err)
	}
	return filepath.Clean(dir), nil
}

// shutdown signals the postmaster (SIGINT: fast shutdown; SIGKILL: crash),
// waits for it, then kills whatever is left of its process group. It is a
// no-op when the server is not running. The caller holds p.mu.
func (p *Postgres) shutdown(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	if sig == syscall.SIGKILL {
		crash(p.cmd.Process, p.exited, 10*time.Second)
	} else {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.exited:
		case <-time.After(pgShutdownTimeout):
			crash(p.cmd.Process, p.exited, 10*time.Second)
		}
	}
	<-p.exited
	p.cmd, p.exited = nil, nil
}

// crash kills a postmaster and all its children with SIGKILL. A
// process-group kill does not reach the children: each makes itself a group
// leader (setsid). Once the postmaster is dead they are orphans that still
// hold the server's shared memory for a while, and a restart then fails
// with "pre-existing shared memory block is still in use". So the
// postmaster is stopped first, where it can neither fork nor reap, its
// children are killed and awaited as zombies (their memory released, their
// pids not reusable while unreaped), and then the postmaster is killed.
func crash(postmaster *os.Process, exited <-chan struct{}, timeout time.Duration) {
	select {
	case <-exited:
		return // its children, if any, are no longer ours to find
	default:
	}
	// Signal goes through a pidfd: it cannot hit a reused pid.
	if postmaster.Signal(syscall.SIGSTOP) != nil {
		return
	}
	pid := strconv.Itoa(postmaster.Pid)
	deadline := time.Now().Add(timeout)
	for {
		st, ok := readProcStat(pid)
		if !ok || st.state == "T" || !st.alive() || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	children := childProcesses(postmaster.Pid)
	for _, c := range children {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	for _, c := range children {
		for {
			st, ok := readProcStat(strconv.Itoa(c))
			if !ok || !st.alive() || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	_ = postmaster.Signal(syscall.SIGKILL) // SIGKILL ends a stopped process too
}

// childProcesses returns the pids of the live children of process ppid.
func childProcesses(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		if st, ok := readProcStat(e.Name()); ok && st.ppid == ppid && st.alive() {
			pids = append(pids, st.pid)
		}
	}
	return pids
}

// Stop shuts the server down (fast shutdown: open transactions are rolled
// back) and removes its directory. It is idempotent. For an external server
// it does nothing but return an error.
func (p *Postgres) Stop() error {
	if !p.owned {
		return fmt.Errorf("stop postgres: %w", errExternal)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shutdown(syscall.SIGINT)
	if p.removed {
		return nil
	}
	p.removed = true
	if err := os.RemoveAll(p.base); err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	return nil
}

// Restart shuts the server down (fast) if it is running, then starts it
// again on the same port and data directory and waits until it accepts
// connections. After Kill, the server goes through crash recovery.
func (p *Postgres) Restart(ctx context.Context) error {
	if !p.owned {
		return fmt.Errorf("restart postgres: %w", errExternal)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed {
		return errors.New("restart postgres: the server was stopped and its directory removed")
	}
	p.shutdown(syscall.SIGINT)
	deadline := time.Now().Add(pgBusyRetry)
	for {
		busy, err := p.start(ctx)
		if err == nil {
			return nil
		}
		if !busy || time.Now().After(deadline) {
			return fmt.Errorf("restart postgres: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restart postgres: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Kill crashes the server: SIGKILL to the postmaster and then to its
// remaining processes, so connections drop at once and nothing is flushed.
// Restart starts it again, with crash recovery.
func (p *Postgres) Kill() error {
	if !p.owned {
		return fmt.Errorf("kill postgres: %w", errExternal)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return errors.New("kill postgres: the server is not running")
	}
	p.shutdown(syscall.SIGKILL)
	return nil
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

// Tool returns the path of a PostgreSQL client program (pg_recvlogical,
// pgbench) from the server's installation.
func Tool(name string) (string, error) {
	dir, err := pgBinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return exec.LookPath(name)
	}
	return p, nil
}
