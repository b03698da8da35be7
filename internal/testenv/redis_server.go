package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisSpec is how a private redis-server runs, beyond the settings every
// one of them has (a port on 127.0.0.1, nothing on disk, no keyspace
// notifications).
type redisSpec struct {
	// conf, when not empty, is written to the file confName in the server's
	// directory before its first start, and that file is the server's
	// config file. A sentinel needs one: it records its state there.
	conf, confName string
	args           []string // more server arguments, after the common ones
	bus            bool     // a cluster node: it needs a bus port too
	keep           []string // files in the directory that Restart keeps
	opts           redisOptions
}

// startRedisServer starts a private server as spec says on free ports and
// waits until it answers PING and its ACL users are set.
func startRedisServer(ctx context.Context, spec redisSpec) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not found (install Redis, or set %s for a standalone server): %w", envRedisURL, err)
	}
	dir, err := os.MkdirTemp("", "cdcd-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{owned: true, dir: dir, spec: spec}
	if spec.opts.ca != nil {
		r.tls, r.tlsConf = true, spec.opts.ca.ClientConfig()
	}
	if spec.conf != "" {
		if err := os.WriteFile(filepath.Join(dir, spec.confName), []byte(spec.conf), 0o644); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	// Another process may take a free port before the server binds it:
	// then try other ones.
	for attempt := 1; ; attempt++ {
		var busy bool
		if r.Port, r.busPort, err = freePorts(spec.bus); err == nil {
			r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port))
			busy, err = r.start(ctx)
		}
		if err == nil {
			break
		}
		if busy && attempt < 5 {
			continue
		}
		os.RemoveAll(dir)
		return nil, err
	}
	scheme := "redis"
	if r.tls {
		scheme = "rediss"
	}
	r.URL = scheme + "://" + r.Addr + "/0"
	return r, nil
}

// freePorts returns a free port, and a second, distinct one if bus is set.
func freePorts(bus bool) (port, busPort int, err error) {
	if port, err = FreePort(); err != nil || !bus {
		return port, 0, err
	}
	for busPort == 0 || busPort == port {
		if busPort, err = FreePort(); err != nil {
			return 0, 0, err
		}
	}
	return port, busPort, nil
}

// serverArgs returns the arguments of redis-server for r's next start.
func (r *Redis) serverArgs() []string {
	var args []string
	if r.spec.conf != "" {
		args = append(args, filepath.Join(r.dir, r.spec.confName)) // the config file comes first
	}
	port := strconv.Itoa(r.Port)
	if r.spec.opts.ca != nil {
		// port 0: no plain-text port at all, so a test cannot reach the
		// server without TLS by mistake.
		args = append(args, "--port", "0", "--tls-port", port)
		args = append(args, r.spec.opts.tlsArgs()...)
	} else {
		args = append(args, "--port", port)
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--notify-keyspace-events", "",
		"--daemonize", "no",
		"--logfile", "", // stdout, that is the log file
	)
	if r.busPort != 0 {
		// Set explicitly: the default, port+10000, may lie beyond 65535 or
		// be another server's port.
		args = append(args, "--cluster-port", strconv.Itoa(r.busPort))
	}
	return append(args, r.spec.args...)
}

// setup creates the ACL users of r's options on the running server.
func (r *Redis) setup(ctx context.Context) error {
	for _, args := range r.spec.opts.users {
		if _, err := r.Do(ctx, args...); err != nil {
			return fmt.Errorf("create user %s: %w", args[2], err)
		}
	}
	return nil
}

// UserURL returns a URL to the server, database 0, that logs in as user
// with password: for a test that runs cdcd as an ACL user (WithACLUser).
func (r *Redis) UserURL(user, password string) string {
	scheme := "redis"
	if r.tls {
		scheme = "rediss"
	}
	u := url.URL{Scheme: scheme, User: url.UserPassword(user, password), Host: r.Addr, Path: "/0"}
	return u.String()
}

// pollLimit bounds poll when ctx has no deadline.
const pollLimit = time.Minute

// poll runs check every 50ms until it succeeds, and returns its last error
// once ctx ends (or after a minute if ctx has no deadline). Each check gets
// at most 2s, so that a frozen server cannot hold poll past its limit.
func poll(ctx context.Context, check func(context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pollLimit)
		defer cancel()
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting (%v): %w", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitReplicated waits until every one of replicas has applied all that
// primary had written when it was called (its replication offset).
func waitReplicated(ctx context.Context, primary *Redis, replicas []*Redis) error {
	offset := func(ctx context.Context, r *Redis, field string) (int64, error) {
		info, err := r.Do(ctx, "INFO", "replication")
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseInt(infoField(info, field), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", r.Addr, field, err)
		}
		return n, nil
	}
	want, err := offset(ctx, primary, "master_repl_offset")
	if err != nil {
		return err
	}
	return poll(ctx, func(ctx context.Context) error {
		for _, r := range replicas {
			got, err := offset(ctx, r, "slave_repl_offset")
			if err != nil {
				return err
			}
			if got < want {
				return fmt.Errorf("replica %s is at offset %d of %d", r.Addr, got, want)
			}
		}
		return nil
	})
}

// replicationIs checks that field of r's INFO replication is want, e.g.
// role master or master_link_status up.
func replicationIs(ctx context.Context, r *Redis, field, want string) error {
	info, err := r.Do(ctx, "INFO", "replication")
	if err != nil {
		return err
	}
	if got := infoField(info, field); got != want {
		return fmt.Errorf("%s: %s is %s, not %s", r.Addr, field, got, want)
	}
	return nil
}

// serverAt returns the one of servers at addr (host:port), nil if none is.
func serverAt(servers []*Redis, addr string) *Redis {
	for _, n := range servers {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// groupURL returns scheme://addrs[0]?param&addr=addrs[1]&addr=…, the form
// of go-redis's ParseClusterURL and ParseFailoverURL, with the scheme
// rediss for TLS. param may be empty.
func groupURL(tls bool, addrs []string, param string) string {
	scheme := "redis"
	if tls {
		scheme = "rediss"
	}
	params := []string{}
	if param != "" {
		params = append(params, param)
	}
	for _, a := range addrs[1:] {
		params = append(params, "addr="+a)
	}
	u := scheme + "://" + addrs[0]
	if len(params) > 0 {
		u += "?" + strings.Join(params, "&")
	}
	return u
}

// mustStart runs start with a timeout or fails t (it never skips), and has
// stop run when t ends, also when t fails midway.
func mustStart[T any](t testing.TB, timeout time.Duration, start func(context.Context) (T, error), stop func(T) error) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	v, err := start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(v); err != nil {
			t.Log(err)
		}
	})
	return v
}
