package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// startRedis starts the bench's Redis. With debug, DEBUG POPULATE is allowed
// (Redis 7 refuses it by default; Redis 6 knows no such setting and allows
// it), so the patterns step fills millions of keys in seconds.
func startRedis(ctx context.Context, debug bool) (*testenv.Redis, error) {
	if debug {
		r, err := testenv.StartRedis(ctx, testenv.WithArgs("--enable-debug-command", "yes"))
		if err == nil {
			return r, nil
		}
		logf("redis-server refused --enable-debug-command (%v); starting it without", err)
	}
	return testenv.StartRedis(ctx)
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

func (b *bench) exec(sql string, args ...any) error {
	_, err := b.db.Exec(b.ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// dropSlot drops a slot once its consumer's walsender has let go of it:
// that outlives the client process by a moment.
func (b *bench) dropSlot(slot string) error {
	var err error
	for range 100 {
		if err = b.exec(`SELECT pg_drop_replication_slot($1)`, slot); err == nil || !strings.Contains(err.Error(), "55006") {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
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

// redisCPU returns the Redis server's user+system CPU time so far.
func (b *bench) redisCPU() time.Duration {
	cpu, _ := serverStats(b.ctx, b.rdb)
	return cpu
}

// serverStats returns the user+system CPU time so far of the Redis server c
// talks to, and the number of commands it has processed.
func serverStats(ctx context.Context, c *redis.Client) (time.Duration, int64) {
	info, err := c.Info(ctx, "cpu", "stats").Result()
	if err != nil {
		return 0, 0
	}
	var total float64
	var commands int64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		switch {
		case !ok:
		case k == "used_cpu_sys" || k == "used_cpu_user":
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		case k == "total_commands_processed":
			commands, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return time.Duration(total * float64(time.Second)), commands
}

// sentinel is deleted only by the transaction that ends a measured
// workload (an INSERT into topics).
const sentinel = "state:summary:core"
