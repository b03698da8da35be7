package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
)

var dbSeq atomic.Int64

// env is one test's world: a fresh database with the migrations applied,
// its own slot name, and the shared Redis flushed.
type env struct {
	t     *testing.T
	dbURL string
	slot  string
	db    *pgxpool.Pool
	rdb   *redis.Client
	rules string // rules file path
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("it_%d_%d", os.Getpid(), dbSeq.Add(1))
	url, err := pg.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	if err := testenv.ApplyMigrations(ctx, url, filepath.Join(repoDir, "migrations")); err != nil {
		t.Fatalf("migrations: %v", err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	opt, err := redis.ParseURL(rds.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("flush redis: %v", err)
	}
	e := &env{t: t, dbURL: url, slot: "s_" + name, db: pool, rdb: rdb, rules: filepath.Join(repoDir, "rules.json")}
	t.Cleanup(func() {
		// Drop the slot so the server stops retaining WAL for it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, e.slot)
	})
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// lsn returns the server's current WAL position.
func (e *env) lsn() pglogrepl.LSN {
	e.t.Helper()
	var s string
	if err := e.db.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		e.t.Fatal(err)
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// confirmed returns the slot's confirmed_flush_lsn (0 when there is no slot).
func (e *env) confirmed() pglogrepl.LSN {
	e.t.Helper()
	var s *string
	err := e.db.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&s)
	if err != nil || s == nil {
		return 0
	}
	l, _ := pglogrepl.ParseLSN(*s)
	return l
}

// waitConfirmed waits until the slot confirms lsn: every transaction that
// ended at or before it has been applied.
func (e *env) waitConfirmed(lsn pglogrepl.LSN, timeout time.Duration) {
	e.t.Helper()
	waitFor(e.t, timeout, fmt.Sprintf("slot %s to confirm %s", e.slot, lsn), func() bool { return e.confirmed() >= lsn })
}

func (e *env) set(keys ...string) {
	e.t.Helper()
	setKeys(e.t, e.rdb, keys...)
}

// setKeys caches keys through c, a thousand to a pipeline.
func setKeys(t *testing.T, c redis.UniversalClient, keys ...string) {
	t.Helper()
	ctx := context.Background()
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		pipe := c.Pipeline()
		for _, k := range keys[:n] {
			pipe.Set(ctx, k, "cached", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("SET: %v", err)
		}
		keys = keys[n:]
	}
}

// exists reports whether key is cached.
func (e *env) exists(key string) bool {
	e.t.Helper()
	n, err := e.rdb.Exists(context.Background(), key).Result()
	if err != nil {
		e.t.Fatalf("EXISTS %s: %v", key, err)
	}
	return n == 1
}

func (e *env) get(key string) string {
	e.t.Helper()
	v, err := e.rdb.Get(context.Background(), key).Result()
	if err != nil && err != redis.Nil {
		e.t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// daemon is a running cdcd process.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	err  error // of Wait, valid after done

	mu    sync.Mutex
	lines []string
}

// startDaemon starts cdcd against e with extra CDCD_* variables
// ("KEY=value") and waits until it is ready.
func (e *env) startDaemon(extra ...string) *daemon {
	e.t.Helper()
	d := e.spawn(extra...)
	d.waitReady(30 * time.Second)
	return d
}

// spawn starts cdcd without waiting for it to be ready.
func (e *env) spawn(extra ...string) *daemon {
	e.t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		e.t.Fatal(err)
	}
	d := &daemon{t: e.t, addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan struct{})}
	d.cmd = exec.Command(binary)
	d.cmd.Env = append(cleanEnv(),
		"CDCD_DATABASE_URL="+e.dbURL,
		"CDCD_REDIS_URL="+rds.URL,
		"CDCD_RULES_FILE="+e.rules,
		"CDCD_SLOT="+e.slot,
		"CDCD_HTTP_ADDR="+d.addr,
		"CDCD_LOG_FORMAT=json",
		"CDCD_LOG_LEVEL=debug",
		"CDCD_STATUS_INTERVAL=1s",
	)
	d.cmd.Env = append(d.cmd.Env, extra...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		e.t.Fatalf("start cdcd: %v", err)
	}
	logFile, _ := os.Create(filepath.Join(e.t.TempDir(), "cdcd.log"))
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			d.mu.Unlock()
			if logFile != nil {
				fmt.Fprintln(logFile, sc.Text())
			}
		}
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	e.t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if e.t.Failed() {
			e.t.Logf("cdcd log:\n%s", strings.Join(d.log(), "\n"))
		}
	})
	return d
}

