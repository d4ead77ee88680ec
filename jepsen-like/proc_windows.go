//go:build windows

package jepsenlike

import "syscall"

// The harness drives masters with POSIX signals (SIGSTOP, SIGCONT, SIGTERM;
// see internal/proccluster) and Linux network namespaces; on Windows it
// can only say so.

func procAttr() *syscall.SysProcAttr { return nil }
