package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// target is a Redis that cdcd writes to: the settings that point cdcd at
// it, a client of it (for the sentinel key) and its CPU time and commands
// processed so far, summed over its masters.
type target struct {
	env   []string
	rdb   redis.UniversalClient
	stats func() (time.Duration, int64)
}

// standalone is the bench's own Redis, as every other measure uses it.
func (b *bench) standalone(env ...string) target {
	return target{env: append([]string{"CDCD_REDIS_MODE=standalone"}, env...), rdb: b.rdb,
		stats: func() (time.Duration, int64) { return serverStats(b.ctx, b.rdb) }}
}

// sideBySide drains one backlog with cdcd against each of targets,
// *shapeRounds times in turn, rotating which goes first from round to round
// so that drift over the run favours none. It returns each target's runs
// and the backlog's size. With -pprof, the second round of each target is
// profiled as DIR/drain-NAME.prof (spaces as dashes, without brackets and
// commas).
func (b *bench) sideBySide(prefix string, names []string, targets []target) ([][]drainRun, int, error) {
	runs := make([][]drainRun, len(targets))
	n := min(*shapeRounds, 20/len(targets)) // a slot per target a round, of the server's 20
	var slots []string
	for r := range n {
		for i := range targets {
			slots = append(slots, fmt.Sprintf("%s_%d_%d", prefix, i, r))
		}
	}
	changes, _, err := b.backlog(slots)
	if err != nil {
		return runs, 0, err
	}
	for r := range n {
		for j := range targets {
			i := (r + j) % len(targets)
			profile, expect := "", time.Duration(0)
			if r == 1 {
				profile, expect = "drain-"+fileName.Replace(names[i]), runs[i][0].wall
			}
			run, err := b.drainOnce(fmt.Sprintf("%s_%d_%d", prefix, i, r), targets[i], profile, expect)
			if err != nil {
				return runs, 0, fmt.Errorf("%s: %w", names[i], err)
			}
			runs[i] = append(runs[i], run)
			logf("%s round %d: %s %s (cdcd CPU %s; Redis CPU %s, %d commands; %.0f apply round trips)", prefix, r+1, names[i], run.wall.Round(time.Millisecond),
				run.cpu.Round(time.Millisecond), run.redisCPU.Round(time.Millisecond), run.commands, run.batches)
		}
	}
	return runs, changes, b.dropSlots(slots)
}

// fileName makes a target's name part of a file name.
var fileName = strings.NewReplacer(" ", "-", "(", "", ")", "", ",", "")

// sideBySideRows reports the drains of sideBySide: for each target after
// the first, its medians and their ratios to the first's, and target (when
// set) the wall time's target ratio. Rows are labelled what, or with more
// than two targets the target's name.
func (b *bench) sideBySideRows(what string, changes int, names []string, runs [][]drainRun, target string) {
	medianOf := func(i int, f func(drainRun) time.Duration) time.Duration {
		var v []time.Duration
		for _, r := range runs[i] {
			v = append(v, f(r))
		}
		return median(v)
	}
	cmds := func(i int) int64 {
		var v []int64
		for _, r := range runs[i] {
			v = append(v, r.commands)
		}
		return median(v)
	}
	for i := 1; i < len(runs); i++ {
		label := what
		if len(runs) > 2 {
			label = names[i]
		}
		var ratios []float64
		for r := range runs[0] {
			ratios = append(ratios, runs[i][r].wall.Seconds()/runs[0][r].wall.Seconds())
		}
		slices.Sort(ratios)
		for j, m := range []struct {
			name string
			f    func(drainRun) time.Duration
		}{
			{fmt.Sprintf("drain %dk: wall", changes/1000), func(r drainRun) time.Duration { return r.wall }},
			{"drain: cdcd CPU", func(r drainRun) time.Duration { return r.cpu }},
			{"drain: Redis CPU", func(r drainRun) time.Duration { return r.redisCPU }},
		} {
			a, bv := medianOf(0, m.f), medianOf(i, m.f)
			ref := names[0] + " " + a.Round(time.Millisecond).String()
			if j == 0 && target != "" { // the wall time's
				ref += "; target ≤ " + target
			}
			b.row(label+" "+m.name, fmt.Sprintf("%s (%.2f×)", bv.Round(time.Millisecond), bv.Seconds()/max(a.Seconds(), 0.001)), ref)
		}
		b.row(label+" drain: Redis commands", fmt.Sprintf("%d (%.2f×)", cmds(i), float64(cmds(i))/float64(max(cmds(0), 1))), fmt.Sprintf("%s %d", names[0], cmds(0)))
		b.row(label+" drain: per round", fmt.Sprintf("%.2f", ratios), fmt.Sprintf("%d rounds, ratios to %s; medians above", len(ratios), names[0]))
	}
}

