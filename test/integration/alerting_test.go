package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// receiver is a webhook receiver that records the alerts posted to it and
// can be taken down and brought back on the same address.
type receiver struct {
	t    *testing.T
	addr string

	mu     sync.Mutex
	alerts []map[string]any
	posts  int
	srv    *http.Server
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, addr: ln.Addr().String()}
	r.serve(ln)
	t.Cleanup(r.down)
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/api/v2/alerts" }

func (r *receiver) serve(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v2/alerts", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var batch []map[string]any
		if err := json.Unmarshal(body, &batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.posts++
		r.alerts = append(r.alerts, batch...)
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	r.srv = &http.Server{Handler: mux}
	go r.srv.Serve(ln) //nolint:errcheck // returns http.ErrServerClosed once down closes it
}

func (r *receiver) down() {
	if r.srv != nil {
		r.srv.Close()
		r.srv = nil
	}
}

func (r *receiver) up() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve(ln)
}

func (r *receiver) received() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.alerts...)
}

func insertImpactFunction(e *env, arrayLen int) {
	e.t.Helper()
	e.exec(`INSERT INTO impact_functions (name, hazard, intensity_unit, mdd_x, mdd_y, paa_x, paa_y, attribution)
		SELECT 'f', 'flood', 'm', a, a, a, a, 'JRC'
		FROM (SELECT array_agg(g::float8 / 7) AS a FROM generate_series(1, $1) g) s`, arrayLen)
}

