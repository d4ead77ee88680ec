package main

import "testing"

// Every size any flag accepted before the two parsers became one still
// parses to the same number of bytes, and every size either rejected is
// still an error, except "", which --rate takes as "no limit".
func TestParseBytesAcceptsEveryFormerSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		// What bench's --size parser accepted.
		{"1GiB", 1 << 30}, {"64MiB", 64 << 20}, {"512KiB", 512 << 10}, {"100", 100}, {"7B", 7}, {"2 MiB", 2 << 20},
		// What get's and demo's --rate and --size parser accepted.
		{"", 0}, {"1048576", 1 << 20}, {"10MiB", 10 << 20}, {"500KiB", 500 << 10}, {"2M", 2 << 20},
		{"1.5GB", 1.5e9}, {"8MiB/s", 8 << 20}, {"3kb", 3000}, {"1.5KiB", 1536}, {" 4k ", 4 << 10},
		// Whole numbers are exact, even beyond a float64's precision.
		{"9007199254740993", 9007199254740993}, {"8589934591GiB", 8589934591 << 30},
	} {
		if got, err := parseBytes(tc.in); err != nil || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"GiB", "-1MiB", "1TB", "x", // bench's parser rejected these
		"fast", "0", "MiB", // get's rejected these
		"8589934592GiB", "1e30", "inf", "NaN", "-0.5", // out of range
	} {
		if got, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) = %d, nil; want an error", bad, got)
		}
	}
}

// --size needs at least one byte: "" (which parseBytes takes as 0), or a
// size that rounds down to 0, is refused as bench's own parser refused
// "" before.
func TestParsePositiveBytesRefusesZero(t *testing.T) {
	for _, bad := range []string{"", "0.5", "0", "x"} {
		if got, err := positiveBytes(bad); err == nil {
			t.Errorf("positiveBytes(%q) = %d, nil; want an error", bad, got)
		}
	}
	if got, err := positiveBytes("2MiB"); err != nil || got != 2<<20 {
		t.Errorf("positiveBytes(2MiB) = %d, %v; want %d", got, err, 2<<20)
	}
}
