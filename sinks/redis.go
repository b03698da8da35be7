package sinks

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pglogrepl"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcd/cdcd/internal/pollconn"
	"github.com/cdcd/cdcd/internal/retry"
	"github.com/cdcd/cdcd/rules"
	"github.com/redis/go-redis/v9"
)

// RedisConfig configures the Redis sink.
type RedisConfig struct {
	// URL is a redis:// or rediss:// URL, in the form Mode's parser reads.
	URL string
	// Mode is ModeStandalone (the default), ModeCluster or ModeSentinel.
	Mode string
	// Slot is the replication slot whose positions the sink's markers
	// record (see marks.go).
	Slot string
	// TLS names a CA and a client certificate, with a rediss:// URL.
	TLS TLSFiles
	// WaitReplicas, when positive, is how many replicas of every master
	// must acknowledge cdcd's writes before a position is confirmed
	// (WAIT), within WaitTimeout (default 1s).
	WaitReplicas int
	WaitTimeout  time.Duration
	// PatternWorkers is how many pattern jobs run at once (default 2), and
	// PatternQueue how many may be pending before Apply waits (default 64).
	PatternWorkers, PatternQueue int
	// ShardedPubSub publishes channel messages with SPUBLISH (Redis 7):
	// in a Cluster they stay in the channel's shard instead of reaching
	// every node.
	ShardedPubSub bool
	// UnlinkBatch is the most keys one UNLINK carries. Default 256.
	UnlinkBatch int
	// ScanCount is the COUNT hint of pattern scans. Default 250: each SCAN
	// holds single-threaded Redis for its page, and an exact UNLINK waits
	// behind it (docs/performance.md, Patterns).
	ScanCount int64
	// MinBackoff and MaxBackoff bound the delay between attempts of a plan
	// that failed. Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// RawSockets does the connections' reads and writes as raw system calls
	// (internal/pollconn), which spares the Go runtime a wake-up of its
	// monitor thread on every reply. The pool then cannot peek at an idle
	// connection before using it (see dialer). No effect where
	// pollconn.Available is false.
	RawSockets bool
	Logger     *slog.Logger
}

var _ Sink = (*Redis)(nil)

// Redis applies plans to one Redis server. Safe for concurrent use, but
// plans must be applied by one goroutine to keep commit order.
type Redis struct {
	cfg     RedisConfig
	client  redis.UniversalClient
	cluster bool
	log     *slog.Logger
	m       *Metrics

	// marks holds, by marker key, the position last written there (see
	// marks.go). Only the goroutine that confirms positions uses it.
	marks map[string]string
	// seq holds, by marker key, the highest value an increment of its write
	// counter returned (see marks.go). Written by Apply and the pattern
	// workers.
	seqMu   sync.Mutex
	seq     map[string]int64
	seqLost []string // marker keys whose counter an increment found behind
	// markKeys caches a Cluster's marker keys, one per slot range; nil
	// after a failed write, when the topology may have changed.
	markKeys atomic.Pointer[markerCache]

	patterns *patternRunner
}

// NewRedis returns a Redis sink. It does not connect until used.
func NewRedis(cfg RedisConfig, m *Metrics) (*Redis, error) {
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.UnlinkBatch <= 0 {
		cfg.UnlinkBatch = 256
	}
	if cfg.ScanCount <= 0 {
		cfg.ScanCount = 250
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.PatternWorkers <= 0 {
		cfg.PatternWorkers = 2
	}
	if cfg.PatternQueue <= 0 {
		cfg.PatternQueue = 64
	}
	_, cluster := client.(*redis.ClusterClient)
	r := &Redis{cfg: cfg, client: client, cluster: cluster, log: log, m: m, marks: map[string]string{}, seq: map[string]int64{}}
	r.patterns = newPatternRunner(r, cfg.PatternWorkers, cfg.PatternQueue)
	if m != nil {
		m.backlog = r.patterns.backlog
	}
	return r, nil
}

// dialer dials with go-redis's own dialer, puts the connection's reads and
// writes on the raw path when raw is set (see internal/pollconn) and adds
// TLS on top, as that dialer would. A wrapped connection does not expose its
// descriptor, so the pool no longer peeks at it before each use: a
// connection that died while idle fails its command, is discarded, and
// Apply retries on a new one.
func dialer(opt *redis.Options, raw bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := redis.NewDialer(&redis.Options{DialTimeout: opt.DialTimeout})
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if raw {
			c = pollconn.Wrap(c)
		}
		if opt.TLSConfig == nil {
			return c, nil
		}
		return handshake(ctx, c, opt.TLSConfig, addr)
	}
}

