package readthrough_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcd/cdcd/readthrough"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

func newCache(t *testing.T, rdb *redis.Client, path string, opts ...readthrough.Option) (*readthrough.Cache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := readthrough.New(rdb, path, append(opts, readthrough.WithRegisterer(reg))...)
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

// counter returns the value of a metric of reg (summed over labels that
// match labels).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() != labels[i+1] {
						continue next
					}
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func value(v string) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return []byte(v), nil }
}

func cached(t *testing.T, rdb *redis.Client, key string) (string, bool) {
	t.Helper()
	v, err := rdb.Get(t.Context(), key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

func TestGetFillsThenHits(t *testing.T) {
	rdb, path := setup(t)
	c, reg := newCache(t, rdb, path, readthrough.WithTTL(time.Minute))
	v, err := c.Get(t.Context(), "item:1", value("one"))
	if err != nil || string(v) != "one" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	v, err = c.Get(t.Context(), "item:1", func(context.Context) ([]byte, error) {
		t.Fatal("load called on a hit")
		return nil, nil
	})
	if err != nil || string(v) != "one" {
		t.Fatalf("second Get = %q, %v", v, err)
	}
	if ttl := rdb.PTTL(t.Context(), "item:1").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("TTL %v, want about a minute", ttl)
	}
	// The revisions exist now, holding a token that is not an LSN.
	for _, rev := range []string{"rev:item:1", "rev:owners"} {
		if tok, ok := cached(t, rdb, rev); !ok || tok[:3] != "rt:" {
			t.Errorf("revision %s = %q, %v", rev, tok, ok)
		}
	}
	for name, want := range map[string]float64{
		"cdcd_readthrough_hits_total": 1, "cdcd_readthrough_misses_total": 1,
		"cdcd_readthrough_fills_stored_total": 1, "cdcd_readthrough_fills_refused_total": 0,
	} {
		if got := counter(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// The stale-set race, forced: a write commits and cdcd invalidates while
// the reader holds what it read before. The old value is returned (it was
// current when read) but never stored.
func TestForcedRaceIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []readthrough.Option
	}{
		{"compare and set", nil},
		{"set then check", []readthrough.Option{readthrough.WithSetThenCheck()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb, path := setup(t)
			c, reg := newCache(t, rdb, path, tc.opts...)
			cdcd := &fakeCDCD{t: t, rdb: rdb}
			cdcd.commit([]string{"rev:item:7"}) // the revision holds an LSN already
			db := "old"
			v, err := c.Get(t.Context(), "item:7", func(context.Context) ([]byte, error) {
				read := db
				db = "new"
				cdcd.commit([]string{"rev:item:7"}, "item:7")
				return []byte(read), nil
			})
			if err != nil || string(v) != "old" {
				t.Fatalf("Get = %q, %v", v, err)
			}
			if got, ok := cached(t, rdb, "item:7"); ok {
				t.Fatalf("the stale value %q was stored", got)
			}
			if n := counter(t, reg, "cdcd_readthrough_fills_refused_total", "reason", readthrough.RefusedRevisionMoved); n != 1 {
				t.Errorf("refused fills %v, want 1", n)
			}
			// The next miss reads the new value and stores it.
			if v, _ := c.Get(t.Context(), "item:7", value(db)); string(v) != "new" {
				t.Fatalf("Get after = %q", v)
			}
			if got, _ := cached(t, rdb, "item:7"); got != "new" {
				t.Fatalf("cached %q, want new", got)
			}
		})
	}
}

// A pattern invalidation moves only the revisions that exist: the reader
// must have created its revision before it read the database.
func TestForcedRaceUnderAPatternIsRefused(t *testing.T) {
	rdb, path := setup(t)
	c, _ := newCache(t, rdb, path)
	cdcd := &fakeCDCD{t: t, rdb: rdb}
	raceStale(t, c, rdb, "list:ann:2", func() { cdcd.commitPattern("rev:list:*", "list:*") }) // a truncate
}

// A key two sections claim is guarded by both revisions.
func TestEveryCoveringRevisionGuards(t *testing.T) {
	rdb, path := setup(t)
	c, _ := newCache(t, rdb, path)
	cdcd := &fakeCDCD{t: t, rdb: rdb}
	raceStale(t, c, rdb, "item:3", func() {
		cdcd.commit([]string{"rev:owners"}, "item:3") // only the other section's revision
	})
}

// raceStale gets key with a load that reads "stale", then runs commit (a
// write and its invalidation), and checks that nothing was stored.
func raceStale(t *testing.T, c *readthrough.Cache, rdb *redis.Client, key string, commit func()) {
	t.Helper()
	if _, err := c.Get(t.Context(), key, func(context.Context) ([]byte, error) {
		commit()
		return []byte("stale"), nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, ok := cached(t, rdb, key); ok {
		t.Fatalf("%s: the stale value %q was stored", key, got)
	}
}

// A key that reads two ways is guarded by the revision of each reading.
func TestAmbiguousKeyIsGuardedByEveryReading(t *testing.T) {
	rdb, path := setup(t)
	c, _ := newCache(t, rdb, path)
	cdcd := &fakeCDCD{t: t, rdb: rdb}
	// list:{owner}:{page} reads "list:a:b:c" as owner a or owner a:b.
	for _, rev := range []string{"rev:list:a", "rev:list:a:b"} {
		raceStale(t, c, rdb, "list:a:b:c", func() { cdcd.commit([]string{rev}, "list:a:b:c") })
	}
}

func TestKeysNothingGuards(t *testing.T) {
	rdb, path := setup(t)
	c, _ := newCache(t, rdb, path)
	loads := 0
	load := func(context.Context) ([]byte, error) { loads++; return []byte("v"), nil }
	for key, want := range map[string]error{
		"nobody:1": readthrough.ErrNoSection,
		"bare:1":   readthrough.ErrUnguarded,
		"odd:1":    readthrough.ErrUnguarded, // its revision names a column the key lacks
	} {
		if _, err := c.Get(t.Context(), key, load); !errors.Is(err, want) {
			t.Errorf("Get(%s) = %v, want %v", key, err, want)
		}
	}
	if loads != 0 {
		t.Errorf("load called %d times for keys that cannot be guarded", loads)
	}

	open, _ := newCache(t, rdb, path, readthrough.AllowUnguarded())
	if v, err := open.Get(t.Context(), "bare:1", load); err != nil || string(v) != "v" {
		t.Fatalf("unguarded Get = %q, %v", v, err)
	}
	if _, ok := cached(t, rdb, "bare:1"); !ok {
		t.Error("AllowUnguarded did not store")
	}
	if _, err := open.Get(t.Context(), "nobody:1", load); !errors.Is(err, readthrough.ErrNoSection) {
		t.Errorf("AllowUnguarded filled a key no section names: %v", err)
	}
}

// One load per key at a time: concurrent misses share it.
func TestSingleflight(t *testing.T) {
	rdb, path := setup(t)
	c, _ := newCache(t, rdb, path)
	var loads atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make([]string, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Get(context.Background(), "item:9", func(context.Context) ([]byte, error) {
				loads.Add(1)
				<-release
				return []byte("nine"), nil
			})
			if err != nil {
				t.Error(err)
			}
			results[i] = string(v)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Errorf("%d loads, want 1", n)
	}
	if slices.ContainsFunc(results, func(s string) bool { return s != "nine" }) {
		t.Errorf("results %q", results)
	}
}

// A caller whose own context is live does not inherit the cancellation of
// the caller whose load it shared.
func TestSingleflightSurvivesTheLeadersCancellation(t *testing.T) {
	rdb, path := setup(t)
	c, _ := newCache(t, rdb, path)
	leaderCtx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	go func() {
		_, _ = c.Get(leaderCtx, "item:5", func(ctx context.Context) ([]byte, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		})
	}()
	<-started
	done := make(chan string)
	go func() {
		v, err := c.Get(context.Background(), "item:5", value("five"))
		if err != nil {
			t.Error(err)
		}
		done <- string(v)
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if v := <-done; v != "five" {
		t.Fatalf("follower got %q", v)
	}
}

func TestLoadErrorIsReturned(t *testing.T) {
	rdb, path := setup(t)
	c, _ := newCache(t, rdb, path)
	boom := errors.New("boom")
	if _, err := c.Get(t.Context(), "item:1", func(context.Context) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("Get = %v, want boom", err)
	}
	if _, ok := cached(t, rdb, "item:1"); ok {
		t.Fatal("a failed load stored something")
	}
}

func TestMetricsOnTwoRegistrations(t *testing.T) {
	rdb, path := setup(t)
	reg := prometheus.NewRegistry()
	if _, err := readthrough.New(rdb, path, readthrough.WithRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := readthrough.New(rdb, path, readthrough.WithRegisterer(reg)); err == nil {
		t.Fatal("a second cache registered the same metrics")
	}
	// Several caches: each wraps the registerer with its own label.
	reg = prometheus.NewRegistry()
	for _, name := range []string{"a", "b"} {
		if _, err := readthrough.New(rdb, path, readthrough.WithRegisterer(prometheus.WrapRegistererWith(prometheus.Labels{"cache": name}, reg))); err != nil {
			t.Fatal(err)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "cdcd_readthrough_hits_total" && len(f.GetMetric()) != 2 {
			t.Fatalf("%d hit counters, want 2", len(f.GetMetric()))
		}
	}
}
