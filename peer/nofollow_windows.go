//go:build windows

package peer

import (
	"os"
)

// openNoFollowFlag refuses a symbolic link (or other reparse point) at
// path, then opens it. Windows has no O_NOFOLLOW; creating a symbolic link
// there needs a privilege ordinary users lack, which narrows the window
// between the check and the open to someone who could write the file
// directly anyway.
func openNoFollowFlag(path string, flag int, perm os.FileMode) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&(os.ModeSymlink|os.ModeIrregular) != 0 {
		return nil, errIsSymlink
	}
	return os.OpenFile(path, flag, perm)
}
