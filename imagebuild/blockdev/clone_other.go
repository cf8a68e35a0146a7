//go:build !linux

package blockdev

import (
	"errors"
	"os"
)

var errNoMoreData = errors.New("no more data")

func cloneWhole(*os.File, *os.File) error           { return errors.ErrUnsupported }
func seekData(*os.File, int64) (int64, error)       { return 0, errors.ErrUnsupported }
func seekHole(f *os.File, off int64) (int64, error) { return 0, errors.ErrUnsupported }
