package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// patterns: what a pattern invalidation (SCAN + UNLINK over the whole
// keyspace) costs unrelated exact invalidations, and how long the pattern
// itself takes, by the number of unrelated keys in Redis and the rate of
// patterns, under the lag step's background of 1,000 tx/s.
//
// A pattern comes from an UPDATE of climate_runs.run_id under REPLICA
// IDENTITY DEFAULT: the old row is not sent, so the old run's key
// nodb:{run_id}:climate is unknown and cdcd deletes nodb:*:climate. The
// probes are INSERTs into impact_functions (key impact:{id}:v1), which no
// pattern matches, measured as the lag step measures its own.
//
// A pattern's end is seen from outside: just before each pattern UPDATE
// the bench sets patternMarkers keys the pattern matches, and the pattern
// is done when the last of them has been deleted. They lie at random
// places of the keyspace, so the last one goes near the end of the scan
// (on average after 50/51 of it); cdcd_pattern_seconds gives the jobs'
// own time beside it (patterns of several transactions share a job).
const patternMarkers = 50

// patternResult is one cell of the table.
type patternResult struct {
	exact      []time.Duration // probes: commit → UNLINK
	pattern    []time.Duration // finished patterns: commit → the last marker's deletion
	sent       int
	jobs       float64 // pattern jobs cdcd finished
	jobSeconds float64
}

func (b *bench) patterns() error {
	counts, err := intList("-pattern-keys", *patternKeys)
	if err != nil {
		return err
	}
	rates, err := intList("-pattern-rates", *patternRates)
	if err != nil {
		return err
	}
	slices.Sort(counts) // filling only adds keys
	if err := b.exec(`ALTER TABLE climate_runs REPLICA IDENTITY DEFAULT`); err != nil {
		return err
	}
	defer func() { _ = b.exec(`ALTER TABLE climate_runs REPLICA IDENTITY FULL`) }()
	var row int64 // the row whose run_id the pattern UPDATEs move
	if err := b.db.QueryRow(b.ctx, `INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 'pattern', 'h') RETURNING id`).Scan(&row); err != nil {
		return err
	}
	if err := b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		return err
	}
	defer b.rdb.ConfigSet(b.ctx, "notify-keyspace-events", "")
	// What earlier steps left in Redis would count as unrelated keys the
	// table does not name, and the filler would slow the steps after this
	// one: the step starts and ends with an empty database (the bench's
	// Redis is its own).
	if _, err := b.rds.Do(b.ctx, "FLUSHDB"); err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Minute)
		defer cancel()
		if _, err := b.rds.Do(ctx, "FLUSHDB"); err != nil {
			logf("patterns: %v", err)
		}
	}()

	g := grid{
		title: fmt.Sprintf("patterns: %ds of 1,000 tx/s per cell; exact = an unrelated key's commit→UNLINK, pattern = commit→its keys gone", *patternSeconds),
		head:  []string{"keys", "patterns/s", "exact p50", "exact p99", "exact max", "probes", "pattern p50", "pattern p99", "patterns done", "jobs, mean time"},
	}
	filled, cell := 0, 0
	for _, n := range counts {
		if err := b.fill(filled, n); err != nil {
			return err
		}
		filled = max(filled, n)
		for _, rate := range rates {
			r, err := b.patternCell(cell, rate, row)
			if err != nil {
				return fmt.Errorf("%d keys, %d patterns/s: %w", n, rate, err)
			}
			cell++
			g.rows = append(g.rows, r.cells(n, rate))
			if n == 1000000 && rate == 2 {
				b.row("patterns: exact p99, 1M keys, 2 patterns/s", quantile(r.exact, 0.99).String(),
					"target ≤ 5ms; pattern p99 "+quantile(r.pattern, 0.99).String())
			}
		}
	}
	b.grids = append(b.grids, g)
	return nil
}

