package integration

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// The fault suite: rounds of fill keys → write load → fault → catch up →
// check that every key whose row changed after it was filled is gone.
// CDCD_CHAOS_ROUNDS sets the number of rounds (make chaos runs more).

// fault breaks something during a round's write load and heals it.
type fault struct {
	name string
	// inject runs while the load writes; it must leave cdcd running and
	// every server healthy when it returns.
	inject func(t *testing.T, c *chaos)
}

// chaos is the world of the fault suite: cdcd reaches Postgres through a
// proxy whose connections can be cut, and writes to redis.
type chaos struct {
	e      *env
	proxy  *testenv.Proxy
	dbURL  string // through the proxy
	redis  *chaosRedis
	active *daemon
	extra  []string
	round  int // counted from 0
}

// chaosRedis is the Redis a fault suite runs over: the shared standalone
// server, or a Cluster or Sentinel group of the suite's own.
type chaosRedis struct {
	mode string // CDCD_REDIS_MODE; "" with url "": the shared server
	url  string // CDCD_REDIS_URL
	// client reads and fills keys where cdcd deletes them: the Cluster's
	// masters, the Sentinel group's primary.
	client   redis.UniversalClient
	cluster  *testenv.RedisCluster
	sentinel *testenv.RedisSentinel
	// A fault that leaves this Redis unfit for another round sets spent;
	// the next round starts cdcd afresh on renew's Redis (stop ends this
	// one first).
	spent bool
	renew func() *chaosRedis
	stop  func()
}

// env returns the variables that point cdcd at r.
func (r *chaosRedis) env() []string {
	if r.url == "" {
		return nil
	}
	return []string{"CDCD_REDIS_MODE=" + r.mode, "CDCD_REDIS_URL=" + r.url}
}

func (c *chaos) start(t *testing.T) *daemon {
	t.Helper()
	saved := c.e.dbURL
	c.e.dbURL = c.dbURL
	defer func() { c.e.dbURL = saved }()
	return c.e.startDaemon(append(c.redis.env(), c.extra...)...)
}

func (c *chaos) spawn(t *testing.T) *daemon {
	t.Helper()
	saved := c.e.dbURL
	c.e.dbURL = c.dbURL
	defer func() { c.e.dbURL = saved }()
	return c.e.spawn(append(c.redis.env(), c.extra...)...)
}

// renewRedis moves cdcd to a new Redis in place of a spent one, before a
// round fills its keys there.
func (c *chaos) renewRedis(t *testing.T) {
	t.Helper()
	c.active.kill()
	c.redis.stop()
	c.redis = c.redis.renew()
	c.active = c.start(t)
	c.e.waitConfirmed(c.e.lsn(), 60*time.Second)
}

// readOnlyThenKill: Redis refuses writes and cdcd dies before it comes
// back: whatever it held must not have been acknowledged.
var readOnlyThenKill = fault{"redis read-only, then kill -9", func(t *testing.T, c *chaos) {
	promote := readOnly(t)
	time.Sleep(2500 * time.Millisecond)
	_ = c.active.cmd.Process.Signal(syscall.SIGKILL)
	<-c.active.done
	promote()
	c.active = c.start(t)
}}

var faults = []fault{
	{"kill -9 of cdcd", func(t *testing.T, c *chaos) {
		c.active.kill()
		time.Sleep(500 * time.Millisecond)
		c.active = c.start(t)
	}},
	{"postgres fast restart", func(t *testing.T, c *chaos) {
		if err := pg.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
	}},
	{"redis read-only", func(t *testing.T, c *chaos) {
		promote := readOnly(t)
		time.Sleep(2 * time.Second)
		promote()
	}},
	{"redis restarted empty", func(t *testing.T, c *chaos) {
		if err := rds.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
	}},
	{"redis frozen past the client timeout", func(t *testing.T, c *chaos) {
		if err := rds.Pause(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Second)
		if err := rds.Resume(); err != nil {
			t.Fatal(err)
		}
	}},
	{"network to postgres cut", func(t *testing.T, c *chaos) {
		c.proxy.Cut()
		time.Sleep(2 * time.Second)
		c.proxy.Restore()
	}},
	readOnlyThenKill,
	{"replication link went silent", func(t *testing.T, c *chaos) {
		c.proxy.Blackhole()
		c.active.waitUnready(15*time.Second, "silent")
		c.proxy.Restore()
	}},
	{"server behind the address switched", func(t *testing.T, c *chaos) {
		// Another server, then back: each switch is a gap, and the first
		// server's slot resumes where cdcd last confirmed it.
		two := startSecondServer(t, c.e)
		gaps := c.active.metric("cdcd_gap_invalidations_total", "reason=system_identifier_changed")
		c.proxy.Switch(fmt.Sprintf("127.0.0.1:%d", two.pg.Port))
		waitFor(t, 30*time.Second, "the switch to be seen", func() bool {
			return c.active.metric("cdcd_gap_invalidations_total", "reason=system_identifier_changed") > gaps
		})
		c.proxy.Switch(fmt.Sprintf("127.0.0.1:%d", pg.Port))
		waitFor(t, 30*time.Second, "the switch back to be seen", func() bool {
			return c.active.metric("cdcd_gap_invalidations_total", "reason=system_identifier_changed") > gaps+1
		})
	}},
	{"two instances racing for the slot", func(t *testing.T, c *chaos) {
		other := c.spawn(t)
		time.Sleep(time.Second)
		c.active.kill()
		other.waitReady(20 * time.Second)
		c.active = other
	}},
}

