package blockdev

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errNoMoreData: no data after the offset (SEEK_DATA's ENXIO).
var errNoMoreData = errors.New("no more data")

// cloneWhole shares all of src with the empty file dst (FICLONE).
func cloneWhole(dst, src *os.File) error {
	return markUnsupported("FICLONE", withFd(src, func(sfd int) error {
		return withFd(dst, func(dfd int) error { return unix.IoctlFileClone(dfd, sfd) })
	}))
}

func seekData(f *os.File, off int64) (int64, error) {
	var pos int64
	err := withFd(f, func(fd int) (err error) {
		pos, err = unix.Seek(fd, off, unix.SEEK_DATA)
		return err
	})
	if errors.Is(err, unix.ENXIO) {
		return 0, errNoMoreData
	}
	return pos, err
}

func seekHole(f *os.File, off int64) (int64, error) {
	var pos int64
	err := withFd(f, func(fd int) (err error) {
		pos, err = unix.Seek(fd, off, unix.SEEK_HOLE)
		return err
	})
	return pos, err
}