func (r patternResult) cells(keys, rate int) []string {
	out := []string{strconv.Itoa(keys), strconv.Itoa(rate), quantile(r.exact, 0.5).String(), quantile(r.exact, 0.99).String(),
		quantile(r.exact, 1).String(), strconv.Itoa(len(r.exact))}
	if rate == 0 {
		return append(out, "-", "-", "-", "-")
	}
	mean := "-"
	if r.jobs > 0 {
		mean = (time.Duration(r.jobSeconds / r.jobs * float64(time.Second))).Round(10 * time.Microsecond).String()
	}
	q := func(d []time.Duration, q float64) string {
		if len(d) == 0 {
			return "-"
		}
		return quantile(d, q).String()
	}
	return append(out, q(r.pattern, 0.5), q(r.pattern, 0.99),
		fmt.Sprintf("%d of %d", len(r.pattern), r.sent), fmt.Sprintf("%.0f, %s", r.jobs, mean))
}

// fill brings the unrelated keys other:0 … other:to-1 into Redis (those
// below from are there already): DEBUG POPULATE when the server allows it,
// pipelined MSETs otherwise.
func (b *bench) fill(from, to int) error {
	if to <= from {
		return nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Minute)
	defer cancel()
	if _, err := b.rds.Do(ctx, "DEBUG", "POPULATE", strconv.Itoa(to), "other"); err != nil {
		logf("patterns: DEBUG POPULATE refused (%v); filling with pipelined MSETs", err)
		const batch, depth = 1000, 50
		pipe := b.rdb.Pipeline()
		for i := from; i < to; i += batch {
			kv := make([]any, 0, 2*batch)
			for k := i; k < min(i+batch, to); k++ {
				kv = append(kv, "other:"+strconv.Itoa(k), "value")
			}
			pipe.MSet(ctx, kv...)
			if pipe.Len() == depth || i+batch >= to {
				if _, err := pipe.Exec(ctx); err != nil {
					return fmt.Errorf("fill: %w", err)
				}
			}
		}
	}
	logf("patterns: %d unrelated keys in Redis, filled in %s", to, time.Since(start).Round(time.Millisecond))
	return nil
}

// patternCell measures one cell: a fresh slot and cdcd, the background
// load, probes and rate patterns a second for -pattern-seconds, then a
// wait for the patterns still running.
func (b *bench) patternCell(cell, rate int, row int64) (patternResult, error) {
	var r patternResult
	if err := b.settle(); err != nil {
		return r, err
	}
	slot := fmt.Sprintf("bench_patterns_%d", cell)
	if err := b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		return r, err
	}
	defer func() {
		if err := b.dropSlot(slot); err != nil {
			logf("patterns: %v", err)
		}
	}()
	d, err := b.startCdcd(slot)
	if err != nil {
		return r, err
	}
	defer d.stop()
	time.Sleep(time.Second)
	deleted, closeWatch, err := watchDeletions(b.rds.Addr)
	if err != nil {
		return r, err
	}
	defer closeWatch()
	probes, gone, stopRoute := route(deleted)
	defer stopRoute()
	var lastID int64
	if err := b.db.QueryRow(b.ctx, `SELECT coalesce(max(id), 0) FROM impact_functions`).Scan(&lastID); err != nil {
		return r, err
	}

	bg := b.background(*patternSeconds + 3)
	time.Sleep(2 * time.Second)
	end := time.Now().Add(time.Duration(*patternSeconds) * time.Second)
	type sentResult struct {
		sent []sentPattern
		err  error
	}
	patterns := make(chan sentResult, 1)
	go func() {
		sent, err := b.sendPatterns(cell, rate, row, end)
		patterns <- sentResult{sent, err}
	}()
	probeErr := b.probeUntil(end, probes, lastID, &r.exact)
	sent := <-patterns
	if bgErr := <-bg; probeErr == nil && sent.err == nil {
		probeErr = bgErr
	}
	if probeErr != nil {
		return r, probeErr
	}
	if sent.err != nil {
		return r, sent.err
	}
	r.sent = len(sent.sent)

	// Patterns sent late, or queued behind long scans, may still run.
	deadline := time.Now().Add(max(30*time.Second, 5*time.Duration(*patternSeconds)*time.Second))
	for {
		r.pattern = r.pattern[:0]
		for _, p := range sent.sent {
			if at, ok := gone.last(p.markers); ok {
				r.pattern = append(r.pattern, max(0, at.Sub(p.committed)))
			}
		}
		if len(r.pattern) == r.sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	m := d.metrics()
	r.jobs, r.jobSeconds = m["cdcd_pattern_seconds_count"], m["cdcd_pattern_seconds_sum"]
	if r.sent > 0 && r.jobs == 0 {
		logf("patterns: cdcd ran no pattern job for %d pattern transactions: is climate_runs REPLICA IDENTITY DEFAULT?", r.sent)
	}
	logf("patterns: cell %d, %d/s: exact p99 %s over %d probes; pattern p99 %s, %d of %d done; %.0f jobs, backlog %.0f",
		cell, rate, quantile(r.exact, 0.99), len(r.exact), quantile(r.pattern, 0.99), len(r.pattern), r.sent, r.jobs, m["cdcd_pattern_backlog"])
	return r, nil
}

