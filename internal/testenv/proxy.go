package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// proxyDialTimeout bounds the dial to the target for one accepted connection.
const proxyDialTimeout = 10 * time.Second

// Proxy is a TCP proxy on 127.0.0.1 for fault tests. It forwards each
// connection to a target and can inject the faults of the network between
// a client and its server:
//
//   - Cut: every connection is reset at once, and so is every new one (a
//     peer that crashed, a firewall that rejects);
//   - Blackhole: everything goes silent and nothing is closed (a route that
//     drops packets, a NAT entry that was lost);
//   - Retarget and Switch: new connections go to another server (a
//     failover behind one DNS name or load balancer).
//
// Restore lifts Cut and Blackhole. A Proxy is safe for concurrent use.
type Proxy struct {
	Addr string // 127.0.0.1:PORT
	Port int

	ln     net.Listener
	ctx    context.Context // ends on Close: aborts dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's goroutines

	// fwd is held shared while a link passes something on (bytes, a
	// half-close, a close) and exclusively by Blackhole while it silences
	// the links: so it waits for what is under way, and once it returns
	// nothing more passes. Lock order: mu, then fwd.
	fwd sync.RWMutex

	mu     sync.Mutex
	target string             // where new connections go
	mode   proxyMode          // the fault in force for new connections
	closed bool               // Close has run
	conns  map[net.Conn]*link // live sockets, client and target sides, with their link

	closeOnce sync.Once
	closeErr  error
}

// proxyMode is what the proxy does with a new connection.
type proxyMode int

const (
	forwarding proxyMode = iota // forward it to the target
	refusing                    // Cut: reset it
	silent                      // Blackhole: accept it and pass nothing
)

// link is one client connection with its connection to the target.
type link struct {
	// silenced: nothing passes any more, for good. Set holding both mu and
	// fwd (or before the link's goroutines start), read holding either.
	silenced bool
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
		conns:  make(map[net.Conn]*link),
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
	p.mode = refusing
	p.dropAllLocked()
}

// Blackhole silences the proxy until Restore, as a route that drops every
// packet or a lost NAT entry does: live connections stay open but nothing
// passes in either direction, and new connections are accepted but never
// reach the target. Nothing is closed, not even when a peer hangs up, so
// the other peer learns of it only through its own timeouts. What the
// peers send meanwhile is read and discarded: it is never delivered later.
//
// The silenced connections stay silent for good, also after Restore,
// until Cut, Switch or Close resets them: a TCP stream cannot resume past
// the bytes it lost, and a client whose NAT entry is gone does not get its
// connection back either.
//
// Being a user-space proxy, it cannot silence TCP itself: the kernels on
// both sides still acknowledge segments and keepalive probes, and writes
// do not block. So TCP keepalive and TCP_USER_TIMEOUT do not notice a
// Blackhole; only application-level timeouts do.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = silent
	// A write under way may block on a peer that does not read, holding
	// fwd: cut it short. The deadline stays, but a silenced link never
	// writes again.
	for c := range p.conns {
		_ = c.SetWriteDeadline(time.Unix(1, 0))
	}
	p.fwd.Lock()
	defer p.fwd.Unlock()
	for _, l := range p.conns {
		l.silenced = true
	}
}

// Restore lifts Cut and Blackhole: new connections reach the target again.
// The connections Cut closed stay closed, and those Blackhole silenced stay
// silent.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = forwarding
}

// Retarget sends the connections accepted from now on to addr (host:port),
// as a DNS name or a load balancer does after a failover. Live connections
// stay with the server they reach. It lifts neither Cut nor Blackhole.
func (p *Proxy) Retarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
}

// Switch is Retarget with a reset of every live connection, as a load
// balancer does when it takes a server out: clients learn of it at once
// and reconnect, to addr. It lifts neither Cut nor Blackhole.
func (p *Proxy) Switch(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
	p.dropAllLocked()
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
// Every socket is set to reset before any is closed: closing one makes its
// pipe close the other side of the link at once, which would otherwise
// send that peer a FIN.
func (p *Proxy) dropAllLocked() {
	for c := range p.conns {
		setReset(c)
	}
	for c := range p.conns {
		_ = c.Close()
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
		if p.closed || p.mode == refusing {
			p.mu.Unlock()
			resetConn(c)
			continue
		}
		l := &link{silenced: p.mode == silent}
		p.conns[c] = l
		target := p.target
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l, c, target)
	}
}

