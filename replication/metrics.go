package replication

import (
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	changes      *prometheus.CounterVec
	confirmedLSN prometheus.Gauge
	lagBytes     prometheus.Gauge
	reconnects   prometheus.Counter
	standby      prometheus.Gauge
	paced        prometheus.Counter
	// byTable caches the per-operation counters of each table so the
	// per-change path does no label lookup.
	byTable map[string]*[OpTruncate + 1]prometheus.Counter
	counter map[uint32]*[OpTruncate + 1]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_changes_total",
			Help: "Row changes received from the replication stream, by table and operation.",
		}, []string{"table", "op"}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcd_confirmed_lsn",
			Help: "Flush position last confirmed to the server, as a number.",
		}),
		lagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcd_replication_lag_bytes",
			Help: "Bytes of WAL the server has sent or announced beyond the confirmed position.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcd_replication_reconnects_total",
			Help: "Replication sessions that ended and were retried.",
		}),
		standby: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcd_standby",
			Help: "1 while another consumer holds the slot and this instance waits to take over.",
		}),
		paced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcd_apply_paced_seconds_total",
			Help: "Time the applier waited to pace round trips under load (CDCD_APPLY_RATE).",
		}),
		byTable: make(map[string]*[OpTruncate + 1]prometheus.Counter),
		counter: make(map[uint32]*[OpTruncate + 1]prometheus.Counter),
	}
	if reg != nil {
		reg.MustRegister(m.changes, m.confirmedLSN, m.lagBytes, m.reconnects, m.standby, m.paced)
	}
	return m
}

// attach binds a relation's counters. Called from the receive goroutine only.
func (m *metrics) attach(rel *Relation) {
	t := rel.Table()
	c, ok := m.byTable[t]
	if !ok {
		c = new([OpTruncate + 1]prometheus.Counter)
		for op := OpInsert; op <= OpTruncate; op++ {
			c[op] = m.changes.WithLabelValues(t, op.String())
		}
		m.byTable[t] = c
	}
	m.counter[rel.ID] = c
}

func (m *metrics) countChange(c *Change) {
	if cs := m.counter[c.Rel.ID]; cs != nil && c.Op <= OpTruncate {
		cs[c.Op].Inc()
	}
}

func (m *metrics) observeLag(serverEnd, flush pglogrepl.LSN) {
	if serverEnd > flush {
		m.lagBytes.Set(float64(serverEnd - flush))
	} else {
		m.lagBytes.Set(0)
	}
}
