package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	envRedisURL = "CDCD_TEST_REDIS_URL"

	redisStartTimeout    = 20 * time.Second
	redisShutdownTimeout = 10 * time.Second
	redisBusyRetry       = 10 * time.Second // how long Restart retries a busy port
	redisDoTimeout       = 30 * time.Second // Do's limit when ctx has no deadline
	redisLogName         = "redis.log"
)

// Redis is a running redis-server.
type Redis struct {
	URL  string // redis://127.0.0.1:PORT/0
	Addr string // 127.0.0.1:PORT
	Port int

	owned bool   // false when the server is external
	dir   string // temporary directory: working dir and log

	// Connection settings for Do, from the URL of an external server.
	tls            bool
	user, password string
	db             int

	tlsConf *tls.Config // for Do on a private TLS server: trusts its CA, presents a client certificate
	spec    redisSpec   // how a private server is run
	busPort int         // the cluster bus port of a cluster node, else 0

	mu      sync.Mutex // serialises Stop, Restart, Kill, Pause and Resume
	cmd     *exec.Cmd  // the server, nil when not running
	exited  chan struct{}
	removed bool // Stop has removed dir
}

// StartRedis starts a private redis-server on a free 127.0.0.1 port that
// keeps nothing on disk (no RDB snapshots, no AOF) and publishes no keyspace
// notifications, and waits until it answers PING. The server keeps running
// after ctx ends, until Stop. Options add TLS (WithTLS) and ACL users
// (WithACLUser).
//
// If CDCD_TEST_REDIS_URL is set and no option is given, StartRedis uses that
// server instead (after a PING); Stop, Restart, Kill, Pause and Resume then
// return an error. With options it always starts a private server: an
// external one could not be made to honour them.
func StartRedis(ctx context.Context, opts ...RedisOption) (*Redis, error) {
	if u := os.Getenv(envRedisURL); u != "" && len(opts) == 0 {
		return externalRedis(ctx, u)
	}
	o, err := collectRedisOptions(opts)
	if err == nil && o.replicaProxy {
		err = errReplicaProxyOnlySentinel
	}
	if err != nil {
		return nil, fmt.Errorf("start redis: %w", err)
	}
	r, err := startRedisServer(ctx, redisSpec{opts: o, args: o.args})
	if err != nil {
		return nil, fmt.Errorf("start redis: %w", err)
	}
	return r, nil
}

// externalRedis checks the server named by CDCD_TEST_REDIS_URL.
func externalRedis(ctx context.Context, raw string) (*Redis, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("start redis: %s: %w", envRedisURL, err)
	}
	r := &Redis{URL: raw}
	switch u.Scheme {
	case "redis":
	case "rediss":
		r.tls = true
	default:
		return nil, fmt.Errorf("start redis: %s: scheme %q, want redis or rediss", envRedisURL, u.Scheme)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "6379"
	}
	if r.Port, err = strconv.Atoi(port); err != nil {
		return nil, fmt.Errorf("start redis: %s: port %q: %w", envRedisURL, port, err)
	}
	r.Addr = net.JoinHostPort(host, port)
	if u.User != nil {
		r.user = u.User.Username()
		r.password, _ = u.User.Password()
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if r.db, err = strconv.Atoi(db); err != nil {
			return nil, fmt.Errorf("start redis: %s: database %q: %w", envRedisURL, db, err)
		}
	}
	if _, err := r.Do(ctx, "PING"); err != nil {
		return nil, fmt.Errorf("start redis: %s: %w", envRedisURL, err)
	}
	return r, nil
}

