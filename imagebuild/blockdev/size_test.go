package blockdev

import (
	"strconv"
	"testing"
)

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{
		"0": 0, "512": 512, "1K": 1024, "1KiB": 1024, "128M": 128 << 20, "128MiB": 128 << 20, "128mib": 128 << 20,
		"3G": 3 << 30, "3GiB": 3 << 30, "2TiB": 2 << 40, "7B": 7, "8388607TiB": 8388607 << 40,
	} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "GiB", "1.5GiB", "-1", "3GB", "3 GiB", " 3", "1e9", "8388608TiB", "99999999999999999999", "0x10"} {
		if n, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, n)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 1 << 30: "1 GiB",
		1395864371: "1.3 GiB", 2<<30 + 130<<20: "2.13 GiB", 130<<20 + 16896: "130.02 MiB",
	} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// FuzzParseSize: never panics, never negative, and plain numbers round-trip.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"3GiB", "128M", "1048576", "9223372036854775807", "8388607TiB", "k", "1.5G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if back, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || back != n {
			t.Fatalf("ParseSize(%d) = %d, %v", n, back, err)
		}
		_ = FormatSize(n)
	})
}
