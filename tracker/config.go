package tracker

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Defaults and limits of Config.
const (
	// DefaultNumWant is the peer count a client gets when it does not ask
	// (aria2's choice; BEP 3 suggests 50).
	DefaultNumWant = 50
	// MaxNumWant is the most peers one reply ever holds, whatever
	// Config.MaxNumWant says (libtorrent asks for 200).
	MaxNumWant = 200
	// MaxScrapeHashes is the most info-hashes one scrape may name: what fits
	// in a BEP 15 packet (74 × 20 bytes after a 16-byte header, ~1500 bytes
	// in all). HTTP uses the same limit.
	MaxScrapeHashes = 74
)

// DefaultIntervals is the schedule used when Config.Intervals.Interval is
// zero: re-announce every 30 minutes ±5, never more often than every 5.
var DefaultIntervals = Intervals{Interval: 30 * time.Minute, MinInterval: 5 * time.Minute, Jitter: 5 * time.Minute}

// Config is what both front-ends share. The zero value is usable.
type Config struct {
	// Intervals is the re-announce schedule. If Interval is zero the whole
	// of DefaultIntervals is used. Otherwise it is taken as given, except
	// that a negative Jitter counts as zero, Jitter is capped at Interval/2,
	// and MinInterval is capped at Interval - Jitter so that the interval a
	// client gets is never below the min interval. Jitter applies to the
	// interval only; min interval is sent as is. Whole seconds are sent.
	Intervals Intervals
	// DefaultNumWant is the peer count for a request without numwant (or
	// with a negative one). Zero means DefaultNumWant. Capped at MaxNumWant.
	DefaultNumWant int
	// MaxNumWant caps what a client may ask for. Zero means MaxNumWant;
	// values above MaxNumWant count as MaxNumWant.
	MaxNumWant int
	// Logger receives backend errors (not Refusals) and server troubles.
	// Nil means discard.
	Logger *slog.Logger
}

// normalized returns a copy of c with defaults filled and limits applied.
func (c Config) normalized() Config {
	if c.Intervals.Interval <= 0 {
		c.Intervals = DefaultIntervals
	}
	iv := &c.Intervals
	iv.Jitter = max(iv.Jitter, 0)
	iv.Jitter = min(iv.Jitter, iv.Interval/2)
	iv.MinInterval = max(min(iv.MinInterval, iv.Interval-iv.Jitter), 0)
	if c.MaxNumWant <= 0 || c.MaxNumWant > MaxNumWant {
		c.MaxNumWant = MaxNumWant
	}
	if c.DefaultNumWant <= 0 {
		c.DefaultNumWant = DefaultNumWant
	}
	c.DefaultNumWant = min(c.DefaultNumWant, c.MaxNumWant)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// intervalSeconds returns the interval with fresh jitter and the min
// interval, in whole seconds (at least 1).
func (c *Config) intervalSeconds() (interval, minInterval int64) {
	iv := c.Intervals
	d := iv.Interval
	if iv.Jitter > 0 {
		d += time.Duration(rand.Int64N(int64(2*iv.Jitter)+1)) - iv.Jitter
	}
	return max(int64(d/time.Second), 1), max(int64(iv.MinInterval/time.Second), 1)
}

// Stats counts what a server did. Every field is updated atomically while
// the server runs; read them with Load at any time.
type Stats struct {
	// Announces and Scrapes count requests answered with a reply (not a
	// failure).
	Announces atomic.Uint64
	Scrapes   atomic.Uint64
	// Connects counts BEP 15 connect replies (UDP only).
	Connects atomic.Uint64
	// Failures counts requests answered with a failure reason: refused by
	// the parser or the backend, or a backend error.
	Failures atomic.Uint64
	// BackendErrors counts backend errors that were not Refusals (also
	// counted in Failures).
	BackendErrors atomic.Uint64
	// Dropped counts requests not answered at all: UDP packets dropped
	// because the worker queue was full, their source was over its rate
	// or banned, they had a bad or expired connection ID, or were not
	// BEP 15; TCP connections closed at once because a connection cap was
	// reached.
	Dropped atomic.Uint64
	// BadConnIDs counts UDP packets dropped for a wrong or expired
	// connection ID (also counted in Dropped).
	BadConnIDs atomic.Uint64
	// RateLimited counts UDP packets dropped because their source was
	// over its rate or banned (also counted in Dropped).
	RateLimited atomic.Uint64
}
