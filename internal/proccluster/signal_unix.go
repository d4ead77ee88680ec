//go:build !windows

package proccluster

import (
	"os"
	"syscall"
)

// signalStop pauses a process (SIGSTOP cannot be caught or ignored).
func signalStop(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }

// signalCont resumes a paused process.
func signalCont(p *os.Process) error { return p.Signal(syscall.SIGCONT) }

// signalTerm asks a process to shut down gracefully.
func signalTerm(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
