package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cdcd/cdcd/internal/pollconn"
	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/cdcd/cdcd/sinks"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
)

// daemon is a running cdcd: the replication stream feeding the sinks, the
// rules they evaluate under, and the HTTP endpoints.
type daemon struct {
	cfg    *Config
	log    *slog.Logger
	reg    *prometheus.Registry
	rules  atomic.Pointer[rules.Rules]
	stream *replication.Stream[*rules.Builder]
	redis  *sinks.Redis
	// state is what cdcd recorded about its slot: which server it
	// streamed from, and where it stopped.
	state sinks.StateStore
	// vis holds batches back until they are visible, under synchronous
	// replication.
	vis *visibility
	// applier applies every plan, the stream's and a gap's.
	applier     *sinks.Applier
	webhook     *sinks.Webhook // nil without CDCD_ALERT_WEBHOOK_URL
	verify      *verifier
	wal         *walMonitor
	sinkMetrics *sinks.Metrics
	reloadMu    sync.Mutex
	// server is the server and timeline of the session streaming now, as
	// recorded in Redis at its start.
	server atomic.Pointer[sinks.State]
	// lostWrites says why the session before found that Redis lost writes.
	lostWrites atomic.Pointer[string]

	reloads       *prometheus.CounterVec
	gaps          *prometheus.CounterVec
	rulesLoadedAt prometheus.Gauge
}

func runDaemon(ctx context.Context, stderr io.Writer) int {
	cfg, err := loadConfig()
	if err != nil {
		// One line per bad variable, each naming it.
		for line := range strings.Lines(err.Error()) {
			fmt.Fprintln(stderr, "cdcd: "+strings.TrimSuffix(line, "\n"))
		}
		return exitUsage
	}
	rs, err := rules.Load(cfg.RulesFile, cfg.ruleOptions()...)
	if err != nil {
		// One line per problem, FILE:LINE:COL first, as rules check prints them.
		for line := range strings.Lines(err.Error()) {
			fmt.Fprintln(stderr, "cdcd: "+strings.TrimSuffix(line, "\n"))
		}
		return exitUsage
	}
	log := newLogger(cfg, stderr)
	if os.Getenv("GOMAXPROCS") == "" {
		// One receive loop and one applier take turns on one CPU: with two,
		// the runtime spends more waking threads for every hand-off than
		// the work itself costs (docs/performance.md).
		runtime.GOMAXPROCS(1)
	}
	d, err := newDaemon(cfg, log, rs)
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitUsage
	}
	if err := d.run(ctx); err != nil {
		log.Error("stopped", "err", err)
		if errors.Is(err, replication.ErrConfig) {
			return exitUsage // only an operator can fix it
		}
		return exitFailure
	}
	log.Info("stopped")
	return exitOK
}

func newDaemon(cfg *Config, log *slog.Logger, rs *rules.Rules) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	d.rules.Store(rs)
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdcd_rules_reload_total",
		Help: "Rules file reloads, by result (ok or error).",
	}, []string{"result"})
	d.rulesLoadedAt = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cdcd_rules_loaded_timestamp_seconds",
		Help: "When the rules in use were loaded, as a Unix time.",
	})
	d.gaps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cdcd_gap_invalidations_total",
		Help: "Times every section was invalidated because cdcd could not prove it saw every change, by reason.",
	}, []string{"reason"})
	for _, r := range gapReasons {
		d.gaps.WithLabelValues(r)
	}
	d.reg.MustRegister(d.reloads, d.rulesLoadedAt, d.gaps)
	d.reloads.WithLabelValues("ok")
	d.reloads.WithLabelValues("error")
	d.rulesLoadedAt.SetToCurrentTime()

	d.verify = newVerifier(d)
	d.vis = &visibility{dbURL: cfg.DatabaseURL, log: log}
	d.wal = newWALMonitor(d, cfg.WALPoll)
	m := sinks.NewMetrics(d.reg)
	m.Prepare(rs.File())
	d.sinkMetrics = m
	redisSink, err := sinks.NewRedis(sinks.RedisConfig{
		URL: cfg.RedisURL, Mode: cfg.RedisMode, Slot: cfg.Slot,
		TLS:          sinks.TLSFiles{CA: cfg.RedisTLSCAFile, Cert: cfg.RedisTLSCertFile, Key: cfg.RedisTLSKeyFile},
		WaitReplicas: cfg.RedisWait, WaitTimeout: cfg.RedisWaitTimeout, ShardedPubSub: cfg.RedisSPublish,
		PatternWorkers: cfg.PatternWorkers, PatternQueue: cfg.PatternQueue, ScanCount: cfg.ScanCount,
		RawSockets: cfg.RawSockets,
		Logger:     log,
	}, m)
	if err != nil {
		return nil, err
	}
	d.redis = redisSink
	d.state = redisSink.State(cfg.Slot)
	if cfg.AlertWebhookURL != "" {
		d.webhook = sinks.NewWebhook(sinks.WebhookConfig{
			URL: cfg.AlertWebhookURL, Instance: cfg.Instance, Buffer: cfg.AlertBuffer,
			Logger: log, Registerer: d.reg,
		})
	}
	applier := sinks.NewApplier(sinks.NewAlerts(log, m, d.webhook), m, redisSink)
	d.applier = applier

	d.stream, err = replication.New(replication.Config[*rules.Builder]{
		DatabaseURL: cfg.DatabaseURL,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		Tables:      func() []string { return d.rules.Load().Tables() },
		Begin:       func(b replication.Begin) *rules.Builder { return d.rules.Load().Begin(b) },
		// The catalog check of rules check, before each session (and each reload).
		CheckPublication: d.checkPublication,
		Apply: func(ctx context.Context, batch []replication.Committed[*rules.Builder]) error {
			if err := d.visible(ctx, batch); err != nil {
				return err
			}
			return applier.Apply(ctx, plans(batch))
		},
		OnStart:       d.onStart,
		BeforeConfirm: d.beforeConfirm,
		Confirmable:   applier.Confirmable,
		// Marking every master, and WAITing for replicas there.
		ConfirmTimeout:  max(2*time.Second, cfg.RedisWaitTimeout+time.Second),
		StatusInterval:  cfg.StatusInterval,
		SilenceTimeout:  cfg.SilenceTimeout,
		ShutdownTimeout: cfg.ShutdownTimeout,
		ApplyRate:       cfg.ApplyRate,
		RawSockets:      cfg.RawSockets,
		Logger:          log,
		Registerer:      d.reg,
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// plans finishes the plan of each committed transaction. A transaction's
// rules were fixed when it began, so a reload never splits one.
func plans(batch []replication.Committed[*rules.Builder]) []*rules.Plan {
	out := make([]*rules.Plan, len(batch))
	for i, c := range batch {
		out[i] = c.Tx.Plan(c.Commit)
		out[i].Inexact = c.Inexact
	}
	return out
}

func (d *daemon) run(ctx context.Context) error {
	defer d.redis.Close()
	srv, err := d.listen()
	if err != nil {
		return err
	}
	d.log.Info("starting", "version", version(), "slot", d.cfg.Slot, "publication", d.cfg.Publication,
		"rules", d.cfg.RulesFile, "tables", d.rules.Load().Tables(), "http", srv.Addr,
		"raw_sockets", d.cfg.RawSockets && pollconn.Available)

	d.checkEviction(ctx)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := d.stream.Run(gctx)
		if err != nil {
			return fmt.Errorf("replication: %w", err)
		}
		return nil
	})
	g.Go(func() error { return d.serve(gctx, srv) })
	g.Go(func() error { d.redis.Run(gctx); return nil })
	g.Go(func() error { d.reloadOnHangup(gctx); return nil })
	g.Go(func() error { d.watchRulesFile(gctx, d.cfg.RulesPoll); return nil })
	g.Go(func() error { d.verify.run(gctx); return nil })
	g.Go(func() error { d.wal.run(gctx); return nil })
	if d.webhook != nil {
		g.Go(func() error { d.webhook.Run(gctx); return nil })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// reloadOnHangup reloads the rules file on SIGHUP. A file that does not
// load is rejected and the rules in use stay.
func (d *daemon) reloadOnHangup(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.reload()
		}
	}
}

