//go:build linux

package tracker

import (
	"syscall"

	"golang.org/x/sys/unix"
)

const reusePortSupported = true

// reusePortControl sets SO_REUSEPORT, so that several sockets of this
// user can bind one address (Linux lets only sockets of the same
// effective user join a group).
func reusePortControl(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
