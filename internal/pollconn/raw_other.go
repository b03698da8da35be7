//go:build !linux

package pollconn

import "net"

// wrap returns c: the raw path is implemented for Linux only.
func wrap(c net.Conn) net.Conn { return c }
