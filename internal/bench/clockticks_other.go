//go:build !linux

package bench

// clockTicks is Linux's USER_HZ: elsewhere there is no /proc/<pid>/stat,
// and processCPU fails naming the file it could not read.
func clockTicks() int64 { return 100 }
