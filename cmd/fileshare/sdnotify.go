package main

import (
	"fmt"
	"net"
)

// sdNotify tells the service manager about this process's state, as
// systemd's sd_notify(3) does for a unit with Type=notify: state is one or
// more newline-separated assignments such as "READY=1" or "STOPPING=1".
// socket is the value of $NOTIFY_SOCKET: a path, or a name in Linux's
// abstract namespace when it starts with '@' (Go's net package maps the
// '@' to the leading NUL the kernel expects). An empty socket means no
// service manager is listening, and sdNotify does nothing. It does not
// block: the socket is a datagram socket, and a full one fails the write.
func sdNotify(socket, state string) error {
	if socket == "" {
		return nil
	}
	if socket[0] != '/' && socket[0] != '@' {
		return fmt.Errorf("NOTIFY_SOCKET %q is neither a path nor an abstract socket name (@name)", socket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify the service manager at %s: %w", socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify the service manager at %s: %w", socket, err)
	}
	return nil
}
