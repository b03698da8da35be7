// Command demo shows cdcd at work on a private PostgreSQL and Redis: it
// fills a cache, runs a scripted workload against the reference schema and
// prints each invalidation and alert as it happens. Run it with `make demo`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var out = struct {
	sync.Mutex
	start time.Time
}{start: time.Now()}

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf("%6.2fs  %s\n", time.Since(out.start).Seconds(), fmt.Sprintf(format, args...))
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")

	tmp, err := os.MkdirTemp("", "cdcd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "cdcd")
	say("building cdcd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cdcd")
	build.Dir, build.Stdout, build.Stderr = repo, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}

	say("starting a private PostgreSQL (wal_level=logical) and Redis")
	pg, err := testenv.StartPostgres(ctx)
	if err != nil {
		return err
	}
	defer pg.Stop()
	rds, err := testenv.StartRedis(ctx)
	if err != nil {
		return err
	}
	defer rds.Stop()
	dbURL, err := pg.CreateDatabase(ctx, "app")
	if err != nil {
		return err
	}
	if err := testenv.ApplyMigrations(ctx, dbURL, filepath.Join(repo, "migrations")); err != nil {
		return err
	}
	say("applied migrations/ to database app")

	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close(context.Background())
	opt, _ := redis.ParseURL(rds.URL)
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	// Watch deletions and cdcd's channel messages from the outside.
	if err := rdb.ConfigSet(ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		return err
	}
	sub := rdb.PSubscribe(ctx, "__keyevent@0__:del", "cdcd:invalidations")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return err
	}
	go func() {
		for m := range sub.Channel() {
			if m.Channel == "cdcd:invalidations" {
				say("    channel %s: %s", m.Channel, m.Payload)
			} else {
				say("    deleted %s", m.Payload)
			}
		}
	}()

	port, err := testenv.FreePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cdcd := exec.Command(bin)
	cdcd.Env = append(os.Environ(),
		"CDCD_DATABASE_URL="+dbURL,
		"CDCD_REDIS_URL="+rds.URL,
		"CDCD_RULES_FILE="+filepath.Join(repo, "rules.json"),
		"CDCD_HTTP_ADDR="+addr,
		"CDCD_LOG_FORMAT=json",
	)
	stderr, _ := cdcd.StderrPipe()
	if err := cdcd.Start(); err != nil {
		return err
	}
	defer cdcd.Process.Kill() //nolint:errcheck // it may have exited already
	logDone := make(chan struct{})
	go func() { defer close(logDone); printAlerts(stderr) }()
	if err := waitReady(ctx, addr); err != nil {
		return err
	}
	say("cdcd is streaming (http://%s/metrics)", addr)

	fill := func(keys ...string) {
		for _, k := range keys {
			rdb.Set(ctx, k, "cached value", 0)
		}
	}
	step := func(title, sql string, keys ...string) error {
		fill(keys...)
		time.Sleep(150 * time.Millisecond)
		say("%s", title)
		say("  SQL: %s", sql)
		if _, err := db.Exec(ctx, sql); err != nil {
			return err
		}
		time.Sleep(600 * time.Millisecond)
		var left []string
		for _, k := range keys {
			if rdb.Exists(ctx, k).Val() == 1 {
				left = append(left, k)
			}
		}
		if len(left) > 0 {
			say("  kept: %s", strings.Join(left, ", "))
		}
		return nil
	}

	steps := []struct {
		title, sql string
		keys       []string
	}{
		{"a new topic changes the summary core", `INSERT INTO topics (title) VALUES ('Coastal flooding')`,
			[]string{"state:summary:core", "state:summary:progress"}},
		{"a workplan and a task", `INSERT INTO workplans (topic_id, title) SELECT id, 'Port of Rotterdam' FROM topics;
			INSERT INTO tasks (workplan_id, title) SELECT id, 'Collect exposure data' FROM workplans`,
			[]string{"state:summary:core"}},
		{"a task's notes change: not a summary column, nothing to delete", `UPDATE tasks SET notes = 'ask the port authority'`,
			[]string{"state:summary:core"}},
		{"a task's status changes", `UPDATE tasks SET status = 'doing'`, []string{"state:summary:core"}},
		{"progress is reported: only the progress section goes", `INSERT INTO progress_events (task_id, message) SELECT id, '40% done' FROM tasks`,
			[]string{"state:summary:core", "state:summary:progress"}},
		{"climate runs 1 and 2 get results", `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 'ssp245', 'flood'), (2, 'ssp585', 'flood')`,
			[]string{"nodb:1:climate", "nodb:2:climate", "nodb:3:climate"}},
		{"a result moves from run 2 to run 3: both runs' keys go", `UPDATE climate_runs SET run_id = 3 WHERE run_id = 2`,
			[]string{"nodb:1:climate", "nodb:2:climate", "nodb:3:climate"}},
		{"a rolled-back transaction deletes nothing", `DO $$ BEGIN INSERT INTO topics (title) VALUES ('never'); RAISE EXCEPTION 'rollback'; EXCEPTION WHEN raise_exception THEN NULL; END $$`,
			[]string{"state:summary:core"}},
		{"an impact function is created", `INSERT INTO impact_functions (name, hazard, intensity_unit, mdd_x, mdd_y, paa_x, paa_y, attribution)
			VALUES ('river flood, residential', 'flood', 'm', '{0,0.5,1,2}', '{0,0.2,0.5,0.9}', '{0,0.5,1,2}', '{0,1,1,1}', 'JRC')`,
			[]string{"impact:1:v1"}},
		{"its coefficients change WITH a version bump", `UPDATE impact_functions SET mdd_y = '{0,0.25,0.5,0.9}', version = 2`,
			[]string{"impact:1:v1", "impact:1:v2"}},
		{"only its attribution changes: no alert, nothing to delete", `UPDATE impact_functions SET attribution = 'JRC, 2024 revision'`,
			[]string{"impact:1:v2"}},
		{"its coefficients change WITHOUT a version bump: the invariant fires", `UPDATE impact_functions SET paa_y = '{0,0.8,1,1}'`,
			[]string{"impact:1:v2"}},
	}
	for _, s := range steps {
		if err := step(s.title, s.sql, s.keys...); err != nil {
			return err
		}
	}
	say("revisions: core=%s progress=%s impact:1=%s",
		rdb.Get(ctx, "state:summary:rev:core").Val(), rdb.Get(ctx, "state:summary:rev:progress").Val(), rdb.Get(ctx, "impact:1:rev").Val())

	say("stopping cdcd (SIGTERM)")
	_ = cdcd.Process.Signal(syscall.SIGTERM)
	<-logDone
	if err := cdcd.Wait(); err != nil {
		return fmt.Errorf("cdcd: %w", err)
	}
	var confirmed, current string
	_ = db.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = 'cdcd'`).Scan(&confirmed, &current)
	say("cdcd exited 0; slot confirmed %s (server at %s)", confirmed, current)
	say("stopping PostgreSQL and Redis")
	return nil
}

// printAlerts echoes cdcd's warnings and errors, and its final line.
func printAlerts(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			say("  cdcd: %s", sc.Text())
			continue
		}
		msg, _ := m["msg"].(string)
		level, _ := m["level"].(string)
		switch {
		case strings.HasPrefix(msg, "invariant violated"):
			changed, _ := json.Marshal(m["changed"])
			unchanged, _ := json.Marshal(m["unchanged"])
			say("  ALERT %s %s: %s", level, m["invariant"], msg)
			say("        table=%v primary_key=%v lsn=%v xid=%v", m["table"], compact(m["primary_key"]), m["lsn"], m["xid"])
			say("        changed=%s unchanged=%s", changed, unchanged)
		case level == "WARN" || level == "ERROR" || msg == "confirmed position at shutdown":
			say("  cdcd %s: %s %v", level, msg, m["lsn"])
		}
	}
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func waitReady(ctx context.Context, addr string) error {
	c := http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cdcd did not become ready: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
