//go:build windows

package proccluster

import "os"

// Windows has no SIGSTOP, SIGCONT or SIGTERM: a pause fails with
// ErrNoPause and a graceful stop is a kill.

func signalStop(*os.Process) error   { return ErrNoPause }
func signalCont(*os.Process) error   { return ErrNoPause }
func signalTerm(p *os.Process) error { return p.Kill() }