// clusterDrain: the drain's backlog applied to the standalone server and to
// a 3-master Redis Cluster (CDCD_REDIS_MODE=cluster), with channel messages
// sent by SPUBLISH and by PUBLISH, side by side.
func (b *bench) clusterDrain() error {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	c, err := testenv.StartRedisCluster(ctx, 3, 0)
	cancel()
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()
	opt, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		return err
	}
	cc := redis.NewClusterClient(opt)
	defer cc.Close()
	stats := func() (time.Duration, int64) {
		var mu sync.Mutex
		var cpu time.Duration
		var commands int64
		_ = cc.ForEachMaster(b.ctx, func(ctx context.Context, m *redis.Client) error {
			t, n := serverStats(ctx, m)
			mu.Lock()
			cpu, commands = cpu+t, commands+n
			mu.Unlock()
			return nil
		})
		return cpu, commands
	}
	env := []string{"CDCD_REDIS_MODE=cluster", "CDCD_REDIS_URL=" + c.URL()}
	// Channel messages: SPUBLISH stays in the channel's shard, as a
	// standalone server's PUBLISH stays on it; a Cluster's PUBLISH goes to
	// every node over the cluster bus, which costs each node CPU that no
	// command shows (docs/performance.md).
	names := []string{"standalone", "cluster (3 masters, SPUBLISH)", "cluster (3 masters, PUBLISH)"}
	runs, changes, err := b.sideBySide("cluster", names, []target{
		b.standalone(),
		{env: append(slices.Clip(env), "CDCD_REDIS_SHARDED_PUBSUB=true"), rdb: cc, stats: stats},
		{env: env, rdb: cc, stats: stats},
	})
	if err != nil {
		return err
	}
	b.sideBySideRows("", changes, names, runs, "1.2×")
	return nil
}

// waitCost: what CDCD_REDIS_WAIT_REPLICAS=1 costs, with a replica of the
// bench's Redis attached in both runs: the drain, and the lag of probes,
// WAIT 0 and WAIT 1 in turn.
func (b *bench) waitCost() error {
	replica, err := b.startReplica()
	if err != nil {
		return err
	}
	defer func() { _ = replica.Stop() }()
	names := []string{"WAIT 0", "WAIT 1"}
	env := [2][]string{{"CDCD_REDIS_WAIT_REPLICAS=0"}, {"CDCD_REDIS_WAIT_REPLICAS=1"}}
	runs, changes, err := b.sideBySide("wait", names, []target{b.standalone(env[0]...), b.standalone(env[1]...)})
	if err != nil {
		return err
	}
	b.sideBySideRows("replica, WAIT 1:", changes, names, runs, "")

	n := min(*shapeRounds, 8)
	per := max(1, *probes/n)
	var lags [2]lagTimes
	for r := range n {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			slot := fmt.Sprintf("wait_lag_%d_%d", i, r)
			t, m, err := b.lagRun(slot, per, append([]string{"CDCD_REDIS_MODE=standalone"}, env[i]...)...)
			if err != nil {
				return fmt.Errorf("%s lag: %w", names[i], err)
			}
			// Confirmation is where WAIT waits: a WAIT 1 run that
			// confirmed nothing would measure nothing.
			behind := float64(b.lsn()) - m["cdcd_confirmed_lsn"]
			if err := b.dropSlot(slot); err != nil {
				return err
			}
			lags[i].add(t)
			logf("wait lag round %d: %s p50 %s p99 %s; confirmed position %.0f kB behind at the end", r+1, names[i],
				quantile(t.lat, 0.5), quantile(t.lat, 0.99), behind/1024)
		}
	}
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}} {
		a, w := quantile(lags[0].lat, q.q), quantile(lags[1].lat, q.q)
		b.row(fmt.Sprintf("replica, WAIT 1: lag, %d probes: %s", len(lags[1].lat), q.name), fmt.Sprintf("%s (%.2f×)", w, w.Seconds()/max(a.Seconds(), 1e-6)),
			fmt.Sprintf("WAIT 0 %s; %d runs each, interleaved", a, n))
	}
	return nil
}

// startReplica starts a private Redis replicating the bench's Redis and
// waits until it has synced.
func (b *bench) startReplica() (*testenv.Redis, error) {
	// The primary's first full sync would otherwise wait 5s for others.
	if err := b.rdb.ConfigSet(b.ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(b.rds.Addr)
	replica, err := testenv.StartRedis(b.ctx, testenv.WithArgs("--replicaof", host, port))
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		info, err := replica.Do(b.ctx, "INFO", "replication")
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return replica, nil
		}
		if time.Now().After(deadline) {
			_ = replica.Stop()
			return nil, fmt.Errorf("the replica has not synced after a minute: %v", err)
		}
	}
}
