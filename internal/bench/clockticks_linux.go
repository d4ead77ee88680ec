package bench

import "golang.org/x/sys/unix"

// atClkTck is the auxiliary vector entry that carries the kernel's
// clock-tick rate for /proc times (AT_CLKTCK in linux/auxvec.h).
const atClkTck = 17

// clockTicks returns how many clock ticks make a second in /proc/<pid>/stat
// times: sysconf(_SC_CLK_TCK), which the kernel passes to every process
// in its auxiliary vector. Linux fixes it at 100 (USER_HZ) on every
// architecture, which is the answer when the vector cannot be read.
func clockTicks() int64 {
	if av, err := unix.Auxv(); err == nil {
		for _, kv := range av {
			if kv[0] == atClkTck && kv[1] > 0 {
				return int64(kv[1])
			}
		}
	}
	return 100
}
