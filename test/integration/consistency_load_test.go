package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdcd/cdcd/readthrough"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

const (
	consItems   = 40
	consBuckets = 5
	consWriters = 3
	consReaders = 6
	// A reader waits between its database read and its fill, usually up
	// to shortPause, sometimes up to longPause: the window the stale-set
	// race needs must sometimes outlast cdcd's lag on a busy machine.
	shortPause = 20 * time.Millisecond
	longPause  = 500 * time.Millisecond
)

// pause returns how long a reader waits between its read and its fill.
func pause() time.Duration {
	if rand.IntN(10) == 0 {
		return rand.N(longPause)
	}
	return rand.N(shortPause)
}

// harness drives load against e's database, Redis and cdcd.
type harness struct {
	e     *env
	pool  *pgxpool.Pool
	redis *consRedis
	d     *daemon
	gaps  float64 // gaps of reason redis_lost_writes of the cdcd processes killed

	mu      sync.Mutex
	commits map[int][]time.Time // per item: commits[id][v] is when val became v+1
	reads   []itemRead
}

// itemRead is one read of an item: when it started and what it returned.
type itemRead struct {
	id    int
	val   int64
	start time.Time
}

func (h *harness) keys() []string {
	var out []string
	for id := 1; id <= consItems; id++ {
		out = append(out, fmt.Sprintf("item:%d", id))
	}
	for b := 0; b < consBuckets; b++ {
		out = append(out, fmt.Sprintf("bucket:%d", b))
	}
	return out
}

// load reads key's value from the database.
func (h *harness) load(ctx context.Context, key string) string {
	kind, n, _ := strings.Cut(key, ":")
	q := `SELECT val::text FROM cons_items WHERE id = $1`
	if kind == "bucket" {
		q = `SELECT sum(val)::text FROM cons_items WHERE bucket = $1`
	}
	var v string
	if err := h.pool.QueryRow(ctx, q, n).Scan(&v); err != nil {
		return "error: " + err.Error()
	}
	return v
}

// run drives writers and readers for d, with faults when asked, then
// stops the writers, lets cdcd catch up and the readers finish, and checks
// the cache at rest. caches nil: plain GET/SET readers.
func (h *harness) run(t *testing.T, d time.Duration, caches []*readthrough.Cache, faults bool) result {
	t.Helper()
	h.forget(t)
	h.commits = make(map[int][]time.Time)
	h.reads = nil
	var r result
	gaps := h.lostWriteGaps()
	start := time.Now()
	writeCtx, stopWriters := context.WithCancel(context.Background())
	readCtx, stopReaders := context.WithCancel(context.Background())
	var writers, readers sync.WaitGroup
	for range consWriters {
		writers.Go(func() { h.write(writeCtx) })
	}
	var errs sync.Map
	for i := range consReaders {
		readers.Go(func() {
			var c *readthrough.Cache
			if caches != nil {
				c = caches[i%len(caches)]
			}
			errs.Store(i, h.read(readCtx, c))
		})
	}
	if faults {
		r.faults = h.inject(t, d)
	} else {
		time.Sleep(d)
	}
	stopWriters()
	writers.Wait()
	h.waitCaughtUp(t)
	stopReaders()
	readers.Wait()
	h.waitCaughtUp(t)
	r.duration = time.Since(start)
	r.gaps = int(h.lostWriteGaps() - gaps)
	errs.Range(func(_, v any) bool { r.errors += v.(int); return true })
	h.measure(&r)
	h.checkAtRest(t, &r)
	return r
}

// lostWriteGaps counts the gaps of reason redis_lost_writes of every cdcd
// process so far.
func (h *harness) lostWriteGaps() float64 {
	return h.gaps + h.d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes")
}

// forget deletes the cached values and revisions of an earlier run (not
// cdcd's recorded state).
func (h *harness) forget(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, pattern := range []string{"item:*", "bucket:*", "rev:*"} {
		keys, err := h.redis.rdb.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 0 {
			h.redis.rdb.Del(ctx, keys...)
		}
	}
}

