package sinks

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
)

// Applier applies plans to every sink, in commit order, and records what was
// applied. It is the only writer of a pipeline's sinks.
type Applier struct {
	sinks  []Sink
	alerts *Alerts
	m      *Metrics
	now    func() time.Time
	log    *slog.Logger

	reported map[rules.MissingColumn]time.Time // last error log per missing column
}

// NewApplier returns an Applier that reports violations to a and applies
// plans to every sink, in the order given.
func NewApplier(a *Alerts, m *Metrics, sinks ...Sink) *Applier {
	return &Applier{sinks: sinks, alerts: a, m: m, now: time.Now, log: a.log, reported: map[rules.MissingColumn]time.Time{}}
}

// Confirmable returns the highest position at or below lsn that every sink
// has applied.
func (a *Applier) Confirmable(lsn pglogrepl.LSN) pglogrepl.LSN {
	for _, s := range a.sinks {
		lsn = min(lsn, s.Confirmable(lsn))
	}
	return lsn
}

// Secure makes every sink secure what it applied up to lsn, before lsn is
// confirmed (see Sink.Secure).
func (a *Applier) Secure(ctx context.Context, lsn pglogrepl.LSN) error {
	for _, s := range a.sinks {
		if err := s.Secure(ctx, lsn); err != nil {
			return err
		}
	}
	return nil
}

// Lost reports why a sink lost writes it had applied before confirmed; ""
// when none did.
func (a *Applier) Lost(ctx context.Context, confirmed pglogrepl.LSN) (string, error) {
	var why []string
	for _, s := range a.sinks {
		w, err := s.Lost(ctx, confirmed)
		if err != nil {
			return "", err
		}
		if w != "" {
			why = append(why, w)
		}
	}
	return strings.Join(why, "; "), nil
}

// Apply applies the plans and returns nil once every sink has applied all of
// them; only then may they be acknowledged. It returns an error only when
// ctx is done.
func (a *Applier) Apply(ctx context.Context, plans []*rules.Plan) error {
	// Alerts first: a violation must reach the on-call engineer even while
	// Redis is down. Reporting does not block.
	a.alerts.Report(ctx, plans)

	work := plans[:0:0]
	for _, p := range plans {
		if len(p.Keys) > 0 || len(p.Patterns) > 0 || len(p.Revisions) > 0 || len(p.Messages) > 0 {
			work = append(work, p)
		}
	}
	if len(work) > 0 {
		for _, s := range a.sinks {
			if err := s.Apply(ctx, work); err != nil {
				return err
			}
		}
		done := a.now()
		a.m.batchSize.Observe(float64(len(work)))
		for _, p := range work {
			a.m.commitToInval.Observe(max(done.Sub(p.CommitTime).Seconds(), 0))
			for _, k := range p.Keys {
				a.m.keysDeleted.WithLabelValues(k.Section).Inc()
			}
			for _, pt := range p.Patterns {
				a.m.patterns.WithLabelValues(pt.Section, pt.Reason).Inc()
			}
		}
	}
	a.m.transactions.Add(float64(len(plans)))
	for _, p := range plans {
		for _, u := range p.Unchecked {
			a.m.unchecked.WithLabelValues(u.Invariant, u.Table, u.Reason).Add(float64(u.Rows))
			a.log.Warn("an invariant could not be checked on some rows of a transaction",
				"invariant", u.Invariant, "table", u.Table, "reason", u.Reason, "rows", u.Rows, "lsn", p.CommitLSN.String())
		}
		for _, mc := range p.MissingColumns {
			a.m.missingCols.WithLabelValues(mc.Rule, mc.Table, mc.Column).Inc()
			if last, ok := a.reported[mc]; !ok || a.now().Sub(last) > 10*time.Minute {
				a.reported[mc] = a.now()
				a.log.Error("a rule names a column its table no longer has; it falls back to wider invalidation until the rules are fixed",
					"rule", mc.Rule, "table", mc.Table, "column", mc.Column)
			}
		}
	}
	return nil
}
