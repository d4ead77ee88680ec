package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteUnits are parseBytes's suffixes, matched case-insensitively in this
// order (so "KiB" wins over "B").
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// parseBytes parses a byte size, for every flag that takes one (--rate,
// --size): "10MiB", "500KiB", "1GiB", "1.5GB", "2M", "7B", "1048576",
// optionally ending in "/s", with or without a space before the unit.
// KiB, MiB, GiB and bare K, M, G are powers of 1024; KB, MB, GB powers of
// 1000; units are case-insensitive. A whole number is exact; a fraction
// is rounded down to whole bytes. "" is 0; anything else must be a
// positive number that fits in an int64.
func parseBytes(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	if t == "" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range byteUnits {
		if len(t) >= len(u.suffix) && strings.EqualFold(t[len(t)-len(u.suffix):], u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	bad := fmt.Errorf("%q is not a positive size; write e.g. 10MiB, 500KiB or 1048576", s)
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n <= 0 || n > math.MaxInt64/mult {
			return 0, bad
		}
		return n * mult, nil
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || !(v > 0) || v*float64(mult) >= math.MaxInt64 {
		return 0, bad
	}
	return int64(v * float64(mult)), nil
}

// positiveBytes is parseBytes for a flag that needs at least one byte
// (--size): "" and sizes that round down to 0 are errors.
func positiveBytes(s string) (int64, error) {
	n, err := parseBytes(s)
	if err == nil && n <= 0 {
		err = fmt.Errorf("%q is not a positive size; write e.g. 64MiB or 1GiB", s)
	}
	return n, err
}
