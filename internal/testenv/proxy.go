package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxyDialTimeout bounds the dial to the target for one accepted connection.
const proxyDialTimeout = 10 * time.Second

// Proxy is a TCP proxy on 127.0.0.1 for fault tests: it forwards to a target
// and can cut every connection (both directions, at once) and refuse new ones
// until restored.
type Proxy struct {
	Addr string // 127.0.0.1:PORT
	Port int

	target string
	ln     net.Listener
	ctx    context.Context // ends on Close: aborts dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's goroutines

	mu     sync.Mutex
	cut    bool                  // Cut is in force: new connections are reset
	closed bool                  // Close has run
	conns  map[net.Conn]struct{} // live connections, both client and target sides

	closeOnce sync.Once
	closeErr  error
}

// StartProxy listens on a free 127.0.0.1 port and forwards each accepted
// connection to target (host:port), until Close.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy to %s: listen: %w", target, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		Addr:   ln.Addr().String(),
		Port:   ln.Addr().(*net.TCPAddr).Port,
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[net.Conn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// MustProxy starts a proxy to target with StartProxy or fails t, and closes
// the proxy when t ends.
func MustProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Log(err)
		}
	})
	return p
}

// Cut closes every live connection at once, both directions, with a reset
// where possible, and from then on accepts new connections only to reset
// them at once, until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.dropAllLocked()
}

// Restore makes the proxy forward new connections again after Cut. The
// connections Cut closed stay closed.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Close stops listening, closes every connection and waits until all the
// proxy's goroutines have returned. It is idempotent.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.dropAllLocked()
		p.mu.Unlock()
		p.cancel()
		if err := p.ln.Close(); err != nil {
			p.closeErr = fmt.Errorf("proxy %s: close: %w", p.Addr, err)
		}
		p.wg.Wait()
	})
	return p.closeErr
}

// dropAllLocked resets and forgets every live connection. p.mu is held.
func (p *Proxy) dropAllLocked() {
	for c := range p.conns {
		resetConn(c)
	}
	clear(p.conns)
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // e.g. EMFILE: retry
			continue
		}
		p.mu.Lock()
		if p.closed || p.cut {
			p.mu.Unlock()
			resetConn(c)
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// serve forwards client to a new connection to the target until either side
// ends or Cut or Close drops them.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: proxyDialTimeout}
	upstream, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		p.forget(client)
		resetConn(client)
		return
	}
	// Cut or Close may have dropped client while we dialed.
	p.mu.Lock()
	_, live := p.conns[client]
	if live {
		p.conns[upstream] = struct{}{}
	}
	p.mu.Unlock()
	if !live {
		resetConn(upstream)
		resetConn(client) // already closed; harmless
		return
	}

	done := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(done)
		proxyPipe(upstream, client)
	}()
	proxyPipe(client, upstream)
	<-done

	p.forget(client, upstream)
	client.Close()
	upstream.Close()
}

// forget removes conns from the live set.
func (p *Proxy) forget(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
	}
}

// proxyPipe copies src to dst. At EOF it passes the half-close on to dst; on an
// error (including a reset or a close by Cut) it closes both, so that the
// other direction ends too.
func proxyPipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			err = cw.CloseWrite()
		} else {
			err = errors.New("no half-close")
		}
	}
	if err != nil {
		dst.Close()
		src.Close()
	}
}

// resetConn closes c, with an RST rather than a FIN when c is a TCP connection.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
