//go:build linux

package jepsenlike

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"unsafe"
)

// netnsEnv marks a harness process that RunInPrivateNetns started.
const netnsEnv = "FILESHARE_JEPSEN_NETNS"

// InPrivateNetns reports whether this process was started by
// RunInPrivateNetns, i.e. runs in a network namespace and a mount
// namespace of its own.
func InPrivateNetns() bool { return os.Getenv(netnsEnv) == "1" }

// ErrNoNetns means a private network namespace could not be created (the
// process lacks CAP_SYS_ADMIN, or the kernel forbids it).
var ErrNoNetns = errors.New("cannot create a private network namespace")

// RunInPrivateNetns runs exe with args in a new network namespace and a
// new mount namespace and returns its exit code. The child sees only its
// own loopback interface, so the iptables rules and the masters it starts
// can never touch the host's network, and the filesystems it mounts for
// disk-full faults are invisible to the host; everything vanishes with
// the namespaces. The child must call PrepareNetns first (InPrivateNetns
// tells it that it should).
//
// The child runs in its own process group, so a Ctrl-C at the terminal
// reaches only this process, which forwards one SIGINT when ctx ends; the
// child then heals and cleans up on its own. If this process dies, the
// kernel kills the child (Pdeathsig). It blocks until the child exits. It
// returns an error wrapping ErrNoNetns if the namespace cannot be created.
func RunInPrivateNetns(ctx context.Context, exe string, args []string, stdout, stderr io.Writer) (int, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNoNetns, err)
	}
	done := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGINT)
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	<-forwarded
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 2, fmt.Errorf("the harness in the private network namespace was killed by %v", ws.Signal())
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 2, err
	}
	return 0, nil
}

// PrepareNetns brings up the loopback interface of a fresh network
// namespace (it starts down), so 127.0.0.0/8 works, and makes every mount
// of the fresh mount namespace private, so no mount made here reaches the
// host.
func PrepareNetns() error {
	if err := privateMounts(); err != nil {
		return err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer syscall.Close(fd)
	// struct ifreq: a 16-byte interface name, then a union whose first
	// member here is the 16-bit flags word.
	var ifr [40]byte
	copy(ifr[:], "lo")
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		return fmt.Errorf("bring up lo: read flags: %w", errno)
	}
	flags := binary.NativeEndian.Uint16(ifr[16:]) | syscall.IFF_UP
	binary.NativeEndian.PutUint16(ifr[16:], flags)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		return fmt.Errorf("bring up lo: set flags: %w", errno)
	}
	return nil
}

// procAttr is how master processes start: in their own process group
// (a Ctrl-C at the terminal reaches only the harness, which stops them in
// order) and killed by the kernel if the harness dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
