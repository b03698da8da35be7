package testenv

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startEcho starts a TCP echo server on 127.0.0.1 and returns its address.
// Its goroutines are gone once t ends and its clients have hung up.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echoOK dials addr, sends msg and wants it back.
func echoOK(t *testing.T, addr, msg string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	roundTrip(t, c, msg)
	return c
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

// wantDead wants a read on c to fail, not by timing out, within a second.
func wantDead(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	n, err := c.Read(make([]byte, 16))
	elapsed := time.Since(start)
	if err == nil {
		t.Fatalf("read = %d bytes, nil error; want EOF or reset", n)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read timed out after %v; want EOF or reset", elapsed)
	}
	if elapsed > time.Second {
		t.Fatalf("read failed after %v (%v); want < 1s", elapsed, err)
	}
}

// proxyConns is the number of connections (both sides) p tracks.
func proxyConns(p *Proxy) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// waitGoroutines waits up to 2s for the goroutine count to drop to max.
func waitGoroutines(t *testing.T, max int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= max {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want <= %d:\n%s", n, max, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxy(t *testing.T) {
	echo := startEcho(t)
	before := runtime.NumGoroutine()

	p, err := StartProxy(echo)
	if err != nil {
		t.Fatal(err)
	}
	if p.Port == 0 || p.Addr != net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)) {
		t.Fatalf("Addr %q, Port %d", p.Addr, p.Port)
	}

	c1 := echoOK(t, p.Addr, "hello")
	roundTrip(t, c1, "again")

	// Half-close passes through: the echo server sees EOF and hangs up.
	hc := echoOK(t, p.Addr, "half")
	if err := hc.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(hc); err != nil || len(b) != 0 {
		t.Fatalf("after half-close: read %q, %v; want EOF", b, err)
	}
	hc.Close()

	// Cut: the live connection dies at once, new ones are dropped.
	p.Cut()
	wantDead(t, c1)
	if n := proxyConns(p); n != 0 {
		t.Fatalf("%d connections tracked after Cut", n)
	}
	for range 3 {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			continue // refused or reset during the handshake: fine too
		}
		wantDead(t, c)
		c.Close()
	}

	// Restore: new connections work again.
	p.Restore()
	c2 := echoOK(t, p.Addr, "back")
	if n := proxyConns(p); n != 2 {
		t.Fatalf("%d connections tracked, want 2", n)
	}

	// A client hanging up frees both sides.
	c2.Close()
	deadline := time.Now().Add(2 * time.Second)
	for proxyConns(p) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still tracked after the client hung up", proxyConns(p))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Close ends live connections, stops listening and is idempotent.
	c3 := echoOK(t, p.Addr, "last")
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantDead(t, c3)
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("dial after Close succeeded")
	}
	p.Cut()
	p.Restore()

	waitGoroutines(t, before)
}

func TestProxyCloseWhileCut(t *testing.T) {
	echo := startEcho(t)
	before := runtime.NumGoroutine()
	p := MustProxy(t, echo)
	c := echoOK(t, p.Addr, "x")
	p.Cut()
	wantDead(t, c)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, before)
}

func TestProxyUnreachableTarget(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	p := MustProxy(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	c, err := net.DialTimeout("tcp", p.Addr, time.Second)
	if err == nil {
		wantDead(t, c)
		c.Close()
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, before)
}

// backend is a TCP server on 127.0.0.1 whose connections the test drives
// itself, to see what passes in each direction.
type backend struct {
	addr  string
	conns chan net.Conn
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String(), conns: make(chan net.Conn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for {
			select {
			case c := <-b.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return b
}

// accept returns the next connection that reached b.
func (b *backend) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-b.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("no connection reached %s", b.addr)
		return nil
	}
}

// wantNoAccept wants no connection to reach b within d.
func (b *backend) wantNoAccept(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case c := <-b.conns:
		c.Close()
		t.Fatalf("a connection reached %s", b.addr)
	case <-time.After(d):
	}
}

// dial connects to addr and closes the connection when t ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// write writes msg on c.
func write(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// send writes msg on from and wants exactly msg on to.
func send(t *testing.T, from, to net.Conn, msg string) {
	t.Helper()
	write(t, from, msg)
	_ = to.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(to, buf); err != nil {
		t.Fatalf("read %q: %v", msg, err)
	}
	if string(buf) != msg {
		t.Fatalf("read %q, want %q", buf, msg)
	}
}

// silenceWait is how long a silent connection is watched: data the proxy
// passed on would arrive within milliseconds.
const silenceWait = 300 * time.Millisecond

// wantSilent wants nothing on c for silenceWait: no byte, no EOF, no reset.
func wantSilent(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(silenceWait))
	n, err := c.Read(make([]byte, 64))
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d bytes, %v; want silence", n, err)
	}
}

