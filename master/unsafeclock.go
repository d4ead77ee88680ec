package master

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// UnsafeClockEnv names the environment variable of the unsafe clock hook
// (see NewUnsafeClock). 'fileshare master' reads it.
const UnsafeClockEnv = "FILESHARE_UNSAFE_CLOCK_FILE"

// unsafeClockCheckEvery is how often, at most, the clock file is checked.
const unsafeClockCheckEvery = 100 * time.Millisecond

// UnsafeClock is a wall clock that runs off by an offset read from a file:
// the fault harness's stand-in for a system clock that jumps or drifts (Go
// ignores libfaketime). It is for fault-injection runs only.
type UnsafeClock struct {
	path   string
	logger *slog.Logger

	mu        sync.Mutex
	offset    time.Duration
	checked   time.Time // monotonic: when the file was last looked at
	mtime     time.Time // the file's mtime when last read
	size      int64
	warned    bool // a warning about a missing/unparsable file was logged
	hasMtime  bool
	lastValue string
}

// NewUnsafeClock returns a clock whose Now is time.Now plus the offset in
// the file at path. The file holds one Go duration ("+30s", "-2m", "0s");
// it is re-read when its mtime or size changes, checked at most every
// 100 ms (on a call of Now, so there is no goroutine to stop). A missing or
// unparsable file means offset 0, with one warning until the file is good
// again.
func NewUnsafeClock(path string, logger *slog.Logger) *UnsafeClock {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &UnsafeClock{path: path, logger: logger}
	c.mu.Lock()
	c.refreshLocked(time.Now())
	c.mu.Unlock()
	return c
}

// Now returns time.Now shifted by the file's offset, without a monotonic
// reading (a jumping system clock moves only the wall reading). Safe for
// concurrent use.
func (c *UnsafeClock) Now() time.Time {
	now := time.Now()
	c.mu.Lock()
	if now.Sub(c.checked) >= unsafeClockCheckEvery {
		c.refreshLocked(now)
	}
	off := c.offset
	c.mu.Unlock()
	return time.Unix(0, now.UnixNano()+int64(off))
}

// Offset returns the offset in force.
func (c *UnsafeClock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

func (c *UnsafeClock) refreshLocked(now time.Time) {
	c.checked = now
	st, err := os.Stat(c.path)
	if err != nil {
		c.setBadLocked("cannot read the unsafe clock file; using offset 0", err)
		c.hasMtime = false
		return
	}
	if c.hasMtime && st.ModTime().Equal(c.mtime) && st.Size() == c.size {
		return
	}
	c.mtime, c.size, c.hasMtime = st.ModTime(), st.Size(), true
	b, err := os.ReadFile(c.path)
	if err != nil {
		c.setBadLocked("cannot read the unsafe clock file; using offset 0", err)
		return
	}
	s := strings.TrimSpace(string(b))
	d, err := time.ParseDuration(strings.TrimPrefix(s, "+"))
	if err != nil {
		c.setBadLocked("the unsafe clock file does not hold a Go duration such as +30s or -2m; using offset 0", err)
		return
	}
	if s != c.lastValue {
		c.logger.Warn("unsafe clock offset", "offset", d, "file", c.path)
	}
	c.offset, c.warned, c.lastValue = d, false, s
}

func (c *UnsafeClock) setBadLocked(msg string, err error) {
	c.offset = 0
	if !c.warned {
		c.logger.Warn(msg, "file", c.path, "err", err)
		c.warned = true
	}
}
