package blockdev

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// FormatSize formats n bytes for messages in binary units with up to two
// decimals: "512 B", "1.5 KiB", "1.3 GiB", "2.13 GiB".
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for math.Abs(v) >= unit && i < 5 {
		v /= unit
		i++
	}
	s := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	return s + " " + []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}[i]
}

// ParseSize parses a byte count: a non-negative integer, optionally followed
// by a binary unit K, KiB, M, MiB, G, GiB, T or TiB (case-insensitive, no
// space), such as "3GiB", "128M" or "1048576". Decimal units (KB, MB, …)
// are rejected rather than guessed at.
func ParseSize(s string) (int64, error) {
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToLower(s[len(num):])
	shift, ok := map[string]uint{"": 0, "b": 0, "k": 10, "kib": 10, "m": 20, "mib": 20, "g": 30, "gib": 30, "t": 40, "tib": 40}[unit]
	if !ok {
		return 0, fmt.Errorf("parse size %q: unknown unit %q (want B, KiB, MiB, GiB or TiB)", s, s[len(num):])
	}
	if num == "" {
		return 0, fmt.Errorf("parse size %q: no number", s)
	}
	n, err := strconv.ParseUint(num, 10, 63)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("parse size %q: not a number of bytes up to 8 EiB", s)
	}
	return int64(n << shift), nil
}