// wantReset wants a read on c to fail with a connection reset at once.
func wantReset(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	n, err := c.Read(make([]byte, 64))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read = %d bytes, %v; want a reset", n, err)
	}
}

func TestProxyBlackhole(t *testing.T) {
	be := startBackend(t)
	before := runtime.NumGoroutine()
	p := MustProxy(t, be.addr)

	// Three connections: the server hangs up on the first during the
	// blackhole, the client on the second, the third outlives it.
	var clients, servers [3]net.Conn
	for i := range clients {
		clients[i] = dial(t, p.Addr)
		servers[i] = be.accept(t)
		send(t, clients[i], servers[i], "up")
		send(t, servers[i], clients[i], "down")
	}

	p.Blackhole()
	for i := range clients {
		write(t, clients[i], "lost up")
		write(t, servers[i], "lost down")
	}
	for i := range clients {
		wantSilent(t, servers[i])
		wantSilent(t, clients[i])
	}
	// A peer hanging up is not passed on either.
	servers[0].Close()
	clients[1].Close()
	wantSilent(t, clients[0])
	wantSilent(t, servers[1])

	// A new connection is accepted but reaches nothing and hears nothing.
	late := dial(t, p.Addr)
	write(t, late, "anyone?")
	be.wantNoAccept(t, silenceWait)
	wantSilent(t, late)

	p.Restore()
	fresh := dial(t, p.Addr)
	fs := be.accept(t)
	send(t, fresh, fs, "up again")
	send(t, fs, fresh, "down again")
	// The silenced connections stay silent: what was sent during the
	// blackhole is never delivered, nor what is sent after it.
	write(t, clients[2], "after")
	write(t, servers[2], "after")
	write(t, late, "after")
	wantSilent(t, servers[2])
	wantSilent(t, clients[2])
	wantSilent(t, clients[0])
	wantSilent(t, servers[1])
	wantSilent(t, late)
	be.wantNoAccept(t, 0)

	// Cut resets them, as it does every connection.
	p.Cut()
	for _, c := range []net.Conn{clients[0], clients[2], servers[1], servers[2], late, fresh} {
		wantReset(t, c)
	}
	if n := proxyConns(p); n != 0 {
		t.Fatalf("%d connections tracked after Cut", n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, before)
}

// TestProxyBlackholeBlockedWrite checks that Blackhole does not wait for a
// write blocked on a peer that does not read, and that the proxy then
// discards what the other peer sends, however much.
func TestProxyBlackholeBlockedWrite(t *testing.T) {
	be := startBackend(t)
	before := runtime.NumGoroutine()
	p := MustProxy(t, be.addr)
	c := dial(t, p.Addr)
	be.accept(t) // never reads

	// Fill every buffer on the way, until the proxy blocks writing to the
	// server and stops reading the client.
	chunk := make([]byte, 64<<10)
	for {
		_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(chunk); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			break
		}
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Blackhole()
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Blackhole waits for a blocked write")
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for range 64 { // 4MB: more than any buffer on the way holds
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("write during the blackhole: %v", err)
		}
	}
	wantSilent(t, c)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, before)
}

func TestProxyRetarget(t *testing.T) {
	a, b := startBackend(t), startBackend(t)
	before := runtime.NumGoroutine()
	p := MustProxy(t, a.addr)
	c1 := dial(t, p.Addr)
	s1 := a.accept(t)
	send(t, c1, s1, "to a")

	// Retarget: the live connection stays with a, new ones go to b.
	p.Retarget(b.addr)
	send(t, c1, s1, "still a")
	send(t, s1, c1, "from a")
	c2 := dial(t, p.Addr)
	s2 := b.accept(t)
	send(t, c2, s2, "to b")
	send(t, s2, c2, "from b")
	a.wantNoAccept(t, 0)

	// Switch: every live connection is reset, on both sides, and new ones
	// go to a.
	p.Switch(a.addr)
	for _, c := range []net.Conn{c1, s1, c2, s2} {
		wantReset(t, c)
	}
	c3 := dial(t, p.Addr)
	s3 := a.accept(t)
	send(t, c3, s3, "back to a")
	b.wantNoAccept(t, 0)

	// Neither lifts Cut: the next connection goes to b only after Restore.
	p.Cut()
	p.Retarget(b.addr)
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		wantDead(t, c)
		c.Close()
	}
	p.Restore()
	c4 := dial(t, p.Addr)
	s4 := b.accept(t)
	send(t, c4, s4, "to b again")
	a.wantNoAccept(t, 0)

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, before)
}
