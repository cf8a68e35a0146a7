//go:build !linux

package oci

import (
	"errors"
	"os"
)

// reflink is Linux-only here; elsewhere PlaceFile falls back to a hard link.
func reflink(src *os.File, dst string) error { return errors.ErrUnsupported }

// exchange swaps a and b with two renames (not atomic: b is briefly missing).
func exchange(a, b string) error {
	old := a + ".old"
	if err := os.Rename(b, old); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		os.Rename(old, b)
		return err
	}
	return os.Rename(old, a)
}
