//go:build windows

package jepsenlike

import (
	"context"
	"fmt"
)

// runExternal needs POSIX signals (SIGSTOP) to pause the tracker under
// test.
func runExternal(context.Context, Config) (*Results, error) {
	return nil, fmt.Errorf("%w: a tracker under test (--tracker-cmd) needs POSIX signals; run it on Linux or macOS", ErrConfig)
}
