//go:build windows

package jepsenlike

import (
	"context"
	"errors"
	"io"
	"syscall"
)

// The harness drives masters with POSIX signals (SIGSTOP, SIGCONT, SIGTERM;
// see internal/proccluster) and Linux network namespaces; on Windows it
// can only say so.

// InPrivateNetns reports whether this process runs in a private network
// namespace; never on Windows.
func InPrivateNetns() bool { return false }

// ErrNoNetns means a private network namespace could not be created;
// network namespaces exist only on Linux.
var ErrNoNetns = errors.New("cannot create a private network namespace: they exist only on Linux")

// RunInPrivateNetns always fails on Windows.
func RunInPrivateNetns(context.Context, string, []string, io.Writer, io.Writer) (int, error) {
	return 0, ErrNoNetns
}

// PrepareNetns does nothing on Windows.
func PrepareNetns() error { return nil }

func procAttr() *syscall.SysProcAttr { return nil }
