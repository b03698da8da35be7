package pollconn

import (
	"net"
	"runtime"
)

// Available reports whether Wrap puts connections on the raw path in this
// build: on Linux, and not under the race detector.
const Available = runtime.GOOS == "linux" && !raceBuild

// Wrap returns c with reads and writes done as raw system calls on its
// non-blocking descriptor, waiting in the runtime's network poller. c is
// returned as it is when it exposes no descriptor, and whenever Available
// is false.
func Wrap(c net.Conn) net.Conn {
	if raceBuild {
		return c
	}
	return wrap(c)
}
