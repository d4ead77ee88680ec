package peer

import "errors"

// errLocked is tryLock's answer when another holder has the lock.
var errLocked = errors.New("locked by another process")

// errIsSymlink is openNoFollowFlag's answer for a symbolic link.
var errIsSymlink = errors.New("is a symbolic link")
