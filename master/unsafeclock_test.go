package master

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"fileshare/internal/poll"
)

// The unsafe clock hook shifts only the wall reading by the file's
// offset, follows changes of the file, and treats a missing or bad file
// as offset 0.
func TestUnsafeClockFollowsItsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clock")
	c := NewUnsafeClock(path, nil)
	if got := c.Offset(); got != 0 {
		t.Fatalf("offset with no file is %v, want 0", got)
	}
	for _, tc := range []struct {
		text string
		want time.Duration
	}{{"+1h\n", time.Hour}, {"-2m", -2 * time.Minute}, {"not a duration", 0}, {"0s", 0}, {"+30s", 30 * time.Second}} {
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		// A rewrite within one mtime tick but of another size is seen too.
		poll.Until(t, 5*time.Second, "the clock takes the offset "+tc.want.String()+" from "+tc.text, func() bool {
			before := time.Now()
			now := c.Now()
			after := time.Now()
			return c.Offset() == tc.want && !now.Before(before.Add(tc.want)) && !now.After(after.Add(tc.want))
		})
	}
	if n := c.Now(); n != n.Round(0) {
		t.Fatal("the shifted clock carries a monotonic reading")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "a removed file means offset 0", func() bool { c.Now(); return c.Offset() == 0 })
}
