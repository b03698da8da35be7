package testenv

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
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
