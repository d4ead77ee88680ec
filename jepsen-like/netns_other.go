//go:build !linux

package jepsenlike

import (
	"context"
	"errors"
	"io"
)

// InPrivateNetns reports whether this process runs in a private network
// namespace; never outside Linux.
func InPrivateNetns() bool { return false }

// ErrNoNetns means a private network namespace could not be created;
// network namespaces exist only on Linux.
var ErrNoNetns = errors.New("cannot create a private network namespace: they exist only on Linux")

// RunInPrivateNetns always fails outside Linux.
func RunInPrivateNetns(context.Context, string, []string, io.Writer, io.Writer) (int, error) {
	return 0, ErrNoNetns
}

// PrepareNetns does nothing outside Linux.
func PrepareNetns() error { return nil }
