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
