//go:build !linux

package blockdev

import (
	"errors"
	"os"
)

func punchHole(*os.File, int64, int64) error { return errors.ErrUnsupported }

func cloneRange(*os.File, int64, *os.File, int64, int64) error { return errors.ErrUnsupported }

func copyFileRange(*os.File, int64, *os.File, int64, int64) (int64, error) {
	return 0, errors.ErrUnsupported
}

func blockSizeOf(*os.File) int64 { return SectorSize }
