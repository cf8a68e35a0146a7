package oci

import (
	"os"

	"golang.org/x/sys/unix"
)

// reflink creates dst as a clone of src (FICLONE). It fails with EXDEV,
// EOPNOTSUPP, EINVAL or similar where the file system cannot share extents.
func reflink(src *os.File, dst string) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = unix.IoctlFileClone(int(f.Fd()), int(src.Fd()))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// exchange atomically swaps the directory entries a and b.
func exchange(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return &os.LinkError{Op: "renameat2 RENAME_EXCHANGE", Old: a, New: b, Err: err}
	}
	return nil
}
