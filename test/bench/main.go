// Command bench measures cdcd against the stream's own speed limit,
// pg_recvlogical, side by side in one run on private servers, and prints one
// table. Run it with `make bench`; docs/performance.md records a run.
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
	probes   = flag.Int("probes", 1000, "lag probes")
	pgbenchT = flag.Int("pgbench-seconds", 8, "seconds per write-cost run")
	bigTx    = flag.Int("big", 1000000, "rows of the single large transaction")
	rounds   = flag.Int("rounds", 7, "alternating rounds of the write-cost runs")
	steps    = flag.String("steps", "drain,lag,write,big", "the measures to take, comma-separated")
	pprofDir = flag.String("pprof", "", "when set, save CPU profiles of cdcd (drain and write cost) in this directory")
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
	// Autovacuum would wake at random in some runs and not others; the
	// bench vacuums between runs instead (settle).
	if err := b.exec(`ALTER SYSTEM SET autovacuum = off`); err != nil {
		return err
	}
	if err := b.exec(`SELECT pg_reload_conf()`); err != nil {
		return err
	}

	all := map[string]func() error{"drain": b.drain, "lag": b.lag, "write": b.writeCost, "big": b.bigTransaction, "serve": b.serve}
	for _, name := range strings.Split(*steps, ",") {
		step, ok := all[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("-steps: unknown measure %q (drain, lag, write, big, serve)", name)
		}
		if err := step(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
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

// serve keeps the private servers running, with the reference schema, until
// interrupted: for profiling by hand.
func (b *bench) serve() error {
	fmt.Printf("CDCD_DATABASE_URL=%s\nCDCD_REDIS_URL=%s\nCDCD_RULES_FILE=%s\n", b.dbURL, b.rds.URL, filepath.Join(b.repo, "rules.json"))
	ctx, stop := signal.NotifyContext(b.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

// settle brings the server to the same quiet state before each measured
// run: dead rows vacuumed, statistics fresh, dirty buffers checkpointed.
func (b *bench) settle() error {
	for _, sql := range []string{`VACUUM (ANALYZE) climate_runs`, `VACUUM (ANALYZE) topics`, `CHECKPOINT`} {
		if err := b.exec(sql); err != nil {
			return err
		}
	}
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
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
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
		"CDCD_LOG_LEVEL=warn", fmt.Sprintf("CDCD_PPROF=%t", *pprofDir != ""))
	d.cmd.Stderr = os.Stderr
	return d, d.cmd.Start()
}

// metrics returns the daemon's unlabelled metrics by name.
func (d *daemon) metrics() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + d.addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if ok && !strings.HasPrefix(name, "#") && !strings.Contains(name, "{") {
			out[name], _ = strconv.ParseFloat(val, 64)
		}
	}
	return out
}

// profile saves a CPU profile of d over the next seconds as DIR/name.prof,
// when -pprof is set. It returns at once; wait for the result on the channel.
func (d *daemon) profile(name string, seconds int) <-chan error {
	done := make(chan error, 1)
	if *pprofDir == "" || seconds < 1 {
		done <- nil
		return done
	}
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", d.addr, seconds)
		var resp *http.Response
		var err error
		for range 50 { // the daemon may still be starting
			if resp, err = http.Get(url); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if err := os.MkdirAll(*pprofDir, 0o755); err != nil {
			done <- err
			return
		}
		f, err := os.Create(filepath.Join(*pprofDir, name+".prof"))
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		done <- errors.Join(err, f.Close())
	}()
	return done
}

// redisCPU returns the Redis server's user+system CPU time so far.
func (b *bench) redisCPU() time.Duration {
	info, err := b.rdb.Info(b.ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
}

// runTime returns the time the process's live threads have spent on a CPU,
// from the scheduler's own clock.
func runTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
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
	if err := b.settle(); err != nil {
		return err
	}
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
		var prof <-chan error
		if i == 0 {
			prof = d.profile("drain", int(rWall[i].Seconds()*0.8))
		}
		for b.rdb.Exists(b.ctx, sentinel).Val() == 1 {
			time.Sleep(2 * time.Millisecond)
		}
		cWall = append(cWall, time.Since(start))
		cCPU = append(cCPU, runTime(d.cmd.Process.Pid))
		rss = max(rss, peakRSS(d.cmd.Process.Pid))
		if prof != nil {
			if err := <-prof; err != nil {
				return fmt.Errorf("profile: %w", err)
			}
		}
		d.stop()
		logf("drain round %d: pg_recvlogical %s, cdcd %s", i+1, rWall[i].Round(time.Millisecond), cWall[i].Round(time.Millisecond))
	}
	for _, s := range slots {
		if err := b.exec(`SELECT pg_drop_replication_slot($1)`, s); err != nil {
			return err
		}
	}
	rw, cw, rc, cc := median(rWall), median(cWall), median(rCPU), median(cCPU)
	b.row(fmt.Sprintf("drain %dk changes: wall", changes/1000), fmt.Sprintf("%s (%.2f×)", cw.Round(time.Millisecond), cw.Seconds()/rw.Seconds()), "pg_recvlogical "+rw.Round(time.Millisecond).String())
	b.row("drain: CPU", fmt.Sprintf("%s (%.2f×)", cc.Round(time.Millisecond), cc.Seconds()/max(rc.Seconds(), 0.001)), "pg_recvlogical "+rc.Round(time.Millisecond).String())
	b.row("drain: changes/s", fmt.Sprintf("%.0f", float64(changes)/cw.Seconds()), fmt.Sprintf("%.0f", float64(changes)/rw.Seconds()))
	b.row("drain: peak RSS", mb(rss), "")
	return nil
}

