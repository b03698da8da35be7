package readthrough

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a Cache.
type Option func(*config)

type config struct {
	ttl          time.Duration
	singleflight bool
	replica      *Replica
	reg          prometheus.Registerer
	unguarded    bool
	setThenCheck bool
}

// WithTTL stores values with this expiry. Zero (the default) stores them
// without one: cdcd deletes them when their rows change.
func WithTTL(ttl time.Duration) Option { return func(c *config) { c.ttl = ttl } }

// WithSingleflight turns on or off (default on) the sharing of one load
// among the Get calls of this Cache that miss the same key at once.
func WithSingleflight(on bool) Option { return func(c *config) { c.singleflight = on } }

// WithReplica declares that load reads a streaming read replica, and how to
// tell how far it has replayed: see Replica.
func WithReplica(r Replica) Option { return func(c *config) { c.replica = &r } }

// WithRegisterer registers the Cache's metrics with reg:
// cdcd_readthrough_hits_total, cdcd_readthrough_misses_total,
// cdcd_readthrough_fills_stored_total and
// cdcd_readthrough_fills_refused_total{reason}. To register several caches
// with one registry, wrap it for each with prometheus.WrapRegistererWith and
// a label of its own.
func WithRegisterer(reg prometheus.Registerer) Option { return func(c *config) { c.reg = reg } }

// AllowUnguarded lets Get fill keys whose sections have no usable revision
// with a plain SET, which can leave a stale value cached until it expires.
// Keys no section names are refused even so.
func AllowUnguarded() Option { return func(c *config) { c.unguarded = true } }

// WithSetThenCheck makes every fill set the value, re-read the revisions
// and delete the value if one moved, as fills do where a key and its
// revisions live in different cluster slots: for proxies that refuse
// scripts over several keys.
func WithSetThenCheck() Option { return func(c *config) { c.setThenCheck = true } }
