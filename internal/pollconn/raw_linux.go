package pollconn

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// wrap returns c with reads and writes done as raw system calls on its
// non-blocking descriptor, waiting in the runtime's network poller. c is
// returned as it is when it exposes no descriptor.
func wrap(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	cn := &conn{Conn: c}
	cn.r.fn, cn.r.call = cn.r.read, rc.Read
	cn.w.fn, cn.w.call = cn.w.write, rc.Write
	return cn
}

type conn struct {
	net.Conn
	// The state of the one read and the one write in progress, so that
	// neither allocates a closure; the mutexes keep concurrent callers of
	// the same direction apart, as the descriptor's own locks would.
	r, w op
}

// op is one read or write on the raw descriptor.
type op struct {
	mu    sync.Mutex
	call  func(func(fd uintptr) bool) error // the RawConn's Read or Write
	fn    func(fd uintptr) bool             // op.read or op.write
	p     []byte
	n     int
	errno syscall.Errno
}

// run reads or writes p: call invokes fn until it reports done, waiting in
// the poller while the descriptor is not ready.
func (o *op) run(p []byte) (int, syscall.Errno, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.p, o.n, o.errno = p, 0, 0
	err := o.call(o.fn)
	n, errno := o.n, o.errno
	o.p = nil
	return n, errno, err
}

func (o *op) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&o.p[0])), uintptr(len(o.p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		}
		o.n, o.errno = int(r), e
		return true
	}
}

func (o *op) write(fd uintptr) bool {
	for o.n < len(o.p) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&o.p[o.n])), uintptr(len(o.p)-o.n))
		switch e {
		case 0:
			o.n += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable
		default:
			o.errno = e
			return true
		}
	}
	return true
}

func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, errno, err := c.r.run(p)
	switch {
	case err != nil:
		return 0, err // deadline exceeded or closed, as net reports it
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, errno, err := c.w.run(p)
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

func (c *conn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
