// Command bench measures cdcd against the stream's own speed limit,
// pg_recvlogical, side by side in one run on private servers, and prints one
// table. Run it with `make bench`; docs/performance.md records a run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

var (
	smallTx  = flag.Int("small", 200000, "single-row transactions in the drain backlog")
	bulkRows = flag.Int("bulk", 150000, "rows of each of the two bulk UPDATEs in the backlog")
	probes   = flag.Int("probes", 400, "lag probes")
	pgbenchT = flag.Int("pgbench-seconds", 8, "seconds per write-cost run")
	bigTx    = flag.Int("big", 1000000, "rows of the single large transaction")
)

type bench struct {
	ctx   context.Context
	repo  string
	bin   string
	pg    *testenv.Postgres
	rds   *testenv.Redis
	dbURL string
	db    *pgxpool.Pool
	rdb   *redis.Client
	rows  [][3]string
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func run() error {
	ctx := context.Background()
	_, file, _, _ := runtime.Caller(0)
	b := &bench{ctx: ctx, repo: filepath.Join(filepath.Dir(file), "..", "..")}
	tmp, err := os.MkdirTemp("", "cdcd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b.bin = filepath.Join(tmp, "cdcd")
	build := exec.Command("go", "build", "-o", b.bin, "./cmd/cdcd")
	build.Dir, build.Stderr = b.repo, os.Stderr
	if err := build.Run(); err != nil {
		return err
	}
	if b.pg, err = testenv.StartPostgres(ctx); err != nil {
		return err
	}
	defer b.pg.Stop()
	if b.rds, err = testenv.StartRedis(ctx); err != nil {
		return err
	}
	defer b.rds.Stop()
	if b.dbURL, err = b.pg.CreateDatabase(ctx, "bench"); err != nil {
		return err
	}
	if err := testenv.ApplyMigrations(ctx, b.dbURL, filepath.Join(b.repo, "migrations")); err != nil {
		return err
	}
	if b.db, err = pgxpool.New(ctx, b.dbURL); err != nil {
		return err
	}
	defer b.db.Close()
	opt, _ := redis.ParseURL(b.rds.URL)
	b.rdb = redis.NewClient(opt)
	defer b.rdb.Close()

	steps := []func() error{b.drain, b.lag, b.writeCost, b.bigTransaction}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	fmt.Printf("\n%-44s %-28s %s\n", "measure", "cdcd", "reference")
	fmt.Printf("%s\n", strings.Repeat("-", 100))
	for _, r := range b.rows {
		fmt.Printf("%-44s %-28s %s\n", r[0], r[1], r[2])
	}
	fmt.Printf("\nmachine: %d CPUs, %s/%s, PostgreSQL and Redis private instances\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	return nil
}

func (b *bench) row(what, cdcd, ref string) { b.rows = append(b.rows, [3]string{what, cdcd, ref}) }

func (b *bench) exec(sql string, args ...any) error {
	_, err := b.db.Exec(b.ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func (b *bench) lsn() pglogrepl.LSN {
	var s string
	_ = b.db.QueryRow(b.ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s)
	l, _ := pglogrepl.ParseLSN(s)
	return l
}

func (b *bench) pgbench(script string, extra ...string) (float64, error) {
	tool, err := testenv.Tool("pgbench")
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp("", "bench-*.sql")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	f.WriteString(script)
	f.Close()
	args := append([]string{"-n", "-f", f.Name(), "-d", b.dbURL}, extra...)
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "tps = ") {
			v, _ := strconv.ParseFloat(strings.Fields(line)[2], 64)
			return v, nil
		}
	}
	return 0, fmt.Errorf("pgbench printed no tps:\n%s", out)
}

// daemon is a running cdcd.
type daemon struct {
	cmd  *exec.Cmd
	addr string
}

func (b *bench) startCdcd(slot string) (*daemon, error) {
	port, _ := testenv.FreePort()
	d := &daemon{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	d.cmd = exec.Command(b.bin)
	d.cmd.Env = append(os.Environ(), "CDCD_DATABASE_URL="+b.dbURL, "CDCD_REDIS_URL="+b.rds.URL,
		"CDCD_RULES_FILE="+filepath.Join(b.repo, "rules.json"), "CDCD_SLOT="+slot, "CDCD_HTTP_ADDR="+d.addr,
		"CDCD_LOG_LEVEL=warn")
	d.cmd.Stderr = os.Stderr
	return d, d.cmd.Start()
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
}

// cpu returns the process's user+system CPU time so far.
func cpu(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

func peakRSS(pid int) int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sentinel is deleted only by the transaction that ends a measured
// workload (an INSERT into topics).
const sentinel = "state:summary:core"

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// drain: the same backlog drained from slots created at the same LSN,
// alternating pg_recvlogical and cdcd.
func (b *bench) drain() error {
	slots := []string{"recv_a", "cdcd_a", "recv_b", "cdcd_b"}
	for _, s := range slots {
		if err := b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s); err != nil {
			return err
		}
	}
	logf("building the backlog: %d small transactions and 2 bulk updates of %d rows", *smallTx, *bulkRows)
	if err := b.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, $1) g`, *bulkRows); err != nil {
		return err
	}
	if _, err := b.pgbench("\\set r random(1, 100000)\nINSERT INTO climate_runs (run_id, scenario, hazard) VALUES (:r, 's', 'h');\n",
		"-c", "4", "-j", "2", "-t", strconv.Itoa(*smallTx/4)); err != nil {
		return err
	}
	for _, v := range []string{"a", "b"} {
		if err := b.exec(`UPDATE climate_runs SET scenario = $1 WHERE id <= $2`, v, *bulkRows); err != nil {
			return err
		}
	}
	// The last transaction is the only one that touches the summary core:
	// its key is gone when cdcd has applied the whole backlog.
	if err := b.exec(`INSERT INTO topics (title) VALUES ('last')`); err != nil {
		return err
	}
	end := b.lsn()
	changes := *bulkRows + *smallTx/4*4 + 2**bulkRows + 1
	logf("backlog: %d changes, ending at %s", changes, end)

	recv, err := testenv.Tool("pg_recvlogical")
	if err != nil {
		return err
	}
	var rWall, rCPU, cWall, cCPU []time.Duration
	var rss int64
	for i, pair := range [][2]string{{"recv_a", "cdcd_a"}, {"recv_b", "cdcd_b"}} {
		start := time.Now()
		cmd := exec.Command(recv, "-d", b.dbURL, "--slot", pair[0], "--start", "--endpos", end.String(),
			"-o", "proto_version=1", "-o", "publication_names=cdcd", "-f", "/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pg_recvlogical: %v\n%s", err, out)
		}
		rWall = append(rWall, time.Since(start))
		rCPU = append(rCPU, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())

		if err := b.rdb.Set(b.ctx, sentinel, "x", 0).Err(); err != nil {
			return err
		}
		start = time.Now()
		d, err := b.startCdcd(pair[1])
		if err != nil {
			return err
		}
		for b.rdb.Exists(b.ctx, sentinel).Val() == 1 {
			time.Sleep(2 * time.Millisecond)
		}
		cWall = append(cWall, time.Since(start))
		cCPU = append(cCPU, cpu(d.cmd.Process.Pid))
		rss = max(rss, peakRSS(d.cmd.Process.Pid))
		d.stop()
		logf("drain round %d: pg_recvlogical %s, cdcd %s", i+1, rWall[i].Round(time.Millisecond), cWall[i].Round(time.Millisecond))
	}
	rw, cw, rc, cc := median(rWall), median(cWall), median(rCPU), median(cCPU)
	b.row(fmt.Sprintf("drain %dk changes: wall", changes/1000), fmt.Sprintf("%s (%.2f×)", cw.Round(time.Millisecond), cw.Seconds()/rw.Seconds()), "pg_recvlogical "+rw.Round(time.Millisecond).String())
	b.row("drain: CPU", fmt.Sprintf("%s (%.2f×)", cc.Round(time.Millisecond), cc.Seconds()/max(rc.Seconds(), 0.001)), "pg_recvlogical "+rc.Round(time.Millisecond).String())
	b.row("drain: changes/s", fmt.Sprintf("%.0f", float64(changes)/cw.Seconds()), fmt.Sprintf("%.0f", float64(changes)/rw.Seconds()))
	b.row("drain: peak RSS", mb(rss), "")
	return nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// lag: commit-to-UNLINK latency observed from outside, through keyspace
// notifications, under 1,000 tx/s of background writes.
func (b *bench) lag() error {
	if err := b.exec(`SELECT pg_create_logical_replication_slot('cdcd_lag', 'pgoutput')`); err != nil {
		return err
	}
	d, err := b.startCdcd("cdcd_lag")
	if err != nil {
		return err
	}
	defer d.stop()
	time.Sleep(time.Second)
	if err := b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		return err
	}
	sub := b.rdb.Subscribe(b.ctx, "__keyevent@0__:del")
	defer sub.Close()
	if _, err := sub.Receive(b.ctx); err != nil {
		return err
	}
	var mu sync.Mutex
	seen := map[string]time.Time{}
	go func() {
		for m := range sub.Channel() {
			mu.Lock()
			seen[m.Payload] = time.Now()
			mu.Unlock()
		}
	}()
	bg := make(chan error, 1)
	go func() {
		_, err := b.pgbench("INSERT INTO topics (title) VALUES ('background');\n", "-c", "2", "-j", "2", "-R", "1000",
			"-T", strconv.Itoa(*probes/20+5))
		bg <- err
	}()
	time.Sleep(2 * time.Second)
	// The private server commits asynchronously; probes commit as a
	// production server does, flushing WAL at commit, so the walsender sees
	// them at once.
	probe, err := b.db.Acquire(b.ctx)
	if err != nil {
		return err
	}
	defer probe.Release()
	if _, err := probe.Exec(b.ctx, `SET synchronous_commit = on`); err != nil {
		return err
	}
	var lat []time.Duration
	for i := 0; i < *probes; i++ {
		key := fmt.Sprintf("nodb:%d:climate", 2000000000+i)
		if err := b.rdb.Set(b.ctx, key, "x", 0).Err(); err != nil {
			return err
		}
		start := time.Now()
		if _, err := probe.Exec(b.ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 'probe', 'h')`, 2000000000+i); err != nil {
			return err
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			mu.Lock()
			t, ok := seen[key]
			mu.Unlock()
			if ok {
				lat = append(lat, t.Sub(start))
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("probe %d never invalidated", i)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-bg; err != nil {
		return err
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	b.row(fmt.Sprintf("lag, %d probes at 1,000 tx/s: p50", len(lat)), p(0.50).Round(10*time.Microsecond).String(), "target ≤ 1ms")
	b.row("lag: p99", p(0.99).Round(10*time.Microsecond).String(), "target ≤ 5ms")
	b.row("lag: max", lat[len(lat)-1].Round(10*time.Microsecond).String(), "")
	return nil
}

// writeCost: pgbench TPS on a rule table with cdcd consuming, with
// pg_recvlogical consuming, with no consumer, and with a NOTIFY trigger.
func (b *bench) writeCost() error {
	script := "\\set r random(1, 100000)\nUPDATE climate_runs SET hazard = 'x' WHERE id = :r;\n"
	recv, _ := testenv.Tool("pg_recvlogical")
	configs := []string{"none", "pg_recvlogical", "cdcd", "trigger"}
	tps := map[string][]float64{}
	for round := 0; round < 2; round++ {
		for _, c := range configs {
			var stop func()
			switch c {
			case "pg_recvlogical":
				_ = b.exec(`SELECT pg_create_logical_replication_slot('recv_w', 'pgoutput') WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'recv_w')`)
				cmd := exec.Command(recv, "-d", b.dbURL, "--slot", "recv_w", "--start", "-o", "proto_version=1", "-o", "publication_names=cdcd", "-f", "/dev/null")
				if err := cmd.Start(); err != nil {
					return err
				}
				stop = func() { _ = cmd.Process.Signal(syscall.SIGINT); _ = cmd.Wait() }
			case "cdcd":
				_ = b.exec(`SELECT pg_create_logical_replication_slot('cdcd_w', 'pgoutput') WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'cdcd_w')`)
				d, err := b.startCdcd("cdcd_w")
				if err != nil {
					return err
				}
				stop = d.stop
			case "trigger":
				if err := b.exec(`CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
					BEGIN PERFORM pg_notify('cdcd', NEW.run_id::text); RETURN NEW; END $$;
					CREATE TRIGGER bench_notify AFTER UPDATE ON climate_runs FOR EACH ROW EXECUTE FUNCTION bench_notify()`); err != nil {
					return err
				}
				stop = func() { _ = b.exec(`DROP TRIGGER bench_notify ON climate_runs`) }
			default:
				stop = func() {}
			}
			time.Sleep(time.Second)
			v, err := b.pgbench(script, "-c", "4", "-j", "2", "-T", strconv.Itoa(*pgbenchT))
			stop()
			if err != nil {
				return err
			}
			tps[c] = append(tps[c], v)
			logf("write cost round %d: %s %.0f tps", round+1, c, v)
		}
	}
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	b.row("write cost: pgbench TPS while consuming", fmt.Sprintf("%.0f (%.2f× pg_recvlogical)", mean(tps["cdcd"]), mean(tps["cdcd"])/mean(tps["pg_recvlogical"])),
		fmt.Sprintf("pg_recvlogical %.0f, none %.0f, NOTIFY trigger %.0f", mean(tps["pg_recvlogical"]), mean(tps["none"]), mean(tps["trigger"])))
	return nil
}

// bigTransaction: peak RSS while one transaction updates many rows.
func (b *bench) bigTransaction() error {
	if err := b.exec(`TRUNCATE climate_runs`); err != nil {
		return err
	}
	if err := b.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, $1) g`, *bigTx); err != nil {
		return err
	}
	if err := b.exec(`SELECT pg_create_logical_replication_slot('cdcd_big', 'pgoutput')`); err != nil {
		return err
	}
	d, err := b.startCdcd("cdcd_big")
	if err != nil {
		return err
	}
	defer d.stop()
	if err := b.rdb.Set(b.ctx, sentinel, "x", 0).Err(); err != nil {
		return err
	}
	start := time.Now()
	if err := b.exec(`UPDATE climate_runs SET run_id = run_id + 1`); err != nil {
		return err
	}
	if err := b.exec(`INSERT INTO topics (title) VALUES ('last')`); err != nil {
		return err
	}
	for b.rdb.Exists(b.ctx, sentinel).Val() == 1 {
		time.Sleep(5 * time.Millisecond)
	}
	b.row(fmt.Sprintf("%dk-row transaction: peak RSS", *bigTx/1000), mb(peakRSS(d.cmd.Process.Pid)),
		fmt.Sprintf("applied %s after the UPDATE began", time.Since(start).Round(time.Millisecond)))
	return nil
}
