package blockdev

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// withFd runs fn with f's descriptor.
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// unsupported reports whether err means "this fast path does not apply here"
// (other file system, file system without the feature, old kernel, unaligned
// range), as opposed to a real I/O error.
func unsupported(err error) bool {
	for _, e := range []syscall.Errno{unix.EXDEV, unix.EOPNOTSUPP, unix.ENOTSUP, unix.ENOSYS, unix.EINVAL, unix.EBADF, unix.ENOTTY} {
		if errors.Is(err, e) {
			return true
		}
	}
	return errors.Is(err, errors.ErrUnsupported)
}

// markUnsupported wraps err with errors.ErrUnsupported when unsupported(err).
func markUnsupported(op string, err error) error {
	if err == nil {
		return nil
	}
	if unsupported(err) {
		return fmt.Errorf("%s: %w (%w)", op, errors.ErrUnsupported, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func punchHole(f *os.File, off, n int64) error {
	return markUnsupported("fallocate punch hole", withFd(f, func(fd int) error {
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}))
}

// cloneRange shares src's [sOff, sOff+n) with dst at dOff (FICLONERANGE).
func cloneRange(dst *os.File, dOff int64, src *os.File, sOff, n int64) error {
	return markUnsupported("FICLONERANGE", withFd(src, func(sfd int) error {
		return withFd(dst, func(dfd int) error {
			return unix.IoctlFileCloneRange(dfd, &unix.FileCloneRange{
				Src_fd: int64(sfd), Src_offset: uint64(sOff), Src_length: uint64(n), Dest_offset: uint64(dOff),
			})
		})
	}))
}

// copyFileRange copies up to n bytes with copy_file_range, looping until n
// bytes are done or the source ends; it returns how many were copied.
func copyFileRange(dst *os.File, dOff int64, src *os.File, sOff, n int64) (int64, error) {
	var done int64
	err := withFd(src, func(sfd int) error {
		return withFd(dst, func(dfd int) error {
			for done < n {
				so, do := sOff+done, dOff+done
				c, err := unix.CopyFileRange(sfd, &so, dfd, &do, int(min(n-done, 1<<30)), 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return err
				}
				if c == 0 {
					return nil // source ended
				}
				done += int64(c)
			}
			return nil
		})
	})
	return done, markUnsupported("copy_file_range", err)
}

func blockSizeOf(f *os.File) int64 {
	var st unix.Stat_t
	if err := withFd(f, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return SectorSize
	}
	bs := int64(st.Blksize)
	if bs < SectorSize || bs&(bs-1) != 0 {
		return SectorSize
	}
	return bs
}