// cleanEnv is the test process's environment without CDCD_* variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CDCD_") {
			out = append(out, kv)
		}
	}
	return out
}

func (d *daemon) log() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.lines...)
}

// logEntries returns the JSON log lines whose msg contains substr.
func (d *daemon) logEntries(substr string) []map[string]any {
	var out []map[string]any
	for _, l := range d.log() {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		if msg, _ := m["msg"].(string); strings.Contains(msg, substr) {
			out = append(out, m)
		}
	}
	return out
}

func (d *daemon) get(path string) (int, string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + d.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func (d *daemon) waitReady(timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.done:
			d.t.Fatalf("cdcd exited before it was ready: %v\n%s", d.err, strings.Join(d.log(), "\n"))
		default:
		}
		if code, _, err := d.get("/readyz"); err == nil && code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			_, body, _ := d.get("/readyz")
			d.t.Fatalf("cdcd not ready after %s: %s", timeout, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric returns the value of a counter or gauge sample; labels are
// "name=value" pairs that must all match. Absent: 0.
func (d *daemon) metric(name string, labels ...string) float64 {
	d.t.Helper()
	code, body, err := d.get("/metrics")
	if err != nil || code != http.StatusOK {
		d.t.Fatalf("GET /metrics: %d %v", code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		d.t.Fatalf("parse metrics: %v", err)
	}
	fam, ok := fams[name]
	if !ok {
		return 0
	}
	var sum float64
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// stop sends sig and waits for the process to exit, returning its exit code
// and how long it took.
func (d *daemon) stop(sig syscall.Signal, timeout time.Duration) (int, time.Duration) {
	d.t.Helper()
	start := time.Now()
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(timeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		d.t.Fatalf("cdcd did not exit within %s of %s", timeout, sig)
	}
	code := 0
	if d.err != nil {
		if ee, ok := d.err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			d.t.Fatal(d.err)
		}
	}
	return code, time.Since(start)
}

// kill crashes the process (kill -9).
func (d *daemon) kill() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// monitor records the commands Redis executes (MONITOR) until stopped.
type monitor struct {
	conn  net.Conn
	mu    sync.Mutex
	cmds  [][]string
	done  chan struct{}
	ready chan struct{}
}

var monitorLine = regexp.MustCompile(`^\+\d+\.\d+ \[\d+ [^\]]+\] (.*)$`)

func startMonitor(t *testing.T) *monitor {
	t.Helper()
	conn, err := net.Dial("tcp", rds.Addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &monitor{conn: conn, done: make(chan struct{}), ready: make(chan struct{})}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(m.done)
		r := bufio.NewReaderSize(conn, 1<<20)
		first := true
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if first {
				first = false
				close(m.ready)
				continue // +OK
			}
			if sm := monitorLine.FindStringSubmatch(line); sm != nil {
				m.mu.Lock()
				m.cmds = append(m.cmds, parseMonitorArgs(sm[1]))
				m.mu.Unlock()
			}
		}
	}()
	select {
	case <-m.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("MONITOR did not start")
	}
	t.Cleanup(func() { m.stop() })
	return m
}

func (m *monitor) stop() [][]string {
	m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmds
}

// parseMonitorArgs splits MONITOR's `"UNLINK" "a" "b"` into its arguments.
func parseMonitorArgs(s string) []string {
	var out []string
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		if len(s) == 0 || s[0] != '"' {
			break
		}
		i := 1
		for i < len(s) && s[i] != '"' {
			if s[i] == '\\' {
				i++
			}
			i++
		}
		if i >= len(s) {
			break
		}
		if v, err := strconv.Unquote(s[:i+1]); err == nil {
			out = append(out, v)
		} else {
			out = append(out, s[1:i])
		}
		s = s[i+1:]
	}
	return out
}
