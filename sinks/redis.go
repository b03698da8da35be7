package sinks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/cdcd/cdcd/internal/pollconn"
	"github.com/cdcd/cdcd/internal/retry"
	"github.com/cdcd/cdcd/rules"
	"github.com/redis/go-redis/v9"
)

// lsnBehind is a Lua function: whether pg_lsn text cur is at or past new.
// A value that is not an LSN is never ahead, so it is overwritten.
const lsnBehind = `
local function ahead(cur, new)
  if not cur then return false end
  local ch, cl = string.match(cur, '^(%x+)/(%x+)$')
  local nh, nl = string.match(new, '^(%x+)/(%x+)$')
  if not (ch and nh) then return false end
  ch, cl, nh, nl = tonumber(ch, 16), tonumber(cl, 16), tonumber(nh, 16), tonumber(nl, 16)
  return ch > nh or (ch == nh and cl >= nl)
end
`

// setRevision sets KEYS[1] to ARGV[1], a pg_lsn text, unless it already
// holds a later LSN: a transaction re-sent after a restart must not move a
// revision backwards. A key of another type is overwritten.
var setRevision = redis.NewScript(lsnBehind + `
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and ahead(cur, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`)

// RedisConfig configures the Redis sink.
type RedisConfig struct {
	// URL is a redis:// or rediss:// URL.
	URL string
	// UnlinkBatch is the most keys one UNLINK carries. Default 256.
	UnlinkBatch int
	// ScanCount is the COUNT hint of pattern scans. Default 1000.
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

// Redis applies plans to one Redis server. Safe for concurrent use, but
// plans must be applied by one goroutine to keep commit order.
type Redis struct {
	cfg    RedisConfig
	client *redis.Client
	log    *slog.Logger
	m      *Metrics
}

// NewRedis returns a Redis sink. It does not connect until used.
func NewRedis(cfg RedisConfig, m *Metrics) (*Redis, error) {
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	// The sink retries whole plans itself; the client's own retries would
	// only hide how long an attempt took.
	opt.MaxRetries = -1
	// Let callers' deadlines (the readiness probe's) bound a command.
	opt.ContextTimeoutEnabled = true
	// RESP2: the sink uses no push notifications, and under RESP3 the client
	// peeks at the socket for them before commands.
	opt.Protocol = 2
	opt.Dialer = dialer(opt, cfg.RawSockets)
	if cfg.UnlinkBatch <= 0 {
		cfg.UnlinkBatch = 256
	}
	if cfg.ScanCount <= 0 {
		cfg.ScanCount = 1000
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Redis{cfg: cfg, client: redis.NewClient(opt), log: log, m: m}, nil
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
		cfg := opt.TLSConfig
		if cfg.ServerName == "" {
			// As tls.DialWithDialer does.
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}
}

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
			r.m.sinkErrors.WithLabelValues("redis").Inc()
			r.log.Error("apply plan to redis; retrying", "err", err, "attempt", attempt, "retry_in", delay,
				"lsn", plans[len(plans)-1].CommitLSN.String())
		})
	if err == nil && attempts > 1 {
		r.log.Info("redis sink recovered", "attempts", attempts)
	}
	return err
}

// apply applies plans in three steps, in this order: every revision the
// plans move; then the key patterns (SCAN + UNLINK); then the exact keys
// and the channel messages. A covering revision moves before the keys it
// covers are deleted: a reader that read the revision, then the database
// before the commit, cannot then store its stale value under the revision
// it read (docs/consistency.md). Without patterns the steps share one
// pipeline, whose commands Redis runs in order.
func (r *Redis) apply(ctx context.Context, plans []*rules.Plan) error {
	pipe := r.client.Pipeline()
	if err := r.queueRevisions(ctx, pipe, plans); err != nil {
		return err
	}
	if hasPatterns(plans) {
		if err := exec(ctx, pipe); err != nil {
			return err
		}
		if err := r.unlinkPatterns(ctx, plans); err != nil {
			return err
		}
	}
	batch := make([]string, 0, r.cfg.UnlinkBatch)
	flush := func() {
		if len(batch) > 0 {
			pipe.Unlink(ctx, batch...)
			batch = make([]string, 0, r.cfg.UnlinkBatch)
		}
	}
	unique := make(map[string]struct{})
	for _, p := range plans {
		for _, k := range p.Keys {
			if _, dup := unique[k.Key]; dup {
				continue
			}
			unique[k.Key] = struct{}{}
			batch = append(batch, k.Key)
			if len(batch) == r.cfg.UnlinkBatch {
				flush()
			}
		}
	}
	flush()
	for _, p := range plans {
		for _, m := range p.Messages {
			pipe.Publish(ctx, m.Channel, m.Payload)
		}
	}
	return exec(ctx, pipe)
}

func hasPatterns(plans []*rules.Plan) bool {
	for _, p := range plans {
		if len(p.Patterns) > 0 {
			return true
		}
	}
	return false
}

// queueRevisions queues the plans' revisions on pipe. Revisions only move
// forward, so a batch sets each to the last LSN that names it, and scans a
// revision pattern once.
func (r *Redis) queueRevisions(ctx context.Context, pipe redis.Pipeliner, plans []*rules.Plan) error {
	revs := make(map[rules.Revision]string)
	var order []rules.Revision
	for _, p := range plans {
		for _, rev := range p.Revisions {
			if _, ok := revs[rev]; !ok {
				order = append(order, rev)
			}
			revs[rev] = p.CommitLSN.String()
		}
	}
	// A gap's plan, applied alone, sets revisions even backwards: the
	// server, and with it the LSN sequence, may have changed.
	reset := len(plans) == 1 && plans[0].Gap
	set := func(key, lsn string) {
		if reset {
			pipe.Set(ctx, key, lsn, 0)
		} else {
			setRevision.Eval(ctx, pipe, []string{key}, lsn)
		}
	}
	for _, rev := range order {
		if !rev.IsPattern {
			set(rev.Key, revs[rev])
			continue
		}
		err := r.scanEach(ctx, rev.Key, func(keys []string) error {
			for _, k := range keys {
				set(k, revs[rev])
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("scan revision keys %q: %w", rev.Key, err)
		}
	}
	return nil
}

// unlinkPatterns deletes every key matching the plans' patterns, each
// pattern once.
func (r *Redis) unlinkPatterns(ctx context.Context, plans []*rules.Plan) error {
	seen := make(map[string]bool)
	for _, p := range plans {
		for _, pt := range p.Patterns {
			if seen[pt.Pattern] {
				continue
			}
			seen[pt.Pattern] = true
			if err := r.unlinkMatching(ctx, pt.Pattern); err != nil {
				return fmt.Errorf("invalidate pattern %q of section %s: %w", pt.Pattern, pt.Section, err)
			}
		}
	}
	return nil
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

// scanEach calls fn with each page of keys matching pattern.
func (r *Redis) scanEach(ctx context.Context, pattern string, fn func(keys []string) error) error {
	var cursor uint64
	for {
		keys, next, err := r.client.Scan(ctx, cursor, pattern, r.cfg.ScanCount).Result()
		if err != nil {
			return err
		}
		if err := fn(keys); err != nil {
			return err
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

func (r *Redis) unlinkMatching(ctx context.Context, pattern string) error {
	return r.scanEach(ctx, pattern, func(keys []string) error {
		for len(keys) > 0 {
			n := min(len(keys), r.cfg.UnlinkBatch)
			if err := r.client.Unlink(ctx, keys[:n]...).Err(); err != nil {
				return err
			}
			keys = keys[n:]
		}
		return nil
	})
}
