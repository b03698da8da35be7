//go:build race

package pollconn

// raceBuild: the race detector does not see memory that raw system calls
// read and write (syscall.Read and Write annotate it for the detector;
// RawSyscall does not), so a race build keeps Go's own I/O path, where a
// race on a buffer handed to the socket is reported.
const raceBuild = true
