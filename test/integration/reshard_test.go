package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// redirects counts what a go-redis client met itself: ASKING commands it
// sent and MOVED replies it got, so that the servers' totals can be told
// apart from cdcd's.
type redirects struct{ asking, moved atomic.Int64 }

func (h *redirects) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *redirects) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.count([]redis.Cmder{cmd})
		return err
	}
}

func (h *redirects) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.count(cmds)
		return err
	}
}

func (h *redirects) count(cmds []redis.Cmder) {
	for _, c := range cmds {
		if c.Name() == "asking" {
			h.asking.Add(1)
		}
		if err := c.Err(); err != nil && strings.HasPrefix(err.Error(), "MOVED ") {
			h.moved.Add(1)
		}
	}
}

// serverRedirects sums over masters the ASKING commands they ran and the
// MOVED replies they gave.
func serverRedirects(t *testing.T, masters []*testenv.Redis) (asking, moved int) {
	t.Helper()
	ctx := context.Background()
	field := func(info, prefix string) int {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
				v, _, _ = strings.Cut(v, ",")
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return 0
	}
	for _, m := range masters {
		cmds, err := m.Do(ctx, "INFO", "commandstats")
		if err != nil {
			t.Fatal(err)
		}
		errs, err := m.Do(ctx, "INFO", "errorstats")
		if err != nil {
			t.Fatal(err)
		}
		asking += field(cmds, "cmdstat_asking:calls=")
		moved += field(errs, "errorstat_MOVED:count=")
	}
	return asking, moved
}

