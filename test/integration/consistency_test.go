package integration

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdcd/cdcd/readthrough"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The consistency harness (docs/consistency.md): writers, readers that
// pause between their database read and their fill, and faults (kill -9 of
// cdcd, Redis restarted empty). At quiescence every cached value must equal
// the database's. During the run it measures the share of reads that
// returned a value older than the database's by more than T. A control run
// with plain GET/SET fills must leave stale values, or the harness could
// not see them.
//
// CDCD_CONSISTENCY_SECONDS sets the guarded run's length (default 12;
// make consistency runs longer).

const consistencySchema = `
CREATE TABLE cons_items (id int PRIMARY KEY, bucket int NOT NULL, val bigint NOT NULL DEFAULT 0);
INSERT INTO cons_items (id, bucket) SELECT g, g % 5 FROM generate_series(1, 40) g;
ALTER PUBLICATION cdcd ADD TABLE cons_items;`

// Every UPDATE invalidates its item exactly and, as the table keeps only
// the primary key of old rows (REPLICA IDENTITY DEFAULT), every bucket by
// pattern: both of cdcd's paths run all the time.
const consistencyRules = `{
  "sections": {
    "item":   { "keys": ["item:{id}"], "revision": "rev:item:{id}" },
    "bucket": { "keys": ["bucket:{bucket}"], "revision": "rev:bucket:{bucket}" }
  },
  "rules": [{ "name": "items", "tables": ["public.cons_items"], "invalidate": ["item", "bucket"] }]
}`

func TestConsistency(t *testing.T) {
	seconds := 12
	if s := os.Getenv("CDCD_CONSISTENCY_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 6 {
			t.Fatalf("CDCD_CONSISTENCY_SECONDS=%q: want a number of seconds, at least 6", s)
		}
		seconds = n
	}
	// Redis standalone, restarted empty as its fault; and under Sentinel,
	// failed over as its fault, the first time losing writes.
	t.Run("standalone", func(t *testing.T) {
		e := newEnv(t)
		consistency(t, e, standaloneRedis(e), seconds)
	})
	t.Run("sentinel", func(t *testing.T) {
		consistency(t, newEnv(t), consSentinelRedis(t), seconds)
	})
}

// consistency runs the control, then guarded readers without and with
// faults, through rd.
func consistency(t *testing.T, e *env, rd *consRedis, seconds int) {
	e.exec(consistencySchema)
	e.rules = filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(e.rules, []byte(consistencyRules), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = consWriters + consReaders + 4
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	h := &harness{e: e, pool: pool, redis: rd, d: e.startDaemon(rd.env...)}
	// The calm runs (no faults) last a sixth of the faulty one, 5 s at least.
	calm := max(5*time.Second, time.Duration(seconds)*time.Second/6)

	// The control first: plain fills, no faults. A few rounds at most, in
	// case one ends with every key's last fill after its last write.
	var control result
	for round := 1; round <= 3 && control.staleAtRest == 0; round++ {
		control = h.run(t, calm, nil, false)
	}
	t.Logf("control, plain GET/SET fills, no faults: %s", control.summary())
	t.Logf("  cdcd: %s", lagShares(t, h.d))
	if control.staleAtRest == 0 {
		t.Fatal("the control left no stale value: the harness cannot see the race it is meant to catch")
	}

	// Guarded readers: one cache fills by compare-and-set, the other by
	// set-then-check; first without faults, then with.
	for _, faults := range []bool{false, true} {
		reg := prometheus.NewRegistry()
		var caches []*readthrough.Cache
		for i, opts := range [][]readthrough.Option{nil, {readthrough.WithSetThenCheck()}} {
			c, err := readthrough.New(rd.rdb, e.rules, append(opts, readthrough.WithRegisterer(
				prometheus.WrapRegistererWith(prometheus.Labels{"cache": strconv.Itoa(i)}, reg)))...)
			if err != nil {
				t.Fatal(err)
			}
			caches = append(caches, c)
		}
		d, name := calm, "guarded readers, no faults"
		if faults {
			d, name = time.Duration(seconds)*time.Second, "guarded readers, with faults"
		}
		guarded := h.run(t, d, caches, faults)
		t.Logf("%s: %s", name, guarded.summary())
		t.Logf("  fills: %s", fillCounts(t, reg))
		t.Logf("  cdcd (since its last restart): %s", lagShares(t, h.d))
		if guarded.staleAtRest != 0 {
			t.Errorf("%s: %d keys stale at rest: %s", name, guarded.staleAtRest, strings.Join(guarded.staleKeys, ", "))
		}
		if guarded.reads == 0 || faults && len(guarded.faults) == 0 {
			t.Errorf("%s: %d reads under %d faults", name, guarded.reads, len(guarded.faults))
		}
	}
}

// fillCounts sums the caches' fill counters.
func fillCounts(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			name := strings.TrimPrefix(strings.TrimSuffix(f.GetName(), "_total"), "cdcd_readthrough_")
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					name += "{" + l.GetValue() + "}"
				}
			}
			sums[name] += m.GetCounter().GetValue()
		}
	}
	return fmt.Sprintf("hits %.0f, misses %.0f, stored %.0f, refused: revision moved %.0f, error %.0f",
		sums["hits"], sums["misses"], sums["fills_stored"], sums["fills_refused{revision_moved}"], sums["fills_refused{error}"])
}