// start runs redis-server on r.Port and waits for PING. busy reports that it
// failed because the port was taken. The caller holds r.mu or owns r
// exclusively.
func (r *Redis) start(ctx context.Context) (busy bool, err error) {
	logFile := filepath.Join(r.dir, redisLogName)
	offset := fileSize(logFile)
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer lf.Close()
	cmd := exec.Command("redis-server", r.serverArgs()...)
	cmd.Dir = r.dir
	cmd.Stdout, cmd.Stderr = lf, lf // stdin is /dev/null: the server outlives our stdio
	// Own process group, so terminal signals meant for the test do not hit
	// it; Pdeathsig: it dies with the test process (on Linux).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return false, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited

	deadline := time.Now().Add(redisStartTimeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, perr := r.Do(pctx, "PING")
		cancel()
		if perr == nil {
			if err := r.setup(ctx); err != nil {
				r.shutdown()
				return false, err
			}
			return false, nil
		}
		select {
		case <-exited:
			r.shutdown()
			log := logTail(logFile, offset, logTailBytes)
			return strings.Contains(log, "Address already in use"),
				fmt.Errorf("the server exited during startup (%v); log:\n%s", cmd.ProcessState, log)
		default:
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			r.shutdown()
			reason := fmt.Sprintf("no PONG after %v: %v", redisStartTimeout, perr)
			if ctx.Err() != nil {
				reason = fmt.Sprintf("waiting for the server: %v", ctx.Err())
			}
			return false, fmt.Errorf("%s; log:\n%s", reason, logTail(logFile, offset, logTailBytes))
		}
		select {
		case <-exited:
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// shutdown stops the server (SIGTERM, then SIGKILL if it lingers) and waits
// for it. A paused server is resumed so that it can act on SIGTERM. It is a
// no-op when the server is not running. The caller holds r.mu.
func (r *Redis) shutdown() {
	if r.cmd == nil {
		return
	}
	pid := r.cmd.Process.Pid
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-r.exited:
	case <-time.After(redisShutdownTimeout):
	}
	killGroup(pid, 5*time.Second)
	<-r.exited
	r.cmd, r.exited = nil, nil
}

// Stop stops the server and removes its directory. It is idempotent. For an
// external server it does nothing but return an error.
func (r *Redis) Stop() error {
	if !r.owned {
		return fmt.Errorf("stop redis: %w", errExternal)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shutdown()
	if r.removed {
		return nil
	}
	r.removed = true
	if err := os.RemoveAll(r.dir); err != nil {
		return fmt.Errorf("stop redis: %w", err)
	}
	return nil
}

// Restart stops the server (if running) and starts it again, empty, on the
// same port. Files a replica may have written (dump.rdb after a full sync)
// are removed first, so nothing is loaded; the configuration a cluster node
// or a sentinel keeps (nodes.conf, sentinel.conf) stays, so that it comes
// back as the same member of its cluster or Sentinel group.
func (r *Redis) Restart(ctx context.Context) error {
	if !r.owned {
		return fmt.Errorf("restart redis: %w", errExternal)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return errors.New("restart redis: the server was stopped and its directory removed")
	}
	r.shutdown()
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("restart redis: %w", err)
	}
	for _, e := range entries {
		if e.Name() != redisLogName && !slices.Contains(r.spec.keep, e.Name()) {
			if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
				return fmt.Errorf("restart redis: %w", err)
			}
		}
	}
	deadline := time.Now().Add(redisBusyRetry)
	for {
		busy, err := r.start(ctx)
		if err == nil {
			return nil
		}
		if !busy || time.Now().After(deadline) {
			return fmt.Errorf("restart redis: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restart redis: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Kill crashes the server with SIGKILL: it flushes nothing and tells no
// one, so a primary's replicas and a cluster master's peers learn of it only
// through their own timeouts, as when a host dies. Restart starts it again;
// the directory stays until Stop.
func (r *Redis) Kill() error {
	if !r.owned {
		return fmt.Errorf("kill redis: %w", errExternal)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return errors.New("kill redis: the server is not running")
	}
	r.kill()
	return nil
}

// kill ends the server with SIGKILL and waits for it; a no-op when it is
// not running. The caller holds r.mu.
func (r *Redis) kill() {
	if r.cmd == nil {
		return
	}
	pid := r.cmd.Process.Pid
	_ = r.cmd.Process.Signal(syscall.SIGKILL) // ends a paused server too
	<-r.exited
	killGroup(pid, 5*time.Second)
	r.cmd, r.exited = nil, nil
}

// running reports whether the server process runs (perhaps paused).
func (r *Redis) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

// Pause freezes the server with SIGSTOP: connections stay open and new ones
// are accepted by the kernel, but nothing is answered until Resume.
func (r *Redis) Pause() error { return r.signal("pause", syscall.SIGSTOP) }

// Resume thaws a server frozen by Pause (SIGCONT).
func (r *Redis) Resume() error { return r.signal("resume", syscall.SIGCONT) }

func (r *Redis) signal(op string, sig syscall.Signal) error {
	if !r.owned {
		return fmt.Errorf("%s redis: %w", op, errExternal)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return fmt.Errorf("%s redis: the server is not running", op)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s redis: %w", op, err)
	}
	return nil
}

// Log returns the tail (about 4KB) of the server log, for failure messages.
// It is empty for an external server.
func (r *Redis) Log() string {
	if !r.owned {
		return ""
	}
	return logTail(filepath.Join(r.dir, redisLogName), 0, logTailBytes)
}

// Do sends one command on a fresh connection and returns the reply as text:
// a simple string or bulk string as is, an integer in decimal, a nil reply as
// "", an array as its elements rendered so and joined by newlines. An error
// reply is returned as an error. Do gives up when ctx ends, or after 30s if
// ctx has no deadline.
func (r *Redis) Do(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("redis: no command")
	}
	reply, err := r.do(ctx, args)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	return reply, nil
}

func (r *Redis) do(ctx context.Context, args []string) (string, error) {
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: 5 * time.Second}
	if r.tls {
		host, _, _ := net.SplitHostPort(r.Addr)
		cfg := &tls.Config{ServerName: host}
		if r.tlsConf != nil {
			cfg = r.tlsConf.Clone()
			cfg.ServerName = host
		}
		td := &tls.Dialer{NetDialer: d, Config: cfg}
		conn, err = td.DialContext(ctx, "tcp", r.Addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", r.Addr)
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	// ctx ending unblocks reads and writes (and then Do reports ctx.Err());
	// the connection deadline is only a backstop.
	deadline, ok := ctx.Deadline()
	if ok {
		deadline = deadline.Add(time.Second)
	} else {
		deadline = time.Now().Add(redisDoTimeout)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return "", err
	}
	defer context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })()

	rd := bufio.NewReader(conn)
	call := func(args ...string) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := io.WriteString(conn, b.String()); err != nil {
			return "", err
		}
		return readReply(rd)
	}
	if r.password != "" {
		auth := []string{"AUTH", r.password}
		if r.user != "" {
			auth = []string{"AUTH", r.user, r.password}
		}
		if _, err := call(auth...); err != nil {
			return "", fmt.Errorf("auth: %w", err)
		}
	}
	if r.db != 0 {
		if _, err := call("SELECT", strconv.Itoa(r.db)); err != nil {
			return "", fmt.Errorf("select %d: %w", r.db, err)
		}
	}
	return call(args...)
}

// readReply reads one RESP2 reply and renders it as Do documents.
func readReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("malformed reply: empty line")
	}
	kind, rest := line[0], line[1:]
	switch kind {
	case '+', ':':
		return rest, nil
	case '-':
		return "", errors.New(rest)
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil {
			return "", fmt.Errorf("malformed bulk length %q", rest)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil {
			return "", fmt.Errorf("malformed array length %q", rest)
		}
		elems := make([]string, 0, max(n, 0))
		for range n {
			e, err := readReply(rd)
			if err != nil {
				return "", err
			}
			elems = append(elems, e)
		}
		return strings.Join(elems, "\n"), nil
	}
	return "", fmt.Errorf("malformed reply: unknown type %q", kind)
}

// MustRedis starts a server with StartRedis or fails t (it never skips),
// and stops the server when t ends.
func MustRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*redisStartTimeout)
	defer cancel()
	r, err := StartRedis(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !r.owned {
			return
		}
		if err := r.Stop(); err != nil {
			t.Log(err)
		}
	})
	return r
}
