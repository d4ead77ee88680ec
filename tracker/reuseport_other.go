//go:build !linux

package tracker

import "syscall"

// Other systems get one socket: SO_REUSEPORT does not spread datagrams
// over sockets everywhere it exists.
const reusePortSupported = false

var reusePortControl func(network, address string, c syscall.RawConn) error
