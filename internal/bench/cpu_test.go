package bench

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// The stat-line parser reads utime and stime (fields 14 and 15) whatever
// the command name holds, and refuses lines not in the kernel's format.
func TestParseProcStatCPU(t *testing.T) {
	// 52 fields, as Linux 6.x writes them; utime=1234 stime=567.
	tail := " S 1 4242 4242 0 -1 4194560 31337 0 7 0 1234 567 0 0 20 0 9 0 123456 1234567890 5678 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	for _, tc := range []struct {
		name, line string
		want       int64
		bad        bool
	}{
		{"plain name", "4242 (fileshare)" + tail, 1801, false},
		{"name with spaces and parentheses", "4242 (a) (b c) d)" + tail, 1801, false},
		{"name that looks like fields", "4242 (1 2 3 4 5 6 7 8 9 10 11 12 13)" + tail, 1801, false},
		{"empty name", "4242 ()" + tail, 1801, false},
		{"no newline, minimal fields", "7 (x) R 1 2 3 4 5 6 7 8 9 10 11 12", 11 + 12, false},
		{"zero times", "7 (x) R 1 2 3 4 5 6 7 8 9 10 0 0", 0, false},
		{"too few fields", "7 (x) R 1 2 3 4 5 6 7 8 9 10 11", 0, true},
		{"no parentheses", "7 x R 1 2 3 4 5 6 7 8 9 10 11 12", 0, true},
		{"no opening parenthesis", "7 x) R 1 2 3 4 5 6 7 8 9 10 11 12", 0, true},
		{"utime not a number", "7 (x) R 1 2 3 4 5 6 7 8 9 10 ten 12", 0, true},
		{"negative stime", "7 (x) R 1 2 3 4 5 6 7 8 9 10 11 -12", 0, true},
		{"overflowing utime", "7 (x) R 1 2 3 4 5 6 7 8 9 10 99999999999999999999 12", 0, true},
		{"empty", "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStatCPU([]byte(tc.line))
			if tc.bad {
				if !errors.Is(err, errBadStat) {
					t.Fatalf("got %d, %v; want errBadStat", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// The kernel's tick rate comes from the auxiliary vector: 100 on Linux.
func TestClockTicksIsUSERHZ(t *testing.T) {
	if got := clockTicks(); got != 100 {
		t.Fatalf("clockTicks() = %d, want Linux's USER_HZ, 100", got)
	}
}

// CPU spent by a process between start and stop is what the meter
// reports, read from the real /proc.
func TestCPUMeterSeesCPUSpent(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs Linux's /proc")
	}
	m, err := startCPU([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the process's own CPU time moves by 50 ms (at 100
	// ticks a second, 5 ticks).
	before, _ := processCPU(os.Getpid(), clockTicks())
	x := 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		for i := range 1 << 20 {
			x += i
		}
		if now, _ := processCPU(os.Getpid(), clockTicks()); now-before >= 50*time.Millisecond {
			break
		}
	}
	u, err := m.stop()
	if err != nil {
		t.Fatal(err)
	}
	if u.Used < 50*time.Millisecond || u.Generator < 50*time.Millisecond {
		t.Fatalf("used %s, generator %s after a 50 ms spin (x=%d); want at least 50 ms each", u.Used, u.Generator, x)
	}
	if got := u.PerOp(10); got != u.Used/10 {
		t.Errorf("PerOp(10) = %s, want %s", got, u.Used/10)
	}
	if s := cpuSummary(u, 10); !strings.HasPrefix(s, ", cpu_us/announce=") {
		t.Errorf("summary %q", s)
	}
	if _, err := startCPU([]int{1 << 30}); err == nil {
		t.Error("startCPU accepted a process that does not exist")
	}
}
