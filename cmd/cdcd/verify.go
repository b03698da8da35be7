package main

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cdcd/cdcd/catalog"
	"github.com/cdcd/cdcd/rules"
	"github.com/prometheus/client_golang/prometheus"
)

// verifier checks the rules in use against the live catalog at start-up and
// after every reload, and reports invariants that cannot be checked instead
// of letting them silently never fire.
type verifier struct {
	d            *daemon
	unverifiable *prometheus.GaugeVec

	mu     sync.Mutex
	detail map[string]string // invariant -> why it cannot be checked
	kick   chan struct{}
}

func newVerifier(d *daemon) *verifier {
	v := &verifier{
		d: d,
		unverifiable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cdcd_invariant_unverifiable",
			Help: "1 when an invariant cannot be checked (its table lacks REPLICA IDENTITY FULL, or a column is missing).",
		}, []string{"invariant"}),
		kick: make(chan struct{}, 1),
	}
	d.reg.MustRegister(v.unverifiable)
	return v
}

// again asks for a new verification (after a reload).
func (v *verifier) again() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// run verifies now and after each reload; a failed attempt (the database
// is unreachable) is retried.
func (v *verifier) run(ctx context.Context) {
	for {
		err := v.verify(ctx)
		retry := time.Duration(0)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			v.d.log.Warn("cannot check the rules against the catalog; retrying", "err", err)
			retry = 10 * time.Second
		}
		var after <-chan time.Time
		if retry > 0 {
			after = time.After(retry)
		}
		select {
		case <-ctx.Done():
			return
		case <-v.kick:
		case <-after:
		}
	}
}

func (v *verifier) verify(ctx context.Context) error {
	rs := v.d.rules.Load()
	findings, err := checkLive(ctx, v.d.cfg.DatabaseURL, v.d.cfg.Publication, rs.File())
	if err != nil {
		return err
	}
	for _, f := range findings {
		switch f.Severity {
		case catalog.Error:
			v.d.log.Error("rules problem in the catalog", "problem", f.Format(rs.File().Name), "table", f.Table)
		case catalog.Warning:
			v.d.log.Warn("rules cost in the catalog", "problem", f.Format(rs.File().Name), "table", f.Table)
		default:
			v.d.log.Info("rules and the catalog", "note", f.Format(rs.File().Name), "table", f.Table)
		}
	}
	bad := catalog.Unverifiable(findings)
	v.unverifiable.Reset()
	for _, inv := range rs.File().Invariants {
		val := 0.0
		if _, ok := bad[inv.Name]; ok {
			val = 1
			v.d.log.Error("invariant cannot be checked; it will not fire", "invariant", inv.Name, "reason", bad[inv.Name])
		}
		v.unverifiable.WithLabelValues(inv.Name).Set(val)
	}
	v.mu.Lock()
	v.detail = bad
	v.mu.Unlock()
	return nil
}

// problems lists the unverifiable invariants for /readyz.
func (v *verifier) problems() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	for _, inv := range slices.Sorted(maps.Keys(v.detail)) {
		out = append(out, "invariant "+inv+" unverifiable: "+strings.TrimSpace(v.detail[inv]))
	}
	return out
}

// checkLive runs the catalog check for `rules check`.
func checkLive(ctx context.Context, dbURL, publication string, f *rules.File) ([]catalog.Finding, error) {
	return withCatalog(ctx, dbURL, publication, f, catalog.Check)
}
