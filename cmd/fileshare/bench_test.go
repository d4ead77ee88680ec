package main

import (
	"strings"
	"testing"
	"time"
)

// Every bench command runs once at a tiny size, so none of them rots. The
// numbers are not checked: benchmarks are not pass/fail on shared machines.
func TestBenchCommandsRunAtTinySize(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real clusters; skipped with -short")
	}
	for _, tc := range []struct {
		args    []string
		summary string
	}{
		{[]string{"bench", "register", "--clients", "4", "--duration", "1s"}, "register: "},
		{[]string{"bench", "lookup", "--clients", "4", "--duration", "300ms", "--files", "50"}, "lookup: stale="},
		{[]string{"bench", "failover", "--clients", "4", "--trials", "1"}, "failover: median="},
		{[]string{"bench", "scale", "--files", "3000"}, "scale: files=3000"},
		{[]string{"bench", "transfer", "--size", "2MiB", "--sources", "2", "--rounds", "1"}, "transfer: size=2097152 sources=2"},
	} {
		t.Run(tc.args[1], func(t *testing.T) {
			out, stderr, code := fileshare(t, 2*time.Minute, tc.args...)
			if code != 0 {
				t.Fatalf("exit code %d; stdout:\n%s\nstderr:\n%s", code, out, stderr)
			}
			if !strings.Contains(out, tc.summary) {
				t.Fatalf("no summary line starting %q in:\n%s", tc.summary, out)
			}
			t.Log(strings.TrimSpace(out))
		})
	}
}
