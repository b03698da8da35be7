package readthrough

import "github.com/prometheus/client_golang/prometheus"

// Reasons a fill is refused: labels of cdcd_readthrough_fills_refused_total.
const (
	RefusedRevisionMoved  = "revision_moved"  // a covering revision moved between its read and the fill
	RefusedReplicaBehind  = "replica_behind"  // the replica had not replayed the revision's commit in time
	RefusedReplicaUnknown = "replica_unknown" // a revision holds no LSN and Replica.Primary is not set
	RefusedError          = "error"           // Redis failed during the fill
)

type metrics struct {
	hits, misses, stored prometheus.Counter
	refused              *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcd_readthrough_hits_total", Help: "Get calls answered from the cache.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcd_readthrough_misses_total", Help: "Get calls that found no cached value.",
		}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcd_readthrough_fills_stored_total", Help: "Loaded values stored under unmoved revisions.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_readthrough_fills_refused_total", Help: "Loaded values returned but not stored, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{RefusedRevisionMoved, RefusedReplicaBehind, RefusedReplicaUnknown, RefusedError} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.hits, m.misses, m.stored, m.refused} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