func TestVersionBumpAlertReachesWebhook(t *testing.T) {
	e := newEnv(t)
	insertImpactFunction(e, 5)
	rcv := startReceiver(t)
	d := e.startDaemon("CDCD_ALERT_WEBHOOK_URL="+rcv.url(), "CDCD_INSTANCE=cdcd-test-1")
	violations := func() float64 {
		return d.metric("cdcd_invariant_violations_total", "invariant=impact-function-version-bump")
	}

	_, end := e.write(`UPDATE impact_functions SET mdd_y[2] = 42, intensity_unit = 'cm'`)
	e.waitConfirmed(end, 10*time.Second)
	waitFor(t, 5*time.Second, "the alert to be posted", func() bool { return len(rcv.received()) == 1 })

	// With a bump, and an attribution-only change: nothing more.
	e.write(`UPDATE impact_functions SET mdd_y[3] = 43, version = version + 1`)
	_, end = e.write(`UPDATE impact_functions SET attribution = 'JRC 2025'`)
	e.waitConfirmed(end, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	got := rcv.received()
	if len(got) != 1 || rcv.posts != 1 {
		t.Fatalf("%d alerts in %d posts, want exactly one", len(got), rcv.posts)
	}
	if n := violations(); n != 1 {
		t.Errorf("counter %v, want 1", n)
	}
	a := got[0]
	labels, _ := a["labels"].(map[string]any)
	for k, want := range map[string]string{
		"alertname": "CdcdInvariantViolation", "invariant": "impact-function-version-bump",
		"table": "public.impact_functions", "severity": "warning",
	} {
		if labels[k] != want {
			t.Errorf("label %s = %v, want %q", k, labels[k], want)
		}
	}
	ann, _ := a["annotations"].(map[string]any)
	if s, _ := ann["summary"].(string); !strings.Contains(s, "without a version bump") {
		t.Errorf("summary %q", s)
	}
	desc, _ := ann["description"].(string)
	for _, want := range []string{"mdd_y", "intensity_unit", "m -> cm", "version", "cdcd-test-1", "xid"} {
		if !strings.Contains(desc, want) {
			t.Errorf("description lacks %q:\n%s", want, desc)
		}
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(a["startsAt"])); err != nil {
		t.Errorf("startsAt %v: %v", a["startsAt"], err)
	}
	// One violation lists every changed column.
	var changed []map[string]any
	_ = json.Unmarshal([]byte(fmt.Sprint(ann["changed"])), &changed)
	if len(changed) != 2 {
		t.Errorf("changed = %v, want mdd_y and intensity_unit", ann["changed"])
	}
}

func TestInvariantSemantics(t *testing.T) {
	e := newEnv(t)
	// 4,000 float8 per array: about 32 kB each, TOASTed out of line.
	insertImpactFunction(e, 4000)
	var external bool
	if err := e.db.QueryRow(context.Background(),
		`SELECT pg_column_size(mdd_x) < octet_length(mdd_x::text) FROM impact_functions`).Scan(&external); err != nil || !external {
		t.Fatalf("the coefficient arrays are not TOASTed (%v)", err)
	}
	d := e.startDaemon()
	count := func() float64 {
		return d.metric("cdcd_invariant_violations_total", "invariant=impact-function-version-bump")
	}
	step := func(name string, want float64, sql ...string) {
		t.Helper()
		ctx := context.Background()
		tx, err := e.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sql {
			if _, err := tx.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		e.waitConfirmed(e.lsn(), 10*time.Second)
		time.Sleep(100 * time.Millisecond)
		if got := count(); got != want {
			t.Errorf("%s: violations counter %v, want %v", name, got, want)
		}
	}
	step("TOASTed arrays unchanged, attribution changed", 0, `UPDATE impact_functions SET attribution = 'x'`)
	step("TOASTed array changed without bump", 1, `UPDATE impact_functions SET mdd_y[100] = -1`)
	step("coefficients then version in two statements", 1,
		`UPDATE impact_functions SET paa_y[1] = -2`, `UPDATE impact_functions SET version = version + 1`)
	step("changed and changed back", 1,
		`UPDATE impact_functions SET intensity_unit = 'ft'`, `UPDATE impact_functions SET intensity_unit = 'm'`)
	step("intensity unit changed", 2, `UPDATE impact_functions SET intensity_unit = 'cm'`)
	step("inserted and updated in one transaction", 2,
		`INSERT INTO impact_functions (name, hazard, intensity_unit, mdd_x, mdd_y, paa_x, paa_y) VALUES ('g', 'h', 'm', '{1}', '{1}', '{1}', '{1}')`,
		`UPDATE impact_functions SET mdd_y = '{2}' WHERE name = 'g'`)
	if n := len(d.logEntries("invariant violated")); n != 2 {
		t.Errorf("%d violation log lines, want 2", n)
	}
}

func TestWebhookDownDoesNotBlockInvalidation(t *testing.T) {
	e := newEnv(t)
	insertImpactFunction(e, 3)
	rcv := startReceiver(t)
	d := e.startDaemon("CDCD_ALERT_WEBHOOK_URL="+rcv.url(), "CDCD_ALERT_BUFFER=5")
	rcv.down()
	downAt := time.Now()

	// Eight violations while the receiver is down; the buffer holds five.
	for i := 1; i <= 8; i++ {
		e.set("nodb:1:climate")
		e.write(`UPDATE impact_functions SET mdd_y[1] = $1`, i)
		start := time.Now()
		e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
		e.gone("nodb:1:climate")
		t.Logf("violation %d: key gone %s after the commit", i, time.Since(start).Round(time.Millisecond))
	}
	// Down for 10 s in all.
	time.Sleep(10*time.Second - time.Since(downAt))
	if n := d.metric("cdcd_invariant_violations_total"); n != 8 {
		t.Errorf("counter %v, want 8", n)
	}
	dropped := d.metric("cdcd_alert_webhook_dropped_total")
	rcv.up()
	// Backoff is capped at 30s, but the first retries come sooner.
	waitFor(t, 40*time.Second, "the buffered alerts to arrive", func() bool { return len(rcv.received()) >= 8-int(dropped) })
	time.Sleep(500 * time.Millisecond)
	got := len(rcv.received())
	if float64(got)+dropped != 8 || got < 5 {
		t.Errorf("%d delivered + %v dropped, want 8 with at least the buffer's 5 delivered", got, dropped)
	}
	if dropped == 0 {
		t.Error("overflow was not counted")
	}
	if d.metric("cdcd_alert_webhook_posts_total", "result=error") == 0 {
		t.Error("failed posts were not counted")
	}
}

func TestUnverifiableInvariantReported(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER TABLE impact_functions REPLICA IDENTITY DEFAULT`)
	d := e.startDaemon()
	waitFor(t, 10*time.Second, "the invariant to be reported unverifiable", func() bool {
		return d.metric("cdcd_invariant_unverifiable", "invariant=impact-function-version-bump") == 1
	})
	if len(d.logEntries("invariant cannot be checked")) == 0 {
		t.Error("no error log for the unverifiable invariant")
	}
	_, body, _ := d.get("/readyz")
	if !strings.Contains(body, "impact-function-version-bump") {
		t.Errorf("/readyz does not mention the invariant: %s", body)
	}

	// Fixed, then reloaded: verifiable. Then a reload with a rules file
	// whose invariant names a column that does not exist: unverifiable.
	e.exec(`ALTER TABLE impact_functions REPLICA IDENTITY FULL`)
	rules, err := os.ReadFile(e.rules)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	d.stop(syscall.SIGTERM, 10*time.Second)
	e.rules = path
	d = e.startDaemon()
	waitFor(t, 10*time.Second, "the invariant to be verifiable", func() bool {
		return d.metric("cdcd_rules_reload_total") == 0 && len(d.logEntries("invariant cannot be checked")) == 0 &&
			metricPresent(d, "cdcd_invariant_unverifiable")
	})
	if v := d.metric("cdcd_invariant_unverifiable", "invariant=impact-function-version-bump"); v != 0 {
		t.Fatalf("unverifiable = %v with FULL identity", v)
	}
	broken := strings.Replace(string(rules), `"require_changed": ["version"]`, `"require_changed": ["revision"]`, 1)
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reloaded invariant to be reported unverifiable", func() bool {
		return d.metric("cdcd_invariant_unverifiable", "invariant=impact-function-version-bump") == 1
	})
	if d.metric("cdcd_rules_reload_total", "result=ok") != 1 {
		t.Error("reload not counted")
	}
}

func metricPresent(d *daemon, name string) bool {
	_, body, err := d.get("/metrics")
	return err == nil && strings.Contains(body, name+"{")
}
