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
	"strings"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

var (
	smallTx     = flag.Int("small", 200000, "single-row transactions in the drain backlog")
	bulkRows    = flag.Int("bulk", 150000, "rows of each of the two bulk UPDATEs in the backlog")
	probes      = flag.Int("probes", 1000, "lag probes")
	pgbenchT    = flag.Int("pgbench-seconds", 8, "seconds per write-cost run")
	bigTx       = flag.Int("big", 1000000, "rows of the single large transaction")
	rounds      = flag.Int("rounds", 7, "alternating rounds of the write-cost runs")
	steps       = flag.String("steps", "drain,lag,write,big,cluster,wait,patterns", "the measures to take, comma-separated")
	shapeRounds = flag.Int("shape-rounds", 4, "cluster and wait: interleaved rounds of each side (at most 6 for cluster's three, 10 for wait's two)")
	pprofDir    = flag.String("pprof", "", "when set, save CPU profiles of cdcd (drain and write cost) in this directory")

	patternKeys    = flag.String("pattern-keys", "0,100000,1000000,10000000", "patterns table: unrelated keys in Redis, one row each, comma-separated")
	patternRates   = flag.String("pattern-rates", "0,2,20", "patterns table: pattern transactions per second, one column each, comma-separated")
	patternSeconds = flag.Int("pattern-seconds", 12, "patterns table: seconds of load per cell")
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
	grids []grid
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
	if b.rds, err = startRedis(ctx, strings.Contains(*steps, "patterns")); err != nil {
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

	all := map[string]func() error{"drain": b.drain, "lag": b.lag, "write": b.writeCost, "big": b.bigTransaction, "patterns": b.patterns,
		"cluster": b.clusterDrain, "wait": b.waitCost, "serve": b.serve}
	for _, name := range strings.Split(*steps, ",") {
		step, ok := all[strings.TrimSpace(name)]
		if !ok {
			return fmt.Errorf("-steps: unknown measure %q (drain, lag, write, big, cluster, wait, patterns, serve)", name)
		}
		if err := step(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	b.report()
	return nil
}
