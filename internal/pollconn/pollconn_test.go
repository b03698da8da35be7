package pollconn_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/pollconn"
)

// pair returns a client connection on the raw path and the server side of a
// TCP connection on loopback.
func pair(t *testing.T) (client net.Conn, server net.Conn) {
	return pairWith(t, pollconn.RawWrap)
}

func pairWith(t *testing.T, wrap func(net.Conn) net.Conn) (client net.Conn, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	client = wrap(c)
	t.Cleanup(func() { client.Close(); s.Close() })
	return client, s
}

func TestRawPathHidesTheDescriptor(t *testing.T) {
	c, _ := pair(t)
	if runtime.GOOS != "linux" {
		t.Skip("the raw path is Linux only")
	}
	if _, ok := c.(*net.TCPConn); ok {
		t.Fatal("the raw path returned the connection unwrapped")
	}
	// The descriptor stays hidden: a client library that finds it would
	// peek at the socket with ordinary system calls.
	if _, ok := c.(syscall.Conn); ok {
		t.Fatal("the wrapped connection exposes its descriptor")
	}
}

// Wrap takes the raw path only where it is available: a race build keeps
// Go's own I/O, which the race detector sees.
func TestWrapFollowsTheBuild(t *testing.T) {
	c, _ := pairWith(t, pollconn.Wrap)
	_, plain := c.(*net.TCPConn)
	if plain == pollconn.Available {
		t.Fatalf("Wrap returned %T; raw path available in this build: %t", c, pollconn.Available)
	}
	if race && pollconn.Available {
		t.Fatal("the raw path is available in a race build")
	}
}

func TestReadWrite(t *testing.T) {
	c, s := pair(t)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	// A read waits for data that is not there yet.
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = s.Write([]byte("pong")) // a failure shows as the client's read failing
	}()
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
}

func TestLargeWriteWaitsForTheReader(t *testing.T) {
	c, s := pair(t)
	// Far more than the socket buffers hold: the write must wait for the
	// reader to drain them, and deliver every byte in order.
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got, err := io.ReadAll(io.LimitReader(s, int64(len(want))))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes arrived changed or out of order")
	}
}

func TestReadDeadline(t *testing.T) {
	c, s := pair(t)
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Fatalf("read returned after %s, before its deadline", d)
	}
	// The connection stays usable after a timeout.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("read after a timeout: %v", err)
	}
	// A deadline moved into the past interrupts a waiting read.
	res := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		res <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := c.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("interrupted read: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a deadline in the past did not interrupt the read")
	}
}

func TestEOFAndClose(t *testing.T) {
	c, s := pair(t)
	s.Close()
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want EOF", err)
	}
	c.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}

func TestWriteToResetConnection(t *testing.T) {
	c, s := pair(t)
	if err := s.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	s.Close() // sends RST
	time.Sleep(20 * time.Millisecond)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.Write(make([]byte, 1024))
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" {
		t.Fatalf("write to a reset connection: %v, want a *net.OpError from write", err)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write to a reset connection: %v, want ECONNRESET or EPIPE", err)
	}
}

func TestReadWriteAllocateNothing(t *testing.T) {
	c, s := pair(t)
	buf := make([]byte, 64)
	msg := []byte("0123456789")
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("a read and a write allocate %.1f times", allocs)
	}
}

// PostgreSQL is often reached over a Unix socket.
func TestUnixSocket(t *testing.T) {
	path := t.TempDir() + "/s"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		s, err := l.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		_, _ = io.Copy(s, s) // echo until the client closes
	}()
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := pollconn.RawWrap(raw)
	defer c.Close()
	if _, ok := c.(*net.UnixConn); ok && runtime.GOOS == "linux" {
		t.Fatal("the raw path returned the Unix connection unwrapped")
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}
