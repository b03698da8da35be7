package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
)

// daemon is a running cdcd.
type daemon struct {
	cmd  *exec.Cmd
	addr string
}

// startCdcd starts cdcd on slot against the bench's Redis; env, after the
// bench's settings, may override them (a later setting wins).
func (b *bench) startCdcd(slot string, env ...string) (*daemon, error) {
	port, _ := testenv.FreePort()
	d := &daemon{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	d.cmd = exec.Command(b.bin)
	d.cmd.Env = append(os.Environ(), "CDCD_DATABASE_URL="+b.dbURL, "CDCD_REDIS_URL="+b.rds.URL,
		"CDCD_RULES_FILE="+filepath.Join(b.repo, "rules.json"), "CDCD_SLOT="+slot, "CDCD_HTTP_ADDR="+d.addr,
		"CDCD_LOG_LEVEL=warn", fmt.Sprintf("CDCD_PPROF=%t", *pprofDir != ""))
	d.cmd.Env = append(d.cmd.Env, env...)
	d.cmd.Stderr = os.Stderr
	return d, d.cmd.Start()
}

// metrics returns the daemon's unlabelled metrics by name.
func (d *daemon) metrics() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + d.addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if ok && !strings.HasPrefix(name, "#") && !strings.Contains(name, "{") {
			out[name], _ = strconv.ParseFloat(val, 64)
		}
	}
	return out
}

// profile saves a CPU profile of d over the next seconds as DIR/name.prof,
// when -pprof is set. It returns at once; wait for the result on the channel.
func (d *daemon) profile(name string, seconds int) <-chan error {
	done := make(chan error, 1)
	if *pprofDir == "" || seconds < 1 {
		done <- nil
		return done
	}
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", d.addr, seconds)
		var resp *http.Response
		var err error
		for range 50 { // the daemon may still be starting
			if resp, err = http.Get(url); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if err := os.MkdirAll(*pprofDir, 0o755); err != nil {
			done <- err
			return
		}
		f, err := os.Create(filepath.Join(*pprofDir, name+".prof"))
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		done <- errors.Join(err, f.Close())
	}()
	return done
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
}

// runTime returns the time the process's live threads have spent on a CPU,
// from the scheduler's own clock.
func runTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

func peakRSS(pid int) int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
