package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU time of processes, read from Linux's /proc/<pid>/stat, so that a
// benchmark can divide the CPU a tracker spent over a measurement by the
// announces it answered: a figure that travels between machines better
// than announces per second.

// errBadStat means a /proc/<pid>/stat line is not in the kernel's format.
var errBadStat = errors.New("malformed /proc stat line")

// parseProcStatCPU returns utime+stime, in clock ticks, from the text of
// /proc/<pid>/stat: "pid (comm) state ppid ... utime stime ...", where
// utime and stime are the 14th and 15th fields. The command name may
// hold spaces and parentheses, so the fields are counted from the last
// ')'. For a process (not a single thread) the kernel sums the times of
// all its threads, live and exited.
func parseProcStatCPU(line []byte) (int64, error) {
	end := bytes.LastIndexByte(line, ')')
	if end < 0 || bytes.IndexByte(line[:end], '(') < 0 {
		return 0, fmt.Errorf("%w: no (comm) in %.60q", errBadStat, line)
	}
	// Fields after the name: state is the 3rd field, so utime (14th) is
	// the 12th of these and stime the 13th.
	fields := strings.Fields(string(line[end+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("%w: %d fields after the command name, want at least 13", errBadStat, len(fields))
	}
	var sum int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%w: CPU time %q is not a tick count", errBadStat, f)
		}
		sum += n
	}
	return sum, nil
}

// processCPU returns the user+system CPU time process pid has used.
func processCPU(pid int, ticks int64) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	n, err := parseProcStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	return time.Duration(n) * time.Second / time.Duration(ticks), nil
}

// cpuMeter measures the CPU time a set of processes uses between start
// and stop.
type cpuMeter struct {
	pids   []int
	ticks  int64
	before []time.Duration
	self   time.Duration // this process's own CPU at start
}

// startCPU reads the CPU time used so far by each of pids and by this
// process. It fails if a process cannot be read (gone, or not Linux).
func startCPU(pids []int) (*cpuMeter, error) {
	m := &cpuMeter{pids: pids, ticks: clockTicks()}
	for _, pid := range pids {
		t, err := processCPU(pid, m.ticks)
		if err != nil {
			return nil, err
		}
		m.before = append(m.before, t)
	}
	m.self, _ = processCPU(os.Getpid(), m.ticks)
	return m, nil
}

// CPUUse is the CPU time processes used over a measurement.
type CPUUse struct {
	PIDs []int
	// Used is the user+system CPU time of PIDs together.
	Used time.Duration
	// Generator is the benchmark process's own CPU time over the same
	// window: on a machine it shares with the tracker, a generator that
	// needs most of a core is part of the picture.
	Generator time.Duration
}

// PerOp returns the CPU time of PIDs per operation, or 0 for none.
func (u *CPUUse) PerOp(ops int) time.Duration {
	if u == nil || ops <= 0 {
		return 0
	}
	return u.Used / time.Duration(ops)
}

// stop reads the processes' CPU time again and returns what they used
// since start.
func (m *cpuMeter) stop() (*CPUUse, error) {
	u := &CPUUse{PIDs: m.pids}
	for i, pid := range m.pids {
		t, err := processCPU(pid, m.ticks)
		if err != nil {
			return nil, err
		}
		u.Used += t - m.before[i]
	}
	if self, err := processCPU(os.Getpid(), m.ticks); err == nil {
		u.Generator = self - m.self
	}
	return u, nil
}

// cpuSummary formats CPU use per answered announce for a summary line:
// ", cpu_us/announce=12.3 (pids 1,2,3: 4.56s; generator 7.8)", or "" when
// nothing was measured.
func cpuSummary(u *CPUUse, answered int) string {
	if u == nil {
		return ""
	}
	pids := make([]string, len(u.PIDs))
	for i, p := range u.PIDs {
		pids[i] = strconv.Itoa(p)
	}
	us := func(d time.Duration) string {
		if answered <= 0 {
			return "n/a"
		}
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond)/float64(answered), 'f', 2, 64)
	}
	return fmt.Sprintf(", cpu_us/announce=%s (pids %s: %.2fs cpu; generator %s)",
		us(u.Used), strings.Join(pids, ","), u.Used.Seconds(), us(u.Generator))
}
