package sinks

import (
	"time"

	"github.com/cdcd/cdcd/rules"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sinks' Prometheus metrics.
type Metrics struct {
	sinkErrors    *prometheus.CounterVec
	violations    *prometheus.CounterVec
	keysDeleted   *prometheus.CounterVec
	patterns      *prometheus.CounterVec
	transactions  prometheus.Counter
	missingCols   *prometheus.CounterVec
	unchecked     *prometheus.CounterVec
	commitToInval prometheus.Histogram
	batchSize     prometheus.Histogram
	patternTime   prometheus.Histogram
	patternWait   prometheus.Histogram
	rescans       prometheus.Counter

	// backlog reports the pending pattern jobs and the oldest one's age;
	// set by the Redis sink.
	backlog func() (int, time.Duration)
}

// NewMetrics builds the sinks' metrics and registers them with reg (nil:
// unregistered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_sink_errors_total",
			Help: "Failed attempts to apply a plan, by sink. Each is retried.",
		}, []string{"sink"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_invariant_violations_total",
			Help: "Invariant violations seen in committed transactions.",
		}, []string{"invariant", "table"}),
		keysDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_keys_deleted_total",
			Help: "Exact cache keys unlinked, by section (counted once per transaction, whether or not the key existed).",
		}, []string{"section"}),
		patterns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_pattern_invalidations_total",
			Help: "Sections invalidated by key pattern (SCAN + UNLINK) instead of exact keys, by reason.",
		}, []string{"section", "reason"}),
		transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcd_transactions_total",
			Help: "Committed transactions applied and acknowledged.",
		}),
		missingCols: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_missing_columns_total",
			Help: "Transactions in which a rule named a column its table no longer has (the rule fell back to wider invalidation).",
		}, []string{"rule", "table", "column"}),
		unchecked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_invariant_unchecked_rows_total",
			Help: "Rows an invariant could not be checked on (reason budget: the transaction outgrew CDCD_MAX_TX_BYTES; rules_changed: a reload between parts of a streamed transaction).",
		}, []string{"invariant", "table", "reason"}),
		commitToInval: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcd_commit_to_invalidate_seconds",
			Help:    "Time from a transaction's commit timestamp to Redis acknowledging its plan.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cdcd_apply_batch_transactions",
			Help:    "Transactions applied in one Redis round trip.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
	m.patternTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "cdcd_pattern_seconds",
		Help:    "Time one pattern job took to set its revision patterns and delete its key patterns (SCAN + UNLINK on every master).",
		Buckets: prometheus.ExponentialBuckets(.001, 4, 10),
	})
	m.patternWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "cdcd_pattern_wait_seconds",
		Help:    "Time a pattern job waited for a worker.",
		Buckets: prometheus.ExponentialBuckets(.001, 4, 10),
	})
	m.rescans = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cdcd_pattern_rescans_total",
		Help: "Pattern scans run a second time because Cluster slots moved while they ran (resharding).",
	})
	backlog := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cdcd_pattern_backlog",
		Help: "Pattern jobs queued or running. The confirmed position waits for the oldest.",
	}, func() float64 {
		if m.backlog == nil {
			return 0
		}
		n, _ := m.backlog()
		return float64(n)
	})
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cdcd_pattern_oldest_seconds",
		Help: "Age of the oldest pending pattern job: how far pattern work trails the stream.",
	}, func() float64 {
		if m.backlog == nil {
			return 0
		}
		_, age := m.backlog()
		return age.Seconds()
	})
	if reg != nil {
		reg.MustRegister(m.sinkErrors, m.violations, m.keysDeleted, m.patterns, m.transactions, m.missingCols, m.unchecked, m.commitToInval, m.batchSize,
			m.patternTime, m.patternWait, m.rescans, backlog, oldest)
	}
	return m
}

// Prepare creates the series of every section and invariant of f at zero,
// so rates and alerts work from the first event. Call it whenever rules
// are loaded.
func (m *Metrics) Prepare(f *rules.File) {
	m.sinkErrors.WithLabelValues("redis")
	for _, s := range f.Sections {
		m.keysDeleted.WithLabelValues(s.Name)
		for _, r := range []string{rules.ReasonOldRowUnknown, rules.ReasonValueUnknown, rules.ReasonTruncate, rules.ReasonMissingColumn, rules.ReasonEscalated} {
			m.patterns.WithLabelValues(s.Name, r)
		}
	}
	for _, inv := range f.Invariants {
		m.violations.WithLabelValues(inv.Name, inv.Table)
	}
}
