package sinks

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"github.com/cdcd/cdcd/rules"
)

// Alerts reports invariant violations: a log line at the invariant's
// severity, cdcd_invariant_violations_total, and the webhook when one is
// configured.
type Alerts struct {
	log     *slog.Logger
	m       *Metrics
	webhook *Webhook
}

// NewAlerts returns the alert sink. webhook may be nil.
func NewAlerts(log *slog.Logger, m *Metrics, webhook *Webhook) *Alerts {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Alerts{log: log, m: m, webhook: webhook}
}

// LevelCritical is the slog level of "critical" violations.
const LevelCritical = slog.LevelError + 4

func severityLevel(s string) slog.Level {
	switch s {
	case "info":
		return slog.LevelInfo
	case "error":
		return slog.LevelError
	case "critical":
		return LevelCritical
	}
	return slog.LevelWarn
}

// maxLogValue is how much of one value a log line shows; the rest is elided
// with its length (large coefficient arrays would otherwise flood the log).
const maxLogValue = 256

func abbreviate(v *string) any {
	if v == nil {
		return nil
	}
	if len(*v) <= maxLogValue {
		return *v
	}
	cut := maxLogValue
	for cut > 0 && (*v)[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	var b strings.Builder
	b.WriteString((*v)[:cut])
	b.WriteString("…(")
	b.WriteString(strconv.Itoa(len(*v)))
	b.WriteString(" bytes)")
	return b.String()
}

// Report logs and counts every violation of the plans.
func (a *Alerts) Report(ctx context.Context, plans []*rules.Plan) {
	for _, p := range plans {
		for i := range p.Violations {
			v := &p.Violations[i]
			a.m.violations.WithLabelValues(v.Invariant, v.Table).Inc()
			if a.webhook != nil {
				a.webhook.Enqueue(v)
			}
			pk := make([]any, 0, len(v.PrimaryKey))
			for _, c := range v.PrimaryKey {
				pk = append(pk, slog.Any(c.Column, abbreviate(c.Value)))
			}
			changed := make([]any, 0, len(v.Changed))
			for _, c := range v.Changed {
				changed = append(changed, slog.Group(c.Column, "old", abbreviate(c.Old), "new", abbreviate(c.New)))
			}
			required := make([]any, 0, len(v.Required))
			for _, c := range v.Required {
				required = append(required, slog.Group(c.Column, "old", abbreviate(c.Old), "new", abbreviate(c.New)))
			}
			attrs := []any{"invariant", v.Invariant,
				"severity", v.Severity,
				"table", v.Table,
				slog.Group("primary_key", pk...),
				slog.Group("changed", changed...),
				slog.Group("unchanged", required...),
				"lsn", v.LSN,
				"xid", v.Xid,
				"commit_time", v.CommitTime,
			}
			if p.Inexact {
				// A rolled-back subtransaction's changes could not be told
				// apart from the rest: the violation may be one of them.
				attrs = append(attrs, "may_be_rolled_back", true)
			}
			a.log.Log(ctx, severityLevel(v.Severity), "invariant violated: "+v.Message, attrs...)
		}
	}
}