// inject spreads faults over d: every 20 s (at least once), cdcd is killed
// with SIGKILL and restarted, then Redis has its fault (consRedis).
func (h *harness) inject(t *testing.T, d time.Duration) (faults []string) {
	t.Helper()
	end := time.Now().Add(d)
	for cycle := min(d, 20*time.Second); time.Until(end) > 0; {
		time.Sleep(min(cycle/3, time.Until(end)))
		h.gaps += h.d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes")
		h.d.kill()
		time.Sleep(500 * time.Millisecond)
		h.d = h.e.startDaemon(h.redis.env...)
		t.Logf("%s: cdcd killed (SIGKILL) and restarted", now())
		faults = append(faults, "kill -9 of cdcd")
		time.Sleep(min(cycle/3, max(time.Until(end), 0)))
		faults = append(faults, h.redis.fault(t, h, len(faults)/2))
		time.Sleep(min(cycle/3, max(time.Until(end), 0)))
	}
	return faults
}

// write increments random items until ctx ends, recording when each new
// value was committed (the statement returns after its commit).
func (h *harness) write(ctx context.Context) {
	for ctx.Err() == nil {
		id := 1 + rand.IntN(consItems)
		var val int64
		err := h.pool.QueryRow(ctx, `UPDATE cons_items SET val = val + 1 WHERE id = $1 RETURNING val`, id).Scan(&val)
		at := time.Now()
		if err == nil {
			h.mu.Lock()
			c := h.commits[id]
			for int64(len(c)) < val {
				c = append(c, time.Time{})
			}
			c[val-1] = at
			h.commits[id] = c
			h.mu.Unlock()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// read reads random keys until ctx ends, through c or, when c is nil, with
// a plain GET and SET; it returns how many reads failed.
func (h *harness) read(ctx context.Context, c *readthrough.Cache) (failed int) {
	for ctx.Err() == nil {
		keys := h.keys()
		key := keys[rand.IntN(len(keys))]
		start := time.Now()
		load := func(ctx context.Context) ([]byte, error) {
			v := h.load(ctx, key)
			if strings.HasPrefix(v, "error") {
				return nil, errors.New(v)
			}
			time.Sleep(pause())
			return []byte(v), nil
		}
		var v []byte
		var err error
		if c != nil {
			v, err = c.Get(ctx, key, load)
		} else {
			v, err = h.plainGet(ctx, key, load)
		}
		if err != nil {
			if ctx.Err() == nil {
				failed++
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		time.Sleep(time.Millisecond) // leave the machine's cores to cdcd
		if id, ok := strings.CutPrefix(key, "item:"); ok {
			n, _ := strconv.Atoi(id)
			val, _ := strconv.ParseInt(string(v), 10, 64)
			h.mu.Lock()
			h.reads = append(h.reads, itemRead{id: n, val: val, start: start})
			h.mu.Unlock()
		}
	}
	return failed
}

// plainGet is the reader the protocol replaces: GET, else load and SET.
func (h *harness) plainGet(ctx context.Context, key string, load func(context.Context) ([]byte, error)) ([]byte, error) {
	v, err := h.redis.rdb.Get(ctx, key).Bytes()
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, redis.Nil) {
		return nil, err
	}
	if v, err = load(ctx); err != nil {
		return nil, err
	}
	return v, h.redis.rdb.Set(ctx, key, v, 0).Err()
}

// measure counts the item reads that returned a value older than the
// database's by more than each threshold: the next value had committed
// that long before the read started.
func (h *harness) measure(r *result) {
	r.older = make([]int, len(thresholds))
	for _, rd := range h.reads {
		r.reads++
		c := h.commits[rd.id]
		if rd.val >= int64(len(c)) || c[rd.val].IsZero() {
			continue // the value read was the latest
		}
		age := rd.start.Sub(c[rd.val])
		for i, T := range thresholds {
			if age > T {
				r.older[i]++
			}
		}
	}
}