// thresholds are the staleness bounds the run reports in nines.
var thresholds = []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second}

// result is what one run saw.
type result struct {
	duration    time.Duration
	reads       int
	errors      int
	faults      []string // in order
	gaps        int      // of reason redis_lost_writes
	older       []int    // per threshold: reads older than the database by more than it
	keys        int      // cached at rest
	staleAtRest int
	staleKeys   []string
}

func (r result) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d faults%s, %d gaps for lost Redis writes; stale at rest: %d of %d cached keys; %d reads (%d failed)",
		r.duration.Round(time.Second), len(r.faults), faultCounts(r.faults), r.gaps, r.staleAtRest, r.keys, r.reads, r.errors)
	for i, T := range thresholds {
		fmt.Fprintf(&b, "; older by > %v: %d (%s)", T, r.older[i], nines(r.older[i], r.reads))
	}
	return b.String()
}

// faultCounts says how many faults of each kind there were: " (2 × kill -9
// of cdcd, 2 × Redis restarted empty)".
func faultCounts(faults []string) string {
	if len(faults) == 0 {
		return ""
	}
	n := map[string]int{}
	var kinds []string
	for _, f := range faults {
		if n[f] == 0 {
			kinds = append(kinds, f)
		}
		n[f]++
	}
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = fmt.Sprintf("%d × %s", n[k], k)
	}
	return " (" + strings.Join(out, ", ") + ")"
}

// nines renders the share of good reads as nines: 99.9% is 3.0 nines.
// With no bad read it says how many reads bound it.
func nines(bad, total int) string {
	if total == 0 {
		return "no reads"
	}
	if bad == 0 {
		return fmt.Sprintf(">= %.1f nines", math.Log10(float64(total)))
	}
	return fmt.Sprintf("%.1f nines", -math.Log10(float64(bad)/float64(total)))
}

// waitCaughtUp waits until cdcd confirmed everything written so far.
func (h *harness) waitCaughtUp(t *testing.T) {
	t.Helper()
	h.e.waitConfirmed(h.e.lsn(), 60*time.Second)
}

// checkAtRest compares every cached key with the database.
func (h *harness) checkAtRest(t *testing.T, r *result) {
	t.Helper()
	ctx := context.Background()
	for _, key := range h.keys() {
		v, err := h.redis.rdb.Get(ctx, key).Result()
		if err != nil {
			continue // not cached
		}
		r.keys++
		if want := h.load(ctx, key); v != want {
			r.staleAtRest++
			rev := "rev:" + key
			r.staleKeys = append(r.staleKeys, fmt.Sprintf("%s=%s (database %s, %s=%s)",
				key, v, want, rev, h.redis.rdb.Get(ctx, rev).Val()))
		}
	}
}

// lagShares reads cdcd's commit-to-invalidate histogram: how many
// transactions took longer than each threshold, which bounds how stale a
// cached value can be read.
func lagShares(t *testing.T, d *daemon) string {
	t.Helper()
	code, body, err := d.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	fam, ok := fams["cdcd_commit_to_invalidate_seconds"]
	if !ok || len(fam.GetMetric()) == 0 {
		return "no transactions"
	}
	h := fam.GetMetric()[0].GetHistogram()
	total := h.GetSampleCount()
	out := []string{fmt.Sprintf("%d transactions", total)}
	for _, T := range thresholds {
		within := uint64(0)
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() <= T.Seconds() {
				within = b.GetCumulativeCount()
			}
		}
		out = append(out, fmt.Sprintf("commit to invalidation > %v: %d", T, total-within))
	}
	return strings.Join(out, ", ")
}
