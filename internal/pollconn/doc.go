// Package pollconn wraps a TCP or Unix connection so that its reads and
// writes bypass the Go runtime's blocking-system-call path.
//
// A read or write on a net.Conn enters the runtime as a possibly blocking
// system call. Each such entry while every P is idle wakes the runtime's
// monitor thread (sysmon), which then polls every 20µs until the process is
// idle again. A daemon that wakes for every small message of a replication
// stream and every Redis reply pays for that wake-up, two context switches
// and the polling, thousands of times a second. The descriptors are
// non-blocking, so the calls never block: pollconn makes them raw and waits
// for readiness in the network poller, as net does.
//
// The cost of the raw path: the connection no longer exposes its
// descriptor (a client library cannot peek at it, as go-redis's pool health
// check does), and the race detector does not see the raw system calls. A
// race build therefore passes connections through unwrapped, as does any
// system but Linux (Available). Callers make the raw path a setting.
//
// Deadlines, Close and the addresses are those of the wrapped connection.
// A Conn is safe for the concurrent use net.Conn allows.
package pollconn