// Run runs the pattern workers until ctx is done.
func (r *Redis) Run(ctx context.Context) { r.patterns.Run(ctx) }

// Confirmable returns the highest position at or below lsn that may be
// confirmed: pattern work still pending holds it back.
func (r *Redis) Confirmable(lsn pglogrepl.LSN) pglogrepl.LSN { return r.patterns.confirmable(lsn) }

// PatternBacklog returns how many pattern jobs are pending and how long the
// oldest has been.
func (r *Redis) PatternBacklog() (int, time.Duration) { return r.patterns.backlog() }

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

// Close closes the client's connections.
func (r *Redis) Close() error { return r.client.Close() }

// Apply applies the plans in order and returns only when all of them are
// applied, or with ctx's error. Every failure is retried with backoff: the
// caller acknowledges nothing meanwhile. Deletes are idempotent and revisions
// only move forward, so a repeated attempt is harmless.
func (r *Redis) Apply(ctx context.Context, plans []*rules.Plan) error {
	attempts, err := retry.Until(ctx, retry.Backoff{Min: r.cfg.MinBackoff, Max: r.cfg.MaxBackoff},
		func() error { return r.apply(ctx, plans) },
		func(err error, attempt int, delay time.Duration) {
			r.failed(ctx)
			r.m.sinkErrors.WithLabelValues("redis").Inc()
			r.log.Error("apply plan to redis; retrying", "err", err, "attempt", attempt, "retry_in", delay,
				"lsn", plans[len(plans)-1].CommitLSN.String())
		})
	if err == nil && attempts > 1 {
		r.log.Info("redis sink recovered", "attempts", attempts)
	}
	return err
}

// apply applies plans: first every exact revision the plans move, then
// their exact keys and channel messages, in one pipeline whose commands
// Redis runs in order; a covering revision thus moves before the keys it
// covers are deleted, so a reader that read the revision, then the
// database before the commit, cannot store its stale value under the
// revision it read (docs/consistency.md). Key patterns and revision
// patterns go to the pattern workers (see patterns.go), which hold the
// confirmed position until they are done.
func (r *Redis) apply(ctx context.Context, plans []*rules.Plan) error {
	job, skip := splitPatterns(plans)
	revs := exactRevisions(plans)
	pipe := r.client.Pipeline()
	var revsFailed func() ([]int, error)
	if r.cluster {
		// A revision and the keys it covers may live on different
		// masters, whose pipelines run side by side: the revisions are
		// acknowledged before any key is deleted.
		if err := r.setRevisionsByMaster(ctx, revs); err != nil {
			return err
		}
	} else {
		revsFailed = queueRevisions(ctx, pipe, revs, r.cfg.UnlinkBatch)
	}
	r.queueUnlinks(ctx, pipe, plans, skip)
	for _, p := range plans {
		for _, m := range p.Messages {
			if r.cfg.ShardedPubSub {
				pipe.SPublish(ctx, m.Channel, m.Payload)
			} else {
				pipe.Publish(ctx, m.Channel, m.Payload)
			}
		}
	}
	counted, err := r.queueCount(ctx, pipe)
	if err != nil {
		return err
	}
	err = exec(ctx, pipe)
	counted()
	if err != nil {
		return err
	}
	if revsFailed != nil {
		if _, err := revsFailed(); err != nil {
			return err // the retry sets them
		}
	}
	if job != nil {
		return r.patterns.add(ctx, job)
	}
	return nil
}