// reload loads the rules file again. Reloads come from SIGHUP and the file
// watcher; they are serialised.
func (d *daemon) reload() {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	start := time.Now()
	rs, err := rules.Load(d.cfg.RulesFile, d.cfg.ruleOptions()...)
	if err == nil {
		err = d.admitRules(rs)
	}
	if err != nil {
		d.reloads.WithLabelValues("error").Inc()
		d.log.Error("rules reload rejected; keeping the rules in use", "file", d.cfg.RulesFile, "err", err)
		return
	}
	d.sinkMetrics.Prepare(rs.File())
	old := d.rules.Swap(rs)
	d.reloads.WithLabelValues("ok").Inc()
	d.rulesLoadedAt.SetToCurrentTime()
	d.log.Info("rules reloaded", "file", d.cfg.RulesFile, "tables", rs.Tables(), "took", time.Since(start))
	d.verify.again()
	if added := newTables(old.Tables(), rs.Tables()); len(added) > 0 {
		d.publish(rs.Tables(), added)
	}
}

// publish makes the publication carry the tables of reloaded rules: cdcd
// adds them to a publication it created; otherwise a DBA must.
func (d *daemon) publish(tables, added []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changed, err := replication.EnsurePublication(ctx, d.cfg.DatabaseURL, d.cfg.Publication, tables)
	var pe *replication.PublicationError
	switch {
	case errors.As(err, &pe):
		d.log.Error("reloaded rules name tables the publication lacks; changes to them are not streamed until a DBA adds them",
			"publication", d.cfg.Publication, "tables", pe.Missing,
			"fix", "ALTER PUBLICATION "+d.cfg.Publication+" ADD TABLE "+strings.Join(pe.Missing, ", "))
	case err != nil:
		d.log.Error("cannot check the publication for the reloaded rules' new tables", "tables", added, "err", err)
	case changed:
		d.log.Info("added the reloaded rules' new tables to the publication", "publication", d.cfg.Publication, "tables", added)
	}
}

// watchRulesFile reloads the rules when the file changes on disk: edited in
// place, or replaced by a rename (as editors, deploy tools and Kubernetes
// ConfigMap updates do). Changes are debounced until the file is still.
func (d *daemon) watchRulesFile(ctx context.Context, every time.Duration) {
	last, _ := fileStamp(d.cfg.RulesFile)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := fileStamp(d.cfg.RulesFile)
		if err != nil || cur == last {
			continue // a missing file mid-rename: wait for it
		}
		// Debounce: wait until two stamps in a row agree.
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
			next, err := fileStamp(d.cfg.RulesFile)
			if err == nil && next == cur {
				break
			}
			cur = next
		}
		last = cur
		d.log.Info("rules file changed on disk; reloading", "file", d.cfg.RulesFile)
		d.reload()
	}
}

type stamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func fileStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	st := stamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

func newTables(old, cur []string) []string {
	seen := make(map[string]bool, len(old))
	for _, t := range old {
		seen[t] = true
	}
	var out []string
	for _, t := range cur {
		if !seen[t] {
			out = append(out, t)
		}
	}
	return out
}
