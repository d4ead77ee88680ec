package testenv

import (
	"os"
	"runtime"
	"testing"
)

// Without the variable a missing tool is a skip; with it, a failure.
func TestUnavailableSkipsUnlessRequired(t *testing.T) {
	for _, required := range []bool{false, true} {
		t.Setenv(RequireVar, map[bool]string{false: "", true: "1"}[required])
		var skipped, failed bool
		done := make(chan struct{})
		ft := &fakeT{skip: func() { skipped = true }, fatal: func() { failed = true }}
		go func() {
			defer close(done)
			NeedTool(ft, "fileshare-no-such-command", "nothing")
		}()
		<-done
		if skipped == required || failed != required {
			t.Errorf("required=%v: skipped=%v failed=%v, want a %s", required, skipped, failed, map[bool]string{false: "skip", true: "failure"}[required])
		}
	}
	if os.Geteuid() == 0 {
		NeedRoot(t, "nothing") // must return as root
	}
}

// fakeT records a skip or a failure and ends its goroutine as testing.T does.
type fakeT struct {
	testing.TB
	skip, fatal func()
}

func (f *fakeT) Helper()      {}
func (f *fakeT) Skip(...any)  { f.skip(); runtime.Goexit() }
func (f *fakeT) Fatal(...any) { f.fatal(); runtime.Goexit() }
