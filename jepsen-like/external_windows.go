//go:build windows

package jepsenlike

import (
	"context"
)

// runExternal needs POSIX signals (SIGSTOP) to pause the tracker under
// test.
func runExternal(context.Context, Config) (*Results, error) {
	return nil, configErr("TrackerCmd", "a tracker under test ({TrackerCmd}) needs POSIX signals; run it on Linux or macOS")
}