// writeLoad commits single-row transactions until stopped, riding out
// server restarts. The n-th write inserts a row for run base+n, or moves an
// existing row to it (changing its old run too), so each run is first
// touched once: a lost transaction is not hidden by a later one. It records
// the runs whose transaction certainly committed.
type writeLoad struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	changed map[int]bool
}

func startWriteLoad(e *env, base, max int) *writeLoad {
	w := &writeLoad{stop: make(chan struct{}), done: make(chan struct{}), changed: map[int]bool{}}
	go func() {
		defer close(w.done)
		ctx := context.Background()
		for n := 1; n <= max; {
			select {
			case <-w.stop:
				return
			default:
			}
			run := base + n
			touched := []int{run}
			var err error
			if n%3 != 0 {
				_, err = e.db.Exec(ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 's', 'h')`, run)
			} else {
				var from int
				err = e.db.QueryRow(ctx, `UPDATE climate_runs c SET run_id = $1
					FROM (SELECT id, run_id FROM climate_runs WHERE run_id > $2 ORDER BY id DESC LIMIT 1 FOR UPDATE) old
					WHERE c.id = old.id RETURNING old.run_id`, run, base).Scan(&from)
				if errors.Is(err, pgx.ErrNoRows) {
					err = nil
				}
				touched = append(touched, from)
			}
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			w.mu.Lock()
			for _, r := range touched {
				if r > base {
					w.changed[r] = true
				}
			}
			w.mu.Unlock()
			n++
			time.Sleep(time.Millisecond)
		}
	}()
	return w
}

func (w *writeLoad) finish() map[int]bool {
	close(w.stop)
	<-w.done
	return w.changed
}

func chaosRounds(t *testing.T) int { return roundsFrom(t, "CDCD_CHAOS_ROUNDS", 3*len(faults)) }

// roundsFrom returns the number of rounds the variable name sets, def
// when it is unset.
func roundsFrom(t *testing.T, name string, def int) int {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return n
	}
	return def
}

// runChaos runs rounds and returns the number of stale keys found.
func runChaos(t *testing.T, c *chaos, faultsToRun []fault, rounds int) int {
	const perRound = 20000
	stale := 0
	for round := 0; round < rounds; round++ {
		c.round = round
		if c.redis.spent {
			c.renewRedis(t)
		}
		f := faultsToRun[round%len(faultsToRun)]
		base := round * perRound
		setKeys(t, c.redis.client, runKeys(base+1, base+perRound)...)
		w := startWriteLoad(c.e, base, perRound)
		time.Sleep(500 * time.Millisecond)
		start := time.Now()
		f.inject(t, c)
		time.Sleep(500 * time.Millisecond)
		changed := w.finish()
		c.active.waitReady(30 * time.Second)
		c.e.waitConfirmed(c.e.lsn(), 60*time.Second)
		var stillCached []string
		for run := range changed {
			stillCached = append(stillCached, fmt.Sprintf("nodb:%d:climate", run))
		}
		n := countCached(t, c.redis.client, stillCached)
		t.Logf("round %d: %-41s %5d runs changed, %d stale keys (fault took %s, %v gaps so far)", round+1, f.name, len(changed), n,
			time.Since(start).Round(time.Millisecond), c.active.metric("cdcd_gap_invalidations_total"))
		stale += n
	}
	return stale
}

// countCached returns how many of keys are cached, reading through c.
func countCached(t *testing.T, c redis.UniversalClient, keys []string) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 1000)]
		keys = keys[len(batch):]
		pipe := c.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.Exists(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("EXISTS: %v", err)
		}
		for _, cmd := range cmds {
			n += int(cmd.Val())
		}
	}
	return n
}

// newChaos runs the fault suite over the shared standalone Redis.
func newChaos(t *testing.T, extra ...string) *chaos {
	t.Helper()
	return newChaosOver(t, nil, extra...)
}

// newChaosOver runs the fault suite over r (nil: the shared standalone
// Redis).
func newChaosOver(t *testing.T, r *chaosRedis, extra ...string) *chaos {
	t.Helper()
	e := newEnv(t)
	if r == nil {
		r = &chaosRedis{client: e.rdb}
	}
	proxy := testenv.MustProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port))
	// A silent link is noticed in seconds, not the default minute.
	extra = append([]string{"CDCD_REPLICATION_SILENCE_TIMEOUT=3s"}, extra...)
	c := &chaos{e: e, proxy: proxy, redis: r, extra: extra,
		dbURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", proxy.Port, dbNameOf(e.dbURL))}
	c.active = c.start(t)
	return c
}

func dbNameOf(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		panic(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestFaultSuite(t *testing.T) {
	c := newChaos(t)
	rounds := chaosRounds(t)
	if stale := runChaos(t, c, faults, rounds); stale > 0 {
		t.Errorf("%d stale keys over %d rounds", stale, rounds)
	}
}

// The checker catches a daemon that acknowledges before applying: the same
// suite, against a build made to do exactly that, must find stale keys.
func TestFaultSuiteCatchesAckBeforeApply(t *testing.T) {
	useBrokenBuild(t, "cdcd_ackfirst")
	c := newChaos(t)
	if stale := runChaos(t, c, []fault{readOnlyThenKill}, 3); stale == 0 {
		t.Fatal("the checker found no stale key in a daemon that acknowledges before applying")
	}
}

// useBrokenBuild has the rest of t run a cdcd built with a tag that
// breaks it on purpose.
func useBrokenBuild(t *testing.T, tag string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cdcd-"+tag)
	build := exec.Command("go", "build", "-tags", tag, "-o", bin, "./cmd/cdcd")
	build.Dir = repoDir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	saved := binary
	binary = bin
	t.Cleanup(func() { binary = saved })
}
