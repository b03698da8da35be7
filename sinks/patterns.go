package sinks

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/cdcd/cdcd/internal/retry"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
)

// A key pattern is deleted with SCAN + UNLINK over the whole keyspace: with
// millions of keys that takes seconds. Pattern work therefore runs beside
// the ordered apply path instead of in it: later transactions' exact keys,
// revisions and messages are applied while a scan runs (deletes commute,
// revisions only move forward), and only the confirmed position waits —
// nothing is confirmed at or past a transaction whose pattern work has not
// finished (Confirmable). A job deletes what existed when it starts, so a
// later transaction's pattern may join a job that has not started yet, and
// never one that has.
//
// Order that matters is kept: a job sets the revision patterns of its
// transactions before it deletes their key patterns, and a transaction that
// has revision patterns leaves its exact keys to the job too, after them.
// Exact revisions and channel messages stay on the ordered path.

// patternJob is the pattern work of one or more transactions.
type patternJob struct {
	hold     pglogrepl.LSN // commit LSN of its first transaction
	revs     map[string]string
	revOrder []string
	reset    bool // a gap's: revisions set even backwards
	patterns []rules.Pattern
	keys     []string
	started  bool
	queued   time.Time
}

// patternRunner runs pattern jobs on up to workers goroutines.
type patternRunner struct {
	r       *Redis
	workers int
	limit   int // most jobs pending; Apply waits beyond it

	mu    sync.Mutex
	jobs  []*patternJob // pending, in commit order of their first transaction
	wake  chan struct{}
	space chan struct{}
}

func newPatternRunner(r *Redis, workers, limit int) *patternRunner {
	return &patternRunner{r: r, workers: max(workers, 1), limit: max(limit, 1),
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// Run runs jobs until ctx is done. Unfinished jobs hold the confirmed
// position: after a restart the server sends their transactions again.
func (p *patternRunner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() { p.work(ctx) })
	}
	wg.Wait()
}

func (p *patternRunner) work(ctx context.Context) {
	for {
		job := p.next()
		if job == nil {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}
		if !p.run(ctx, job) {
			return
		}
		p.finish(job)
	}
}

// next marks the oldest job not started as started and returns it.
func (p *patternRunner) next() *patternJob {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range p.jobs {
		if !j.started {
			j.started = true
			if p.r.m != nil {
				p.r.m.patternWait.Observe(time.Since(j.queued).Seconds())
			}
			return j
		}
	}
	return nil
}

// run applies job, retrying with backoff until it succeeds or ctx ends.
func (p *patternRunner) run(ctx context.Context, job *patternJob) bool {
	start := time.Now()
	_, err := retry.Until(ctx, retry.Backoff{Min: p.r.cfg.MinBackoff, Max: p.r.cfg.MaxBackoff},
		func() error { return p.r.applyJob(ctx, job) },
		func(err error, attempt int, delay time.Duration) {
			p.r.failed(ctx)
			if p.r.m != nil {
				p.r.m.sinkErrors.WithLabelValues("redis").Inc()
			}
			p.r.log.Error("pattern invalidation failed; retrying", "err", err, "attempt", attempt, "retry_in", delay, "lsn", job.hold.String())
		})
	if err != nil {
		return false
	}
	if p.r.m != nil {
		p.r.m.patternTime.Observe(time.Since(start).Seconds())
	}
	return true
}

func (p *patternRunner) finish(job *patternJob) {
	p.mu.Lock()
	p.jobs = slices.DeleteFunc(p.jobs, func(j *patternJob) bool { return j == job })
	more := slices.ContainsFunc(p.jobs, func(j *patternJob) bool { return !j.started })
	p.mu.Unlock()
	signal(p.space)
	if more {
		signal(p.wake)
	}
}

// add queues the pattern work of plans (in commit order), joining the
// newest job that has not started when there is one. It waits while limit
// jobs are pending.
func (p *patternRunner) add(ctx context.Context, job *patternJob) error {
	for {
		p.mu.Lock()
		if n := len(p.jobs); n > 0 && !p.jobs[n-1].started && p.jobs[n-1].reset == job.reset {
			p.jobs[n-1].join(job)
			p.mu.Unlock()
			return nil
		}
		if len(p.jobs) < p.limit {
			job.queued = time.Now()
			p.jobs = append(p.jobs, job)
			p.mu.Unlock()
			signal(p.wake)
			return nil
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.space:
		}
	}
}

