package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// plainBinary is cdcd built without the race detector, whose shadow memory
// would swamp a memory measurement.
func plainBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cdcd-plain")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cdcd")
	build.Dir = repoDir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// peakRSS returns a process's peak resident set size in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// A 5-million-row UPDATE in one transaction, every row moving to a new run:
// 10 million distinct keys. cdcd escalates to the section's pattern after
// CDCD_MAX_TX_KEYS and stays under 100 MB.
func TestFiveMillionRowUpdateBoundedMemory(t *testing.T) {
	const rows = 5_000_000
	e := newEnv(t)
	start := time.Now()
	e.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, $1) g`, rows)
	t.Logf("inserted %d rows in %s", rows, time.Since(start).Round(time.Second))

	saved := binary
	binary = plainBinary(t)
	defer func() { binary = saved }()
	d := e.startDaemon()

	e.set("nodb:1:climate", "nodb:4999999:climate", "unrelated")
	start = time.Now()
	_, end := e.write(`UPDATE climate_runs SET run_id = run_id + $1`, rows)
	t.Logf("updated in %s", time.Since(start).Round(time.Second))
	e.waitConfirmed(end, 5*time.Minute)
	t.Logf("applied %s after the commit", time.Since(start).Round(time.Second))

	rss := peakRSS(t, d.cmd.Process.Pid)
	t.Logf("peak RSS %.1f MB", float64(rss)/(1<<20))
	if rss > 100<<20 {
		t.Errorf("peak RSS %d MB, want under 100 MB", rss>>20)
	}
	if n := d.metric("cdcd_pattern_invalidations_total", "section=run.climate", "reason=escalated"); n != 1 {
		t.Errorf("%v escalated pattern invalidations, want 1", n)
	}
	if n := d.metric("cdcd_changes_total", "table=public.climate_runs", "op=update"); n != rows {
		t.Errorf("%v updates received, want %d", n, rows)
	}
	for _, k := range []string{"nodb:1:climate", "nodb:4999999:climate"} {
		if e.exists(k) {
			t.Errorf("%s survived", k)
		}
	}
	if !e.exists("unrelated") {
		t.Error("the pattern deleted a key outside the section")
	}
}