// median returns the middle value of v (the upper one of an even count).
func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// lag: commit-to-UNLINK latency observed from outside, through keyspace
// notifications, under 1,000 tx/s of background writes. A probe's commit
// is the server's clock at the end of its INSERT (autocommit: the commit
// follows at once); its UNLINK is when the deletion event reaches a bare
// RESP connection here.
func (b *bench) lag() error {
	if err := b.settle(); err != nil {
		return err
	}
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
	defer b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "")
	deleted, closeWatch, err := watchDeletions(b.rds.Addr)
	if err != nil {
		return err
	}
	defer closeWatch()
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
	var lat, fromSend, rtt []time.Duration
	for i := 0; i < *probes; i++ {
		key := fmt.Sprintf("nodb:%d:climate", 2000000000+i)
		if err := b.rdb.Set(b.ctx, key, "x", 0).Err(); err != nil {
			return err
		}
		start := time.Now()
		var committed time.Time
		if err := probe.QueryRow(b.ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 'probe', 'h') RETURNING clock_timestamp()`,
			2000000000+i).Scan(&committed); err != nil {
			return err
		}
		rtt = append(rtt, time.Since(start))
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case d := <-deleted:
				if d.key == key {
					lat = append(lat, d.at.Sub(committed))
					fromSend = append(fromSend, d.at.Sub(start))
					break wait
				}
			case <-timeout:
				return fmt.Errorf("probe %d never invalidated", i)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-bg; err != nil {
		return err
	}
	m := d.metrics()
	logf("lag: %.0f transactions in %.0f round trips, paced %.3fs", m["cdcd_apply_batch_transactions_sum"], m["cdcd_apply_batch_transactions_count"], m["cdcd_apply_paced_seconds_total"])
	for _, d := range [][]time.Duration{lat, fromSend, rtt} {
		slices.Sort(d)
	}
	q := func(d []time.Duration, q float64) string {
		return d[min(len(d)-1, int(q*float64(len(d))))].Round(10 * time.Microsecond).String()
	}
	b.row(fmt.Sprintf("lag, %d probes at 1,000 tx/s: p50", len(lat)), q(lat, 0.50), "target ≤ 1ms; from sending the INSERT "+q(fromSend, 0.50)+", its round trip "+q(rtt, 0.50))
	b.row("lag: p99", q(lat, 0.99), "target ≤ 5ms; from sending "+q(fromSend, 0.99)+", round trip "+q(rtt, 0.99))
	b.row("lag: max", q(lat, 1), "from sending "+q(fromSend, 1)+", round trip "+q(rtt, 1))
	return nil
}

type deletion struct {
	key string
	at  time.Time
}

// watchDeletions subscribes to deletion events on a connection of its own
// and stamps each as soon as it is read: no client library in between.
func watchDeletions(addr string) (<-chan deletion, func(), error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.Write([]byte("SUBSCRIBE __keyevent@0__:del\r\n")); err != nil {
		conn.Close()
		return nil, nil, err
	}
	rd := bufio.NewReader(conn)
	if _, err := readRESP(rd); err != nil { // the subscription's confirmation
		conn.Close()
		return nil, nil, err
	}
	out := make(chan deletion, 4096)
	go func() {
		for {
			msg, err := readRESP(rd)
			if err != nil {
				return
			}
			at := time.Now()
			if len(msg) == 3 && msg[0] == "message" {
				out <- deletion{msg[2], at}
			}
		}
	}()
	return out, func() { conn.Close() }, nil
}

// readRESP reads one array of bulk strings or integers.
func readRESP(rd *bufio.Reader) ([]string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[0] != '*' {
		return nil, fmt.Errorf("unexpected reply %q", line)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	out := make([]string, 0, n)
	for range n {
		line, err := rd.ReadString('\n')
		if err != nil {
			return nil, err
		}
		switch line[0] {
		case ':':
			out = append(out, strings.TrimSpace(line[1:]))
		case '$':
			size, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
			buf := make([]byte, size+2)
			if _, err := io.ReadFull(rd, buf); err != nil {
				return nil, err
			}
			out = append(out, string(buf[:size]))
		default:
			return nil, fmt.Errorf("unexpected element %q", line)
		}
	}
	return out, nil
}

// writeCost: pgbench TPS on a rule table with cdcd consuming, with
// pg_recvlogical consuming, with no consumer, and with a NOTIFY trigger,
// alternating. Each consumer reads from a slot created just before its run
// and dropped after it, so no run starts with another's backlog.
func (b *bench) writeCost() error {
	script := "\\set r random(1, 100000)\nUPDATE climate_runs SET hazard = 'x' WHERE id = :r;\n"
	recv, err := testenv.Tool("pg_recvlogical")
	if err != nil {
		return err
	}
	// The UPDATEs need rows 1..100000 (the drain leaves more behind).
	if err := b.exec(`INSERT INTO climate_runs (run_id, scenario, hazard)
		SELECT g, 's', 'h' FROM generate_series(1, 100000 - (SELECT count(*) FROM climate_runs WHERE id <= 100000)) g`); err != nil {
		return err
	}
	// A warm-up run, not counted.
	if _, err := b.pgbench(script, "-c", "4", "-j", "2", "-T", strconv.Itoa(*pgbenchT)); err != nil {
		return err
	}
	tps := map[string][]float64{}
	var ratios []float64 // cdcd / pg_recvlogical, per round
	var recvCPU, cdcdCPU, redisCPU, recvWS, cdcdWS []time.Duration
	var batches, batched float64
	for round := 0; round < *rounds; round++ {
		// The two consumers run back to back, each first in every other
		// round, so that drift over the run favours neither.
		order := []string{"pg_recvlogical", "cdcd", "none", "trigger"}
		if round%2 == 1 {
			order = []string{"cdcd", "pg_recvlogical", "trigger", "none"}
		}
		for _, c := range order {
			var stop func() error
			var prof <-chan error
			var d *daemon
			pid := 0 // the consumer's
			slot := fmt.Sprintf("bench_w_%s_%d", strings.ReplaceAll(c, "_", ""), round)
			if err := b.settle(); err != nil {
				return err
			}
			switch c {
			case "pg_recvlogical", "cdcd":
				if err := b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
					return err
				}
			}
			switch c {
			case "pg_recvlogical":
				cmd := exec.Command(recv, "-d", b.dbURL, "--slot", slot, "--start", "-o", "proto_version=1", "-o", "publication_names=cdcd", "-f", "/dev/null")
				if err := cmd.Start(); err != nil {
					return err
				}
				pid = cmd.Process.Pid
				stop = func() error {
					_ = cmd.Process.Signal(syscall.SIGINT)
					_ = cmd.Wait()
					return b.exec(`SELECT pg_drop_replication_slot($1)`, slot)
				}
			case "cdcd":
				var err error
				if d, err = b.startCdcd(slot); err != nil {
					return err
				}
				pid = d.cmd.Process.Pid
				stop = func() error {
					d.stop()
					return b.exec(`SELECT pg_drop_replication_slot($1)`, slot)
				}
			case "trigger":
				if err := b.exec(`CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
					BEGIN PERFORM pg_notify('cdcd', NEW.run_id::text); RETURN NEW; END $$;
					CREATE TRIGGER bench_notify AFTER UPDATE ON climate_runs FOR EACH ROW EXECUTE FUNCTION bench_notify()`); err != nil {
					return err
				}
				stop = func() error { return b.exec(`DROP TRIGGER bench_notify ON climate_runs`) }
			default:
				stop = func() error { return nil }
			}
			time.Sleep(time.Second)
			r0, s0 := b.redisCPU(), runTime(pid)
			var walsender int
			if pid != 0 {
				_ = b.db.QueryRow(b.ctx, `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&walsender)
			}
			w0 := runTime(walsender)
			if d != nil && round == 0 {
				prof = d.profile("write", *pgbenchT-1)
			}
			v, err := b.pgbench(script, "-c", "4", "-j", "2", "-T", strconv.Itoa(*pgbenchT))
			switch c {
			case "pg_recvlogical":
				recvCPU = append(recvCPU, runTime(pid)-s0)
				recvWS = append(recvWS, runTime(walsender)-w0)
				logf("pg_recvlogical: %s CPU, its walsender %s", recvCPU[len(recvCPU)-1], recvWS[len(recvWS)-1])
			case "cdcd":
				cdcdCPU = append(cdcdCPU, runTime(pid)-s0)
				redisCPU = append(redisCPU, b.redisCPU()-r0)
				cdcdWS = append(cdcdWS, runTime(walsender)-w0)
				m := d.metrics()
				batches += m["cdcd_apply_batch_transactions_count"]
				batched += m["cdcd_apply_batch_transactions_sum"]
				logf("cdcd: %s CPU, its walsender %s, Redis %s; %.0f transactions in %.0f round trips, paced %.2fs", cdcdCPU[len(cdcdCPU)-1], cdcdWS[len(cdcdWS)-1], redisCPU[len(redisCPU)-1],
					m["cdcd_apply_batch_transactions_sum"], m["cdcd_apply_batch_transactions_count"], m["cdcd_apply_paced_seconds_total"])
			}
			if serr := stop(); err == nil {
				err = serr
			}
			if err != nil {
				return err
			}
			if prof != nil {
				if err := <-prof; err != nil {
					return fmt.Errorf("profile: %w", err)
				}
			}
			tps[c] = append(tps[c], v)
			logf("write cost round %d: %s %.0f tps", round+1, c, v)
		}
		ratios = append(ratios, tps["cdcd"][round]/tps["pg_recvlogical"][round])
	}
	b.row("write cost: pgbench TPS while consuming", fmt.Sprintf("%.0f (%.2f× pg_recvlogical)", median(tps["cdcd"]), median(ratios)),
		fmt.Sprintf("pg_recvlogical %.0f, none %.0f, NOTIFY trigger %.0f", median(tps["pg_recvlogical"]), median(tps["none"]), median(tps["trigger"])))
	slices.Sort(ratios)
	b.row("write cost: cdcd/pg_recvlogical per round", fmt.Sprintf("%.2f", ratios), "the median is the ratio above")
	b.row(fmt.Sprintf("write cost: consumer CPU in %ds of pgbench", *pgbenchT), fmt.Sprintf("%s + Redis %s", median(cdcdCPU).Round(time.Millisecond), median(redisCPU).Round(time.Millisecond)),
		"pg_recvlogical "+median(recvCPU).Round(time.Millisecond).String())
	b.row("write cost: the consumer's walsender CPU", median(cdcdWS).Round(time.Millisecond).String(), "pg_recvlogical's "+median(recvWS).Round(time.Millisecond).String())
	b.row("write cost: transactions per Redis round trip", fmt.Sprintf("%.1f", batched/max(batches, 1)), "")
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
	if err := b.settle(); err != nil {
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
