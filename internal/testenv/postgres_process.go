package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// start runs the postmaster on p.Port and waits until it accepts
// connections. busy reports that it failed because the port was taken.
// The caller holds p.mu or owns p exclusively.
func (p *Postgres) start(ctx context.Context) (busy bool, err error) {
	// A Unix socket path must fit in sockaddr_un (108 bytes); TCP is all the
	// tests use, so do without the socket rather than fail on a long TMPDIR.
	sockDir := p.base
	if len(sockDir)+len("/.s.PGSQL.65535.lock") >= 100 {
		sockDir = ""
	}
	args := []string{
		"-D", p.data,
		"-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + sockDir,
		"-c", "wal_level=logical",
		"-c", "max_replication_slots=20",
		"-c", "max_wal_senders=20",
		"-c", "wal_sender_timeout=60s",
		"-c", "max_connections=100",
		"-c", "shared_buffers=32MB",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		// Asynchronous commits reach the walsender only once flushed.
		"-c", "wal_writer_delay=10ms",
		"-c", "full_page_writes=off",
		"-c", "logging_collector=off",
	}
	args = append(args, p.extraArgs...)
	offset := fileSize(p.logFile)
	lf, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer lf.Close()
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
	cmd.Dir = p.base
	cmd.Stdout, cmd.Stderr = lf, lf // stdin is /dev/null: the server outlives our stdio
	// Own process group: Kill and Stop can reach every backend. Pdeathsig:
	// the server dies with the test process (on Linux).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return false, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited

	connURL := p.DatabaseURL("postgres")
	deadline := time.Now().Add(pgStartTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		dir, cerr := connectDataDirectory(cctx, connURL)
		cancel()
		if cerr == nil {
			if dir == filepath.Clean(p.data) {
				return false, nil
			}
			// Another server took the port between FreePort and our bind
			// (a concurrent start): ours cannot bind, and taking that one
			// for ours would make two Postgres values share a server.
			p.shutdown(syscall.SIGKILL)
			return true, fmt.Errorf("port %d: another server answers there (data directory %s)", p.Port, dir)
		}
		select {
		case <-exited:
			p.shutdown(syscall.SIGKILL)
			log := logTail(p.logFile, offset, logTailBytes)
			busy := strings.Contains(log, "Address already in use") || strings.Contains(log, "could not bind")
			return busy, fmt.Errorf("the server exited during startup (%v); log:\n%s", cmd.ProcessState, log)
		default:
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			p.shutdown(syscall.SIGKILL)
			reason := fmt.Sprintf("not accepting connections after %v: %v", pgStartTimeout, cerr)
			if ctx.Err() != nil {
				reason = fmt.Sprintf("waiting for the server: %v", ctx.Err())
			}
			return false, fmt.Errorf("%s; log:\n%s", reason, logTail(p.logFile, offset, logTailBytes))
		}
		select {
		case <-exited:
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connectDataDirectory connects to connURL and returns the server's data
// directory, which tells our server from another one on the same port.
func connectDataDirectory(ctx context.Context, connURL string) (string, error) {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var dir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dir); err != nil {
		return "", fmt.Errorf("show data_directory: %w", err)
	}
	return filepath.Clean(dir), nil
}

// shutdown signals the postmaster (SIGINT: fast shutdown; SIGKILL: crash),
// waits for it, then kills whatever is left of its process group. It is a
// no-op when the server is not running. The caller holds p.mu.
func (p *Postgres) shutdown(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	if sig == syscall.SIGKILL {
		crash(p.cmd.Process, p.exited, 10*time.Second)
	} else {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.exited:
		case <-time.After(pgShutdownTimeout):
			crash(p.cmd.Process, p.exited, 10*time.Second)
		}
	}
	<-p.exited
	p.cmd, p.exited = nil, nil
}

// crash kills a postmaster and all its children with SIGKILL. A
// process-group kill does not reach the children: each makes itself a group
// leader (setsid). Once the postmaster is dead they are orphans that still
// hold the server's shared memory for a while, and a restart then fails
// with "pre-existing shared memory block is still in use". So the
// postmaster is stopped first, where it can neither fork nor reap, its
// children are killed and awaited as zombies (their memory released, their
// pids not reusable while unreaped), and then the postmaster is killed.
func crash(postmaster *os.Process, exited <-chan struct{}, timeout time.Duration) {
	select {
	case <-exited:
		return // its children, if any, are no longer ours to find
	default:
	}
	// Signal goes through a pidfd: it cannot hit a reused pid.
	if postmaster.Signal(syscall.SIGSTOP) != nil {
		return
	}
	pid := strconv.Itoa(postmaster.Pid)
	deadline := time.Now().Add(timeout)
	for {
		st, ok := readProcStat(pid)
		if !ok || st.state == "T" || !st.alive() || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	children := childProcesses(postmaster.Pid)
	for _, c := range children {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	for _, c := range children {
		for {
			st, ok := readProcStat(strconv.Itoa(c))
			if !ok || !st.alive() || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	_ = postmaster.Signal(syscall.SIGKILL) // SIGKILL ends a stopped process too
}

// childProcesses returns the pids of the live children of process ppid.
func childProcesses(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		if st, ok := readProcStat(e.Name()); ok && st.ppid == ppid && st.alive() {
			pids = append(pids, st.pid)
		}
	}
	return pids
}

// Stop shuts the server down (fast shutdown: open transactions are rolled
// back) and removes its directory. It is idempotent. For an external server
// it does nothing but return an error.
func (p *Postgres) Stop() error {
	if !p.owned {
		return fmt.Errorf("stop postgres: %w", errExternal)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shutdown(syscall.SIGINT)
	if p.removed {
		return nil
	}
	p.removed = true
	if err := os.RemoveAll(p.base); err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	return nil
}

// Restart shuts the server down (fast) if it is running, then starts it
// again on the same port and data directory and waits until it accepts
// connections. After Kill, the server goes through crash recovery.
func (p *Postgres) Restart(ctx context.Context) error {
	if !p.owned {
		return fmt.Errorf("restart postgres: %w", errExternal)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed {
		return errors.New("restart postgres: the server was stopped and its directory removed")
	}
	p.shutdown(syscall.SIGINT)
	deadline := time.Now().Add(pgBusyRetry)
	for {
		busy, err := p.start(ctx)
		if err == nil {
			return nil
		}
		if !busy || time.Now().After(deadline) {
			return fmt.Errorf("restart postgres: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restart postgres: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Kill crashes the server: SIGKILL to the postmaster and then to its
// remaining processes, so connections drop at once and nothing is flushed.
// Restart starts it again, with crash recovery.
func (p *Postgres) Kill() error {
	if !p.owned {
		return fmt.Errorf("kill postgres: %w", errExternal)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return errors.New("kill postgres: the server is not running")
	}
	p.shutdown(syscall.SIGKILL)
	return nil
}
