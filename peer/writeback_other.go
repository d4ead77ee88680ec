//go:build !linux

package peer

import "os"

// startWriteback does nothing where sync_file_range(2) does not exist: the
// kernel's own writeback and the checkpoints' fsyncs write the data out.
func startWriteback(*os.File) {}

// freeRange does nothing where fallocate(2) does not exist: a piece that
// failed to be written keeps the room its first bytes took.
func freeRange(*os.File, int64, int64) {}
