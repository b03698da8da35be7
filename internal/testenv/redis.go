package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a running redis-server.
type Redis struct {
	URL  string // redis://127.0.0.1:PORT/0
	Addr string // 127.0.0.1:PORT
	Port int

	owned bool
	dir   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartRedis starts a private redis-server that keeps nothing on disk, or
// uses the one named by CDCD_TEST_REDIS_URL.
func StartRedis(ctx context.Context) (*Redis, error) {
	if u := os.Getenv("CDCD_TEST_REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("CDCD_TEST_REDIS_URL: %w", err)
		}
		_, port, _ := net.SplitHostPort(opt.Addr)
		n, _ := strconv.Atoi(port)
		r := &Redis{URL: u, Addr: opt.Addr, Port: n}
		if _, err := r.Do(ctx, "PING"); err != nil {
			return nil, fmt.Errorf("CDCD_TEST_REDIS_URL: %w", err)
		}
		return r, nil
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server not found: install Redis 7 or set CDCD_TEST_REDIS_URL")
	}
	dir, err := os.MkdirTemp("", "cdcd-redis-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{owned: true, dir: dir, Port: port, Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	r.URL = "redis://" + r.Addr + "/0"
	if err := r.start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

func (r *Redis) start(ctx context.Context) error {
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", "redis.log")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := r.Do(ctx, "PING"); err == nil {
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(r.dir + "/redis.log")
			return fmt.Errorf("start redis: the server exited:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return errors.New("start redis: no PONG after 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Redis) signal(sig syscall.Signal) error {
	if !r.owned {
		return errExternal
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return errors.New("redis is not running")
	}
	return r.cmd.Process.Signal(sig)
}

func (r *Redis) shutdown() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Stop stops the server and removes its directory. Idempotent.
func (r *Redis) Stop() error {
	if !r.owned {
		return nil
	}
	r.shutdown()
	return os.RemoveAll(r.dir)
}

// Restart stops the server and starts it again, empty, on the same port.
func (r *Redis) Restart(ctx context.Context) error {
	if !r.owned {
		return errExternal
	}
	r.shutdown()
	return r.start(ctx)
}

// Pause freezes the server (SIGSTOP): connections stay open, nothing answers.
func (r *Redis) Pause() error { return r.signal(syscall.SIGSTOP) }

// Resume thaws a paused server.
func (r *Redis) Resume() error { return r.signal(syscall.SIGCONT) }

// Do sends one command on a fresh connection and returns the reply as text.
func (r *Redis) Do(ctx context.Context, args ...string) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '-':
		return "", errors.New(line[1:])
	case '+', ':':
		return line[1:], nil
	case '$':
		// Bulk replies are read only by PING/INFO-style callers that do not
		// need the payload; report the length.
		return line, nil
	}
	return line, nil
}

// MustRedis starts a server for t or fails it (never skips); the server
// stops when t ends.
func MustRedis(t testing.TB) *Redis {
	t.Helper()
	r, err := StartRedis(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}
