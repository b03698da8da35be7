package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runBinary runs cdcd with args and exactly the given CDCD_* variables.
func runBinary(t *testing.T, timeout time.Duration, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("cdcd %v did not exit within %s:\n%s", args, timeout, out.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

func TestBadConfigurationStopsStartupNamingTheVariable(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"missing database URL", nil, "CDCD_DATABASE_URL"},
		{"malformed database URL", []string{"CDCD_DATABASE_URL=postgres://u:hunter2@[::1/db"}, "CDCD_DATABASE_URL"},
		{"malformed redis URL", []string{"CDCD_DATABASE_URL=postgres://localhost/db", "CDCD_REDIS_URL=http://x"}, "CDCD_REDIS_URL"},
		{"bad slot", []string{"CDCD_DATABASE_URL=postgres://localhost/db", "CDCD_SLOT=My-Slot"}, "CDCD_SLOT"},
		{"bad log level", []string{"CDCD_DATABASE_URL=postgres://localhost/db", "CDCD_LOG_LEVEL=loud"}, "CDCD_LOG_LEVEL"},
		{"bad duration", []string{"CDCD_DATABASE_URL=postgres://localhost/db", "CDCD_STATUS_INTERVAL=soon"}, "CDCD_STATUS_INTERVAL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := runBinary(t, 10*time.Second, c.env)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Errorf("want one line naming %s, got:\n%s", c.want, out)
			}
			if strings.Contains(out, "hunter2") {
				t.Errorf("the password appears in the output:\n%s", out)
			}
		})
	}
}

func TestBadRulesFileStopsStartup(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "rules.json")
	if err := os.WriteFile(bad, []byte(`{"sections": {"s": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["t"], "invalidate": ["nope"]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runBinary(t, 10*time.Second, []string{"CDCD_DATABASE_URL=postgres://localhost/db", "CDCD_RULES_FILE=" + bad})
	if code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if !strings.Contains(out, bad+":1:") || !strings.Contains(out, `unknown section "nope"`) {
		t.Errorf("the error does not say what and where:\n%s", out)
	}
}

func TestPasswordNeverLogged(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER ROLE cdcd PASSWORD 'hunter2secret'`)
	// A wrong port: cdcd keeps retrying and logging the failure.
	d := e.spawn("CDCD_DATABASE_URL=postgres://cdcd:hunter2secret@127.0.0.1:1/nowhere?sslmode=disable")
	waitFor(t, 10*time.Second, "a connection failure to be logged", func() bool {
		return len(d.logEntries("reconnecting")) > 0
	})
	for _, l := range d.log() {
		if strings.Contains(l, "hunter2secret") {
			t.Fatalf("password logged: %s", l)
		}
	}
}

func TestPublicationLackingARuleTableIsNamed(t *testing.T) {
	e := newEnv(t)
	e.exec(`ALTER PUBLICATION cdcd DROP TABLE climate_runs`)
	code, out := runBinaryEnv(t, e, 20*time.Second)
	if code == 0 {
		t.Fatalf("cdcd started although the publication lacks a rule table:\n%s", out)
	}
	if !strings.Contains(out, "public.climate_runs") {
		t.Errorf("the error does not name the missing table:\n%s", out)
	}
}

func runBinaryEnv(t *testing.T, e *env, timeout time.Duration) (int, string) {
	return runBinary(t, timeout, []string{
		"CDCD_DATABASE_URL=" + e.dbURL, "CDCD_REDIS_URL=" + rds.URL, "CDCD_RULES_FILE=" + e.rules,
		"CDCD_SLOT=" + e.slot, "CDCD_HTTP_ADDR=127.0.0.1:0", "CDCD_LOG_FORMAT=text",
	})
}

func TestReadyzReflectsRedis(t *testing.T) {
	e := newEnv(t)
	d := e.startDaemon()
	if err := rds.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rds.Resume(); err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, 10*time.Second, "/readyz to report Redis down", func() bool {
		code, _, err := d.get("/readyz")
		return err == nil && code == 503
	})
	if err := rds.Resume(); err != nil {
		t.Fatal(err)
	}
	d.waitReady(10 * time.Second)
	if code, _, _ := d.get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
}

// The dashboard and the alerting rules must only use metrics cdcd exports.
func TestDeployFilesReferenceExportedMetrics(t *testing.T) {
	e := newEnv(t)
	rcv := startReceiver(t)
	d := e.startDaemon("CDCD_ALERT_WEBHOOK_URL=" + rcv.url())
	e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	waitFor(t, 5*time.Second, "a transaction", func() bool { return d.metric("cdcd_transactions_total") > 0 })
	_, exported, err := d.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`cdcd_[a-z_]+`)
	for _, f := range []string{"deploy/grafana/cdcd.json", "deploy/prometheus/alerts.yml"} {
		data, err := os.ReadFile(filepath.Join(repoDir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllString(string(data), -1) {
			base := strings.TrimSuffix(m, "_bucket")
			if !strings.Contains(exported, "# TYPE "+base+" ") {
				t.Errorf("%s uses %s, which cdcd does not export", f, m)
			}
		}
	}
}
