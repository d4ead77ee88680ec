package bench

import (
	"fmt"
	"slices"
	"time"
)

// Latencies collects operation latencies.
type Latencies []time.Duration

// Percentile returns the p-th percentile (0..100) by nearest rank.
func (l Latencies) Percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Summary formats p50/p99/p99.9.
func (l Latencies) Summary() string {
	return fmt.Sprintf("p50=%s p99=%s p99.9=%s", ms(l.Percentile(50)), ms(l.Percentile(99)), ms(l.Percentile(99.9)))
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func median(d []time.Duration) time.Duration {
	return Latencies(d).Percentile(50)
}
