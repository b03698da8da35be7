package readthrough

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/cdcd/cdcd/rules"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// hold is how long a value stored by a set-then-check fill lives before it
// is confirmed: if the reader dies between the set and the check, a stale
// value outlives it by at most this long.
const hold = 2 * time.Second

// Cache fills Redis keys from the database under the read-through protocol.
type Cache struct {
	client  redis.UniversalClient
	covers  []cover
	cfg     config
	cluster bool
	flight  *singleflight.Group
	m       *metrics
}

// New returns a Cache for client that guards keys with the revisions of
// the rules file at rulesFile, the file cdcd runs with.
func New(client redis.UniversalClient, rulesFile string, opts ...Option) (*Cache, error) {
	rs, err := rules.Load(rulesFile)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	cfg := config{singleflight: true}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.replica != nil && cfg.replica.Replayed == nil {
		return nil, errors.New("readthrough: Replica.Replayed is required")
	}
	m, err := newMetrics(cfg.reg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	c := &Cache{client: client, covers: coversOf(rs.File()), cfg: cfg, m: m}
	_, c.cluster = client.(*redis.ClusterClient)
	if cfg.singleflight {
		c.flight = new(singleflight.Group)
	}
	return c, nil
}

// Get returns the value cached under key or, on a miss, the value load
// returns, which it stores unless a revision that covers key moved while
// load ran (then the value is returned, not stored). A key no section of the
// rules names is an error, as is a key no revision guards unless
// AllowUnguarded was given. load's error is returned wrapped.
func (c *Cache) Get(ctx context.Context, key string, load func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	revs, err := revisions(c.covers, key, c.cfg.unguarded)
	if err != nil {
		return nil, err
	}
	v, err := c.client.Get(ctx, key).Bytes()
	if err == nil {
		c.m.hits.Inc()
		return v, nil
	}
	if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	c.m.misses.Inc()
	if c.flight == nil {
		return c.fill(ctx, key, revs, load)
	}
	for {
		ch := c.flight.DoChan(key, func() (any, error) { return c.fill(ctx, key, revs, load) })
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-ch:
			if r.Err != nil && r.Shared && ctx.Err() == nil && isContextErr(r.Err) {
				continue // the context of the call that loaded ended, not ours
			}
			v, _ := r.Val.([]byte)
			if r.Shared {
				v = bytes.Clone(v)
			}
			return v, r.Err
		}
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// fill is a miss: read the covering revisions (creating them), wait for the
// replica if there is one, load, and store if no revision moved.
func (c *Cache) fill(ctx context.Context, key string, revs []string, load func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	observed := make([]string, len(revs))
	for i, rev := range revs {
		v, err := observe.Run(ctx, c.client, []string{rev}, token()).Text()
		if err != nil {
			return nil, fmt.Errorf("read revision %q: %w", rev, err)
		}
		observed[i] = v
	}
	refuse := ""
	if c.cfg.replica != nil && len(revs) > 0 {
		target, reason, err := c.cfg.replica.target(ctx, observed)
		if err != nil {
			return nil, err
		}
		refuse = reason
		if reason == "" {
			ok, err := c.cfg.replica.await(ctx, target)
			if err != nil {
				return nil, err
			}
			if !ok {
				refuse = RefusedReplicaBehind
			}
		}
	}
	v, err := load(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %q: %w", key, err)
	}
	if refuse != "" {
		c.m.refused.WithLabelValues(refuse).Inc()
		return v, nil
	}
	stored, err := c.store(ctx, key, v, revs, observed)
	switch {
	case err != nil:
		c.m.refused.WithLabelValues(RefusedError).Inc()
	case stored:
		c.m.stored.Inc()
	default:
		c.m.refused.WithLabelValues(RefusedRevisionMoved).Inc()
	}
	// The value is fresh whether or not it could be stored.
	return v, nil
}

// token returns a revision value that is not an LSN and never repeats.
func token() string { return "rt:" + rand.Text() }

// store stores v under key if every revision still holds what was
// observed: in one script where the keys share a slot, else by set, check
// and delete.
func (c *Cache) store(ctx context.Context, key string, v []byte, revs, observed []string) (bool, error) {
	ttl := c.cfg.ttl.Milliseconds()
	if len(revs) == 0 {
		return true, c.client.Set(ctx, key, v, c.cfg.ttl).Err()
	}
	if !c.cfg.setThenCheck && c.oneSlot(key, revs) {
		args := make([]any, 0, 2+len(observed))
		args = append(args, v, ttl)
		for _, o := range observed {
			args = append(args, o)
		}
		n, err := compareAndSet.Run(ctx, c.client, append([]string{key}, revs...), args...).Int()
		return n == 1, err
	}
	return c.setThenCheck(ctx, key, v, revs, observed, ttl)
}

// oneSlot reports whether a script may touch key and revs together.
func (c *Cache) oneSlot(key string, revs []string) bool {
	if !c.cluster {
		return true
	}
	s := slot(key)
	for _, r := range revs {
		if slot(r) != s {
			return false
		}
	}
	return true
}

// setThenCheck stores v provisionally (it expires after hold), re-reads
// the revisions, and then keeps v or deletes it. Between the set and the
// delete, readers may see v: for about one round trip, or for hold if this
// process dies.
func (c *Cache) setThenCheck(ctx context.Context, key string, v []byte, revs, observed []string, ttl int64) (bool, error) {
	provisional := hold
	if c.cfg.ttl > 0 {
		provisional = min(provisional, c.cfg.ttl)
	}
	if err := c.client.Set(ctx, key, v, provisional).Err(); err != nil {
		return false, err
	}
	// The value must go even if the caller gives up meanwhile.
	drop := func() error {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		return c.client.Del(dctx, key).Err()
	}
	for i, rev := range revs {
		cur, err := c.client.Get(ctx, rev).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			_ = drop() // best effort; hold bounds the rest
			return false, err
		}
		if err != nil || cur != observed[i] {
			return false, drop()
		}
	}
	if err := keep.Run(ctx, c.client, []string{key}, v, ttl).Err(); err != nil {
		return false, err
	}
	return true, nil
}