// probeUntil runs probes (INSERTs into impact_functions, ids after lastID)
// on a connection that commits synchronously, as the lag step's do, until
// end, appending each one's commit→UNLINK to lat.
func (b *bench) probeUntil(end time.Time, probes <-chan deletion, lastID int64, lat *[]time.Duration) error {
	conn, err := b.syncConn()
	if err != nil {
		return err
	}
	defer conn.Release()
	for id := lastID + 1; time.Now().Before(end); id++ {
		t, err := b.probe(conn, probes, fmt.Sprintf("impact:%d:v1", id),
			`INSERT INTO impact_functions (id, name, hazard, intensity_unit, mdd_x, mdd_y, paa_x, paa_y)
			 OVERRIDING SYSTEM VALUE VALUES ($1, 'probe', 'h', 'm', '{0}', '{0}', '{0}', '{0}') RETURNING clock_timestamp()`, id)
		if err != nil {
			return fmt.Errorf("probe %d: %w", id, err)
		}
		*lat = append(*lat, t.lat)
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// sentPattern is one pattern transaction: its commit and the keys it must
// delete.
type sentPattern struct {
	committed time.Time
	markers   []string
}

// sendPatterns commits rate pattern UPDATEs a second until end, each after
// setting its markers. Keys are unique per cell, so a marker left by an
// unfinished pattern of an earlier cell is never counted.
func (b *bench) sendPatterns(cell, rate int, row int64, end time.Time) ([]sentPattern, error) {
	if rate <= 0 {
		return nil, nil
	}
	conn, err := b.syncConn()
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var sent []sentPattern
	for i := 0; ; i++ {
		<-tick.C
		if time.Now().After(end) {
			return sent, nil
		}
		p := sentPattern{markers: make([]string, patternMarkers)}
		pipe := b.rdb.Pipeline()
		for j := range p.markers {
			p.markers[j] = fmt.Sprintf("nodb:%d:climate", 3_000_000_000+cell*10_000_000+i*patternMarkers+j)
			pipe.Set(b.ctx, p.markers[j], "x", 0)
		}
		if _, err := pipe.Exec(b.ctx); err != nil {
			return nil, err
		}
		if err := conn.QueryRow(b.ctx, `UPDATE climate_runs SET run_id = $1 WHERE id = $2 RETURNING clock_timestamp()`,
			9_000_000_000+cell*10_000_000+i, row).Scan(&p.committed); err != nil {
			return nil, err
		}
		sent = append(sent, p)
	}
}

// goneLog records when each marker key was deleted.
type goneLog struct {
	mu sync.Mutex
	at map[string]time.Time
}

// last returns when the last of keys was deleted, if all were.
func (g *goneLog) last(keys []string) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var last time.Time
	for _, k := range keys {
		at, ok := g.at[k]
		if !ok {
			return time.Time{}, false
		}
		if at.After(last) {
			last = at
		}
	}
	return last, true
}

// route records the deletions of pattern markers (nodb:…) and passes the
// others, the probes', on.
func route(deleted <-chan deletion) (<-chan deletion, *goneLog, func()) {
	probes := make(chan deletion, 4096)
	gone := &goneLog{at: map[string]time.Time{}}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case d := <-deleted:
				if strings.HasPrefix(d.key, "nodb:") {
					gone.mu.Lock()
					gone.at[d.key] = d.at
					gone.mu.Unlock()
					continue
				}
				select {
				case probes <- d:
				case <-done:
					return
				}
			}
		}
	}()
	return probes, gone, func() { close(done) }
}

func intList(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%s: %q is not a count", flag, f)
		}
		out = append(out, n)
	}
	return out, nil
}
