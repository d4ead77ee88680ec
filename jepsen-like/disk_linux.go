//go:build linux

package jepsenlike

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// diskSupported says why per-master filesystems cannot be mounted here,
// or "" if they can (root on Linux).
func diskSupported() string {
	if os.Geteuid() != 0 {
		return "disk-full needs root to mount a small filesystem (tmpfs) for each master's data dir"
	}
	return ""
}

// mountDisk mounts a tmpfs of size bytes at dir (created if needed).
func mountDisk(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return fmt.Errorf("mount a %d MiB tmpfs at %s: %w", size>>20, dir, err)
	}
	return nil
}

// unmountDisk unmounts dir, detaching it lazily if a process still holds
// a file open there (the masters are stopped first, so that is a leak
// that must not block the cleanup).
func unmountDisk(dir string) error {
	err := syscall.Unmount(dir, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, syscall.EINVAL) { // EINVAL: not mounted
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// privateMounts makes every mount of this process's mount namespace
// private, so a tmpfs mounted later never propagates to the host's
// namespace. Call it only in a new mount namespace (RunInPrivateNetns
// makes one): in the host's it would change the host's propagation.
func privateMounts() error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the private namespace's mounts private: %w", err)
	}
	return nil
}

// isNoSpace reports whether err is ENOSPC (or EDQUOT).
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