// queueUnlinks queues an UNLINK of every distinct key of the plans.
func (r *Redis) queueUnlinks(ctx context.Context, pipe redis.Pipeliner, plans []*rules.Plan, skip []bool) {
	var keys []string
	unique := make(map[string]struct{})
	for i, p := range plans {
		if skip != nil && skip[i] {
			continue // the pattern job deletes them, after their revisions
		}
		for _, k := range p.Keys {
			if _, dup := unique[k.Key]; !dup {
				unique[k.Key] = struct{}{}
				keys = append(keys, k.Key)
			}
		}
	}
	r.queueUnlinkKeys(ctx, pipe, keys)
}

// queueUnlinkKeys queues UNLINKs of keys, at most UnlinkBatch keys per
// command. In a Cluster each command holds keys of one hash slot only, as a
// multi-key command must.
func (r *Redis) queueUnlinkKeys(ctx context.Context, pipe redis.Pipeliner, keys []string) {
	if !r.cluster {
		for len(keys) > 0 {
			n := min(len(keys), r.cfg.UnlinkBatch)
			pipe.Unlink(ctx, keys[:n]...)
			keys = keys[n:]
		}
		return
	}
	batches := map[int][]string{}
	var order []int
	for _, k := range keys {
		slot := hashSlot(k)
		b, ok := batches[slot]
		if !ok {
			order = append(order, slot)
		}
		b = append(b, k)
		if len(b) == r.cfg.UnlinkBatch {
			pipe.Unlink(ctx, b...)
			b = b[:0:0]
		}
		batches[slot] = b
	}
	for _, slot := range order {
		if b := batches[slot]; len(b) > 0 {
			pipe.Unlink(ctx, b...)
		}
	}
}

// exec runs the commands queued on pipe, if any, and returns the first
// failure, naming its command.
func exec(ctx context.Context, pipe redis.Pipeliner) error {
	if pipe.Len() == 0 {
		return nil
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		for _, c := range cmds {
			if c.Err() != nil && !errors.Is(c.Err(), redis.Nil) {
				return fmt.Errorf("%s: %w", c.Name(), c.Err())
			}
		}
		return err
	}
	return nil
}

// scanEach calls fn with each page of keys matching pattern, on every
// master (SCAN covers one node). Calls of fn do not overlap.
func (r *Redis) scanEach(ctx context.Context, pattern string, fn func(keys []string) error) error {
	var mu sync.Mutex
	return r.scanMasters(ctx, pattern, func(ctx context.Context, c *redis.Client) error {
		return r.scanNode(ctx, c, pattern, func(keys []string) error {
			mu.Lock()
			defer mu.Unlock()
			return fn(keys)
		})
	})
}

// unlinkMatching deletes every key matching pattern, scanning each master
// and deleting what it returns, page by page. The deletes go through the
// client's routing, not straight to the master scanned: during resharding
// a master holds keys of a slot it is importing, which it deletes only
// when asked through the slot's owner (MOVED, then ASK), and which the
// client follows.
func (r *Redis) unlinkMatching(ctx context.Context, pattern string) error {
	return r.scanMasters(ctx, pattern, func(ctx context.Context, c *redis.Client) error {
		return r.scanNode(ctx, c, pattern, func(keys []string) error {
			pipe := r.client.Pipeline()
			r.queueUnlinkKeys(ctx, pipe, keys)
			return exec(ctx, pipe)
		})
	})
}

// scanNode calls fn with each non-empty page of keys matching pattern on
// the node c.
func (r *Redis) scanNode(ctx context.Context, c *redis.Client, pattern string, fn func(keys []string) error) error {
	if testHookScanNode != nil {
		testHookScanNode(c.Options().Addr, false)
		defer testHookScanNode(c.Options().Addr, true)
	}
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, r.cfg.ScanCount).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}