// serve forwards client to a new connection to target until both sides
// end, or Cut, Switch or Close drops them.
func (p *Proxy) serve(l *link, client net.Conn, target string) {
	defer p.wg.Done()
	upstream, err := p.connect(l, client, target)
	// An unreachable target resets the client, as the target's host would;
	// unless l was silenced meanwhile: then the client stays, unanswered.
	if err != nil && p.forward(l, func() { resetConn(client) }) {
		p.forget(client)
		return
	}
	if upstream == nil {
		p.pipe(l, nil, client) // silenced: only discards
	} else {
		done := make(chan struct{})
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer close(done)
			p.pipe(l, client, upstream)
		}()
		p.pipe(l, upstream, client)
		<-done
	}
	// Both sides have ended. A silenced link keeps its sockets until Cut,
	// Switch or Close: closing them would tell the peers.
	if p.forward(l, func() { closeConns(client, upstream) }) {
		p.forget(client, upstream)
	}
}

// connect dials target for client and registers the new connection. It
// returns nil, nil if l is silenced: a blackholed route lets no connection
// through to the target.
func (p *Proxy) connect(l *link, client net.Conn, target string) (net.Conn, error) {
	if p.silenced(l) {
		return nil, nil
	}
	d := net.Dialer{Timeout: proxyDialTimeout}
	upstream, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	// Cut, Switch or Close may have dropped client while we dialed.
	p.mu.Lock()
	_, live := p.conns[client]
	if live {
		p.conns[upstream] = l
	}
	p.mu.Unlock()
	if !live {
		resetConn(upstream)
		return nil, errors.New("dropped while dialing")
	}
	return upstream, nil
}

// pipe passes on what src sends to dst: its bytes, then its end (see
// passEnd). Once l is silenced it passes nothing and only reads src,
// discarding what it reads, until src ends.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, rerr := src.Read(buf)
		var werr error
		if n > 0 {
			p.forward(l, func() { _, werr = dst.Write(buf[:n]) })
		}
		err := rerr
		if err == nil {
			err = werr
		}
		if err == nil {
			continue
		}
		// Only Blackhole sets a write deadline: a write it cut short is not
		// an end to pass on, even before it has marked l silenced.
		if rerr == nil && errors.Is(werr, os.ErrDeadlineExceeded) {
			continue
		}
		if p.forward(l, func() { passEnd(dst, src, err) }) || rerr != nil {
			return
		}
	}
}

// forward runs pass, which passes something on between the sides of l,
// unless l is silenced, and reports whether it ran.
func (p *Proxy) forward(l *link, pass func()) bool {
	p.fwd.RLock()
	defer p.fwd.RUnlock()
	if l.silenced {
		return false
	}
	pass()
	return true
}

// silenced reports whether l is silenced.
func (p *Proxy) silenced(l *link) bool {
	p.fwd.RLock()
	defer p.fwd.RUnlock()
	return l.silenced
}

// forget removes conns (nil ones skipped) from the live set.
func (p *Proxy) forget(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			delete(p.conns, c)
		}
	}
}

// passEnd passes the end of src on to dst. At EOF that is a half-close, so
// that dst's peer may still answer; on an error (a reset, or a close by Cut)
// it closes both, so that the other direction ends too.
func passEnd(dst, src net.Conn, err error) {
	if errors.Is(err, io.EOF) {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	closeConns(dst, src)
}

// closeConns closes conns, nil ones skipped.
func closeConns(conns ...net.Conn) {
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}

// resetConn closes c, with an RST rather than a FIN when c is a TCP connection.
func resetConn(c net.Conn) {
	setReset(c)
	_ = c.Close()
}

// setReset makes a close of c send an RST rather than a FIN, when c is a
// TCP connection.
func setReset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}