// Hash slots move between masters, key by key, while cdcd applies a write
// load: its UNLINKs, revision scripts and pattern scans meet ASK, TRYAGAIN
// and MOVED. After every transaction its keys are gone and its revisions
// at or past it; after every TRUNCATE (a key pattern and a revision
// pattern) so are the keys and revisions nothing else touched.
func TestClusterReshardUnderLoad(t *testing.T) {
	ctx := context.Background()
	cl := testenv.MustRedisCluster(t, 3, 0)
	e := newEnv(t)
	shards, err := cl.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src, dst := shards[0], shards[1]
	hooks := &redirects{}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRedirects: 10})
	defer cc.Close()
	cc.OnNewNode(func(c *redis.Client) { c.AddHook(hooks) })

	// Runs whose key and revision both live on src: their slots move.
	slotOf := func(key string) int { return int(cc.ClusterKeySlot(ctx, key).Val()) }
	onSrc := func(slot int) bool {
		return slices.ContainsFunc(src.Slots, func(r [2]int) bool { return slot >= r[0] && slot <= r[1] })
	}
	pick := func(from, n int, slots map[int]bool) []int {
		var runs []int
		for i := from; len(runs) < n; i++ {
			k, r := slotOf(runKey(i)), slotOf(runKey(i)+":rev")
			if onSrc(k) && onSrc(r) {
				runs = append(runs, i)
				slots[k], slots[r] = true, true
			}
		}
		return runs
	}
	const truncates, perTruncate = 10, 6
	held, moving := map[int]bool{}, map[int]bool{}
	load := pick(1, 24, moving)
	bystanders := pick(100000, truncates*perTruncate, held)
	var slots []int // the slots that move one after the other
	for s := range moving {
		if !held[s] {
			slots = append(slots, s)
		}
	}
	slices.Sort(slots)

	// The bystanders' slots stay half moved throughout: a key cached
	// there now goes to dst, the slot's owner is still src.
	var holds []*testenv.SlotMigration
	for s := range held {
		m, err := cl.BeginMigration(ctx, s, dst.Master)
		if err != nil {
			t.Fatal(err)
		}
		holds = append(holds, m)
	}

	d := e.startDaemon("CDCD_REDIS_MODE=cluster", "CDCD_REDIS_URL="+cl.URL())

	// The migration: every slot of those keys, src to dst, each half moved
	// for 100ms before its first key and after each key.
	var moved atomic.Int64
	migrated := make(chan error, 1)
	mctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	go func() {
		for _, s := range slots {
			n, err := cl.MigrateSlot(mctx, s, dst.Master, 100*time.Millisecond)
			moved.Add(int64(n))
			if err != nil {
				migrated <- err
				return
			}
		}
		migrated <- nil
	}()

	lastTouch := map[int]pglogrepl.LSN{} // run -> position before the last transaction that changed it
	rounds, truncated := 0, 0
	lastTruncate := time.Now() // one a second
	var migrationErr error
	// Until the slots have moved and every TRUNCATE has run.
	for done := false; !done || truncated < truncates; {
		select {
		case migrationErr = <-migrated:
			done = true
		default:
		}
		rounds++
		// A reader caches every run, then the rows change: one
		// transaction for each third of the runs.
		setAll(t, cc, runKeysOf(load)...)
		for part := range 3 {
			before := e.lsn()
			var values []string
			for j, i := range load {
				if j%3 == part {
					values = append(values, fmt.Sprintf("(%d, 's', 'h')", i))
					lastTouch[i] = before
				}
			}
			e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ` + strings.Join(values, ", "))
		}
		checkRuns(t, cc, fmt.Sprintf("round %d", rounds), load, lastTouch)

		if time.Since(lastTruncate) > time.Second && truncated < truncates {
			lastTruncate = time.Now()
			// Keys and revisions only a pattern reaches.
			by := bystanders[truncated*perTruncate : (truncated+1)*perTruncate]
			truncated++
			setAll(t, cc, runKeysOf(by)...)
			for _, i := range by {
				if err := cc.Set(ctx, runKey(i)+":rev", "0/1", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			before := e.lsn()
			e.write(`TRUNCATE climate_runs`)
			for _, i := range append(slices.Clone(load), by...) {
				lastTouch[i] = before
			}
			checkRuns(t, cc, fmt.Sprintf("TRUNCATE %d", truncated), by, lastTouch)
			checkRuns(t, cc, fmt.Sprintf("TRUNCATE %d", truncated), load, lastTouch)
		}
		if t.Failed() {
			break
		}
	}
	if migrationErr != nil {
		t.Fatal(migrationErr)
	}
	took := time.Since(start)
	for _, m := range holds {
		if err := m.Finish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	end := e.lsn()
	e.waitConfirmed(end, 30*time.Second)
	checkRuns(t, cc, "at the end", append(slices.Clone(load), bystanders[:truncated*perTruncate]...), lastTouch)

	// The migration overlapped the load, and cdcd met the redirections.
	if err := cl.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	asking, movedReplies := serverRedirects(t, []*testenv.Redis{src.Master, dst.Master, shards[2].Master})
	cdcdAsking, cdcdMoved := asking-int(hooks.asking.Load()), movedReplies-int(hooks.moved.Load())
	t.Logf("%d slots held half moved, %d slots, %d keys moved in %s; %d load rounds, %d truncates; ASKING: %d by cdcd (%d in all); MOVED: %d to cdcd (%d in all); failed attempts: %v redis sink, %d pattern",
		len(holds), len(slots), moved.Load(), took.Round(time.Millisecond), rounds, truncated,
		cdcdAsking, asking, cdcdMoved, movedReplies, d.metric("cdcd_sink_errors_total", "sink=redis"),
		len(d.logEntries("pattern invalidation failed")))
	// A failed attempt is retried, but a redirection is no failure: the
	// client follows it. TRYAGAIN (a command whose keys are on both
	// masters for a moment) is one.
	for _, m := range append(d.logEntries("apply plan to redis"), d.logEntries("pattern invalidation failed")...) {
		msg := fmt.Sprint(m["err"])
		if strings.Contains(msg, "ASK ") || strings.Contains(msg, "MOVED ") {
			t.Errorf("cdcd did not follow a redirection: %s: %s", m["msg"], msg)
		} else {
			t.Logf("retried: %s: %s", m["msg"], msg)
		}
	}
	if moved.Load() == 0 || rounds < 10 {
		t.Errorf("the migration did not overlap the load: %d keys moved, %d rounds", moved.Load(), rounds)
	}
	if cdcdAsking <= 0 {
		t.Errorf("cdcd sent no ASKING: it never met a slot half moved")
	}
	if cdcdMoved <= 0 {
		t.Errorf("cdcd got no MOVED: it never met a slot that had moved")
	}
}

func runKey(i int) string { return fmt.Sprintf("nodb:%d:climate", i) }

func runKeysOf(runs []int) []string {
	keys := make([]string, len(runs))
	for j, i := range runs {
		keys[j] = runKey(i)
	}
	return keys
}

// checkRuns waits until every run's key is gone and its revision is at or
// past the position before the last transaction that changed it.
func checkRuns(t *testing.T, c redis.UniversalClient, what string, runs []int, lastTouch map[int]pglogrepl.LSN) {
	t.Helper()
	ctx := context.Background()
	var stale []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		stale = stale[:0]
		for _, i := range runs {
			if n, err := c.Exists(ctx, runKey(i)).Result(); err != nil || n != 0 {
				stale = append(stale, fmt.Sprintf("%s cached (%v)", runKey(i), err))
			}
			rev, err := c.Get(ctx, runKey(i)+":rev").Result()
			at, perr := pglogrepl.ParseLSN(rev)
			if err != nil || perr != nil || at < lastTouch[i] {
				stale = append(stale, fmt.Sprintf("%s:rev = %q (%v), want at least %s", runKey(i), rev, err, lastTouch[i]))
			}
		}
		if len(stale) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %d stale after 20s: %s", what, len(stale), strings.Join(stale, "; "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