// join merges later, the work of later transactions, into j.
func (j *patternJob) join(later *patternJob) {
	for _, k := range later.revOrder {
		if _, ok := j.revs[k]; !ok {
			j.revOrder = append(j.revOrder, k)
		}
		j.revs[k] = later.revs[k] // revisions only move forward: the later LSN
	}
	for _, pt := range later.patterns {
		if !slices.ContainsFunc(j.patterns, func(q rules.Pattern) bool { return q.Pattern == pt.Pattern }) {
			j.patterns = append(j.patterns, pt)
		}
	}
	j.keys = append(j.keys, later.keys...)
}

// confirmable returns the highest position at or below lsn that may be
// confirmed: below the commit of the oldest transaction whose pattern work
// is pending. Confirming that commit's start makes the server send the
// transaction again after a restart.
func (p *patternRunner) confirmable(lsn pglogrepl.LSN) pglogrepl.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.jobs) > 0 && p.jobs[0].hold < lsn {
		return p.jobs[0].hold
	}
	return lsn
}

// backlog returns how many jobs are pending and how long the oldest has.
func (p *patternRunner) backlog() (int, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.jobs) == 0 {
		return 0, 0
	}
	return len(p.jobs), time.Since(p.jobs[0].queued)
}

// splitPatterns takes the pattern work out of plans (in commit order) into
// one job: revision patterns, key patterns, and the exact keys of plans
// that have revision patterns. It returns nil when there is none. The
// plans are not changed; skip reports, per plan, whether its exact keys
// went to the job.
func splitPatterns(plans []*rules.Plan) (job *patternJob, skip []bool) {
	for i, pl := range plans {
		hasRevPattern := slices.ContainsFunc(pl.Revisions, func(r rules.Revision) bool { return r.IsPattern })
		if !hasRevPattern && len(pl.Patterns) == 0 {
			continue
		}
		if job == nil {
			job = &patternJob{hold: pl.CommitLSN, revs: map[string]string{}, reset: pl.Gap}
			skip = make([]bool, len(plans))
		}
		for _, r := range pl.Revisions {
			if r.IsPattern {
				if _, ok := job.revs[r.Key]; !ok {
					job.revOrder = append(job.revOrder, r.Key)
				}
				job.revs[r.Key] = pl.CommitLSN.String()
			}
		}
		job.join(&patternJob{patterns: pl.Patterns, revs: map[string]string{}})
		if hasRevPattern {
			skip[i] = true
			for _, k := range pl.Keys {
				job.keys = append(job.keys, k.Key)
			}
		}
	}
	return job, skip
}

// applyJob sets the job's revision patterns, then deletes its key patterns
// and its exact keys.
func (r *Redis) applyJob(ctx context.Context, job *patternJob) error {
	for _, pattern := range job.revOrder {
		lsn := job.revs[pattern]
		revs := revisions{reset: job.reset}
		err := r.scanEach(ctx, pattern, func(keys []string) error {
			for _, k := range keys {
				revs.add(k, lsn)
			}
			if len(revs.keys) < revisionChunk {
				return nil
			}
			err := r.writeRevisions(ctx, revs)
			revs = revisions{reset: job.reset}
			return err
		})
		if err == nil {
			err = r.writeRevisions(ctx, revs)
		}
		if err != nil {
			return err
		}
	}
	for _, pt := range job.patterns {
		if err := r.unlinkMatching(ctx, pt.Pattern); err != nil {
			return err
		}
	}
	pipe := r.client.Pipeline()
	r.queueUnlinkKeys(ctx, pipe, job.keys)
	counted, err := r.queueCount(ctx, pipe)
	if err != nil {
		return err
	}
	err = exec(ctx, pipe)
	counted()
	return err
}

// revisionChunk is how many keys of a revision pattern a job sets at a
// time, as its scan finds them.
const revisionChunk = 4096

// signal wakes c's receiver, unless a wake-up is already pending.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
