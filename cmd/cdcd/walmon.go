package main

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// walMonitor watches what the slot costs the database: the WAL it retains
// and its wal_status, which reaches "lost" when the server removed WAL the
// slot needed.
type walMonitor struct {
	d        *daemon
	retained prometheus.Gauge
	every    time.Duration

	mu        sync.Mutex
	walStatus string
	lastWarn  time.Time
}

func newWALMonitor(d *daemon, every time.Duration) *walMonitor {
	w := &walMonitor{d: d, every: every,
		retained: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdcd_slot_retained_wal_bytes",
			Help: "WAL the server keeps for the slot (from its restart_lsn to the current position).",
		}),
	}
	d.reg.MustRegister(w.retained)
	return w
}

func (w *walMonitor) run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		if conn == nil || conn.IsClosed() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := pgx.Connect(cctx, w.d.cfg.DatabaseURL)
			cancel()
			if err == nil {
				conn = c
			}
		}
		if conn != nil {
			if err := w.sample(ctx, conn); err != nil && ctx.Err() == nil {
				w.d.log.Debug("cannot read the slot's WAL retention", "err", err)
				conn.Close(context.Background())
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *walMonitor) sample(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var retained *int64
	var status *string
	err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, w.d.cfg.Slot).Scan(&retained, &status)
	if err == pgx.ErrNoRows {
		return nil // not created yet
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if status != nil {
		w.walStatus = *status
	}
	if retained != nil {
		w.retained.Set(float64(*retained))
		if *retained > w.d.cfg.LagWarnBytes && time.Since(w.lastWarn) > 5*time.Minute {
			w.lastWarn = time.Now()
			w.d.log.Warn("the slot retains a lot of WAL on the database host",
				"slot", w.d.cfg.Slot, "retained_bytes", *retained, "warn_bytes", w.d.cfg.LagWarnBytes, "wal_status", w.walStatus)
		}
	}
	return nil
}

// status returns the slot's wal_status ("" until known).
func (w *walMonitor) status() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.walStatus
}
