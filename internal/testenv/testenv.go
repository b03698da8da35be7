// Package testenv starts private PostgreSQL and Redis servers for the
// integration tests and for `make demo`.
//
// Each server runs as a child process on a free 127.0.0.1 port, keeps its
// files in a temporary directory and is gone (directory included) once
// stopped. The harness can also restart and crash its servers, freeze a
// Redis one, and put a TCP proxy in front of one that cuts, silences or
// redirects its connections (Proxy), which the fault-injection tests rely on.
//
// Redis comes in the shapes it is deployed in: standalone (StartRedis), a
// Redis Cluster (StartRedisCluster) and a primary with replicas behind three
// sentinels (StartRedisSentinel), with failovers on demand; any of them over
// TLS with certificates made at run time (NewCA, WithTLS) and with ACL users
// (WithACLUser). StartPostgresTLS is PostgreSQL over TLS with the same CA.
// The Cluster and the sentinels' quick pace need Redis 7.0 or newer.
//
// Two environment variables name existing servers to use instead:
//
//   - CDCD_TEST_DATABASE_URL: a superuser URL to a PostgreSQL server with
//     wal_level=logical;
//   - CDCD_TEST_REDIS_URL: a Redis URL.
//
// Such external servers are used as they are: the methods that would stop,
// restart, crash or freeze them return an error instead.
//
// CDCD_TEST_PG_BIN names the directory holding the PostgreSQL server
// binaries (initdb, postgres) when they cannot be found otherwise.
package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// errExternal is returned by the methods that need a server this package
// started itself.
var errExternal = errors.New("the server is external (named by an environment variable); testenv cannot stop, restart or signal it")

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on at the
// time of the call.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logTail returns the last max bytes of the file at path from offset on, or
// "" if it cannot be read.
func logTail(path string, offset int64, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if offset > 0 && offset <= int64(len(b)) {
		b = b[offset:]
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// fileSize returns the size of the file at path, 0 if it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// killGroup sends SIGKILL to the process group pgid (a server and all its
// children) and waits up to timeout until no live process is left in it, so
// that orphans no longer hold the port or shared memory.
func killGroup(pgid int, timeout time.Duration) {
	if pgid <= 0 {
		return
	}
	_ = syscall.Kill(-pgid, syscall.SIGCONT) // a stopped process dies on SIGKILL anyway; harmless
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	deadline := time.Now().Add(timeout)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. Orphaned children are reparented away from us, and the init of a
// container may be slow to reap them, so zombies do not count.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true // no /proc: trust kill(2)
	}
	for _, e := range entries {
		st, ok := readProcStat(e.Name())
		if ok && st.pgrp == pgid && st.alive() {
			return true
		}
	}
	return false
}

// procStat is what /proc/PID/stat says of a process.
type procStat struct {
	pid   int
	state string // R, S, D, T (stopped), Z (zombie), X (dead), ...
	ppid  int
	pgrp  int
}

// alive reports whether the process still runs code and holds resources:
// a zombie has released its memory, shared memory included.
func (st procStat) alive() bool { return st.state != "Z" && st.state != "X" }

// readProcStat reads /proc/pid/stat; ok is false when pid is not a process
// (any more).
func readProcStat(pid string) (st procStat, ok bool) {
	n, err := strconv.Atoi(pid)
	if err != nil {
		return st, false
	}
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return st, false
	}
	// Format: pid (comm) state ppid pgrp ...; comm may contain spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return st, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return st, false
	}
	st.pid, st.state = n, f[0]
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgrp, _ = strconv.Atoi(f[2])
	return st, true
}
