//go:build linux

package peer

import (
	"os"
	"syscall"
)

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE from <fcntl.h>, which the
// syscall package does not define.
const syncFileRangeWrite = 2

// startWriteback asks the kernel to start writing f's dirty pages to disk
// and returns without waiting for them (sync_file_range(2) with
// SYNC_FILE_RANGE_WRITE over the whole file). It is only a hint that
// spreads the disk writes over the download instead of leaving them all
// to the final fsync; it makes nothing durable, so the resume state still
// waits for an fsync. Errors are ignored for the same reason.
func startWriteback(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SyncFileRange(int(fd), 0, 0, syncFileRangeWrite)
	})
}

// Flags of fallocate(2) from <linux/falloc.h>.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
)

// freeRange deallocates n bytes of f at off, leaving a hole that reads as
// zeros and takes no room (fallocate(2) with FALLOC_FL_PUNCH_HOLE). It is
// best effort: a file system that cannot punch holes keeps the bytes.
func freeRange(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.Fallocate(int(fd), fallocPunchHole|fallocKeepSize, off, n)
	})
}
