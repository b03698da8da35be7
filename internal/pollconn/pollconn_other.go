//go:build !linux

package pollconn

import "net"

// Wrap returns c: the raw path is implemented for Linux only.
func Wrap(c net.Conn) net.Conn { return c }
