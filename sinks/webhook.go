package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/cdcd/cdcd/internal/retry"
	"github.com/cdcd/cdcd/rules"
	"github.com/prometheus/client_golang/prometheus"
)

// WebhookConfig configures the alert webhook.
type WebhookConfig struct {
	// URL receives POSTs of alerts in the Alertmanager v2 /api/v2/alerts
	// format: a JSON array of {labels, annotations, startsAt}.
	URL string
	// Instance names this daemon in every alert.
	Instance string
	// Buffer is how many alerts may wait for delivery. Default 1000.
	Buffer int
	// MaxBatch is the most alerts one POST carries. Default 64.
	MaxBatch int
	// Timeout bounds one POST. Default 10s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between attempts. Defaults
	// 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	Registerer             prometheus.Registerer
}

// Webhook delivers violations to an HTTP receiver, such as Alertmanager.
// Delivery never blocks invalidation: violations wait in a bounded buffer
// and are retried with backoff until the receiver accepts them; when the
// buffer is full, new violations are dropped from the webhook (they are
// still logged and counted) and the drop is counted.
type Webhook struct {
	cfg    WebhookConfig
	log    *slog.Logger
	client *http.Client
	queue  chan amAlert

	posts   *prometheus.CounterVec
	dropped prometheus.Counter
	queued  prometheus.GaugeFunc
}

// amAlert is one alert in Alertmanager's v2 API format.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// NewWebhook returns the webhook sink; Run delivers what it queues.
func NewWebhook(cfg WebhookConfig) *Webhook {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 1000
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Webhook{
		cfg:    cfg,
		log:    log,
		client: &http.Client{Timeout: cfg.Timeout},
		queue:  make(chan amAlert, cfg.Buffer),
		posts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdcd_alert_webhook_posts_total",
			Help: "POSTs to the alert webhook, by result (ok or error).",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdcd_alert_webhook_dropped_total",
			Help: "Violations not sent to the webhook because its buffer was full (they are still logged and counted).",
		}),
	}
	w.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cdcd_alert_webhook_queued",
		Help: "Violations waiting for delivery to the webhook.",
	}, func() float64 { return float64(len(w.queue)) })
	w.posts.WithLabelValues("ok")
	w.posts.WithLabelValues("error")
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(w.posts, w.dropped, w.queued)
	}
	return w
}

// Enqueue queues a violation for delivery without blocking.
func (w *Webhook) Enqueue(v *rules.Violation) {
	select {
	case w.queue <- w.alert(v):
	default:
		w.dropped.Inc()
		w.log.Warn("alert webhook buffer full; violation not sent to the webhook", "invariant", v.Invariant, "lsn", v.LSN)
	}
}

// Run delivers queued alerts until ctx is done.
func (w *Webhook) Run(ctx context.Context) {
	batch := make([]amAlert, 0, w.cfg.MaxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-w.queue:
			batch = append(batch[:0], a)
		}
	fill:
		for len(batch) < w.cfg.MaxBatch {
			select {
			case a := <-w.queue:
				batch = append(batch, a)
			default:
				break fill
			}
		}
		attempts, err := retry.Until(ctx, retry.Backoff{Min: w.cfg.MinBackoff, Max: w.cfg.MaxBackoff},
			func() error { return w.post(ctx, batch) },
			func(err error, attempt int, delay time.Duration) {
				w.posts.WithLabelValues("error").Inc()
				w.log.Warn("alert webhook failed; retrying", "err", err, "attempt", attempt, "retry_in", delay, "alerts", len(batch))
			})
		if err != nil {
			return
		}
		w.posts.WithLabelValues("ok").Inc()
		if attempts > 1 {
			w.log.Info("alert webhook recovered", "attempts", attempts, "alerts", len(batch))
		}
	}
}

func (w *Webhook) post(ctx context.Context, alerts []amAlert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cdcd")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// alert renders a violation in Alertmanager's format. Values are whole,
// unlike in the log.
func (w *Webhook) alert(v *rules.Violation) amAlert {
	pk := make([]string, 0, len(v.PrimaryKey))
	for _, c := range v.PrimaryKey {
		pk = append(pk, c.Column+"="+show(c.Value))
	}
	var desc strings.Builder
	fmt.Fprintf(&desc, "%s\ntable %s, row %s\n", v.Message, v.Table, strings.Join(pk, ", "))
	for _, c := range v.Changed {
		fmt.Fprintf(&desc, "changed %s: %s -> %s\n", c.Column, show(c.Old), show(c.New))
	}
	for _, c := range v.Required {
		fmt.Fprintf(&desc, "unchanged %s: %s\n", c.Column, show(c.New))
	}
	fmt.Fprintf(&desc, "commit %s, xid %d, at %s", v.LSN, v.Xid, v.CommitTime.UTC().Format(time.RFC3339Nano))
	if w.cfg.Instance != "" {
		fmt.Fprintf(&desc, ", seen by %s", w.cfg.Instance)
	}
	changed, _ := json.Marshal(v.Changed)
	required, _ := json.Marshal(v.Required)
	a := amAlert{
		Labels: map[string]string{
			"alertname":   "CdcdInvariantViolation",
			"invariant":   v.Invariant,
			"table":       v.Table,
			"severity":    v.Severity,
			"primary_key": strings.Join(pk, ","),
		},
		Annotations: map[string]string{
			"summary":     fmt.Sprintf("%s: %s", v.Invariant, v.Message),
			"description": desc.String(),
			"changed":     string(changed),
			"unchanged":   string(required),
			"lsn":         v.LSN,
			"xid":         fmt.Sprint(v.Xid),
			"commit_time": v.CommitTime.UTC().Format(time.RFC3339Nano),
		},
		StartsAt: v.CommitTime.UTC(),
	}
	if w.cfg.Instance != "" {
		a.Labels["instance"] = w.cfg.Instance
		a.Annotations["instance"] = w.cfg.Instance
	}
	return a
}

func show(v *string) string {
	if v == nil {
		return "NULL"
	}
	return *v
}
