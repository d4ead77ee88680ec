//go:build unix

package peer

import (
	"errors"
	"os"
	"syscall"
)

// openNoFollowFlag opens path with O_NOFOLLOW: the kernel refuses a
// symbolic link in the last element (ELOOP, answered as errIsSymlink)
// with no window between a check and the open.
func openNoFollowFlag(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if err != nil && errors.Is(err, syscall.ELOOP) {
		return nil, errIsSymlink
	}
	return f, err
}
