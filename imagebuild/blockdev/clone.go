package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/qcluster/qcluster/internal/atomicfile"
)

// CloneFile copies the file src to a new file dst (mode perm) and keeps it
// sparse: a reflink of the whole file where the file system shares extents
// (XFS, btrfs), else a copy of the data extents only (SEEK_DATA/SEEK_HOLE),
// each through Copy's fast paths. Holes stay holes, so a 3 GiB disk with
// 40 MiB written costs 40 MiB. dst appears complete or not at all.
func CloneFile(dst, src string, perm os.FileMode) (Method, error) {
	in, err := os.Open(src)
	if err != nil {
		return MethodNone, fmt.Errorf("clone %s: %w", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return MethodNone, fmt.Errorf("clone %s: %w", src, err)
	}
	if !fi.Mode().IsRegular() {
		return MethodNone, fmt.Errorf("clone %s: not a regular file", src)
	}
	method := MethodNone
	out, err := atomicfile.Create(dst, perm)
	if err != nil {
		return MethodNone, err
	}
	defer out.Abort()
	err = cloneWhole(out.File, in)
	switch {
	case err == nil:
		method = MethodReflink
	case errors.Is(err, errors.ErrUnsupported):
		err = out.Truncate(fi.Size())
		if err == nil {
			err = DataExtents(in, fi.Size(), func(off, n int64) error {
				m, err := copyExtent(out.File, in, off, n)
				if method == MethodNone {
					method = m
				}
				return err
			})
		}
	}
	if err == nil {
		err = out.Commit()
	}
	if err != nil {
		return MethodNone, fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return method, nil
}

// copyExtent copies [off, off+n) of src to the same place in dst: with
// copy_file_range where the kernel can, else through a buffer.
func copyExtent(dst, src *os.File, off, n int64) (Method, error) {
	done, err := copyFileRange(dst, off, src, off, n)
	if err == nil && done == n {
		return MethodCopyFileRange, nil
	}
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return MethodCopyFileRange, err
	}
	rest := io.NewSectionReader(src, off+done, n-done)
	if _, err := io.Copy(io.NewOffsetWriter(dst, off+done), rest); err != nil {
		return MethodReadWrite, err
	}
	if done > 0 {
		return MethodCopyFileRange, nil
	}
	return MethodReadWrite, nil
}

// DataExtents calls fn for every data extent of f in [0, size), in order
// (SEEK_DATA/SEEK_HOLE); holes read as zeros. A file system without
// SEEK_DATA gives one extent: the whole file.
func DataExtents(f *os.File, size int64, fn func(off, n int64) error) error {
	for off := int64(0); off < size; {
		start, err := seekData(f, off)
		if errors.Is(err, errNoMoreData) {
			return nil
		}
		if err != nil {
			return fn(off, size-off)
		}
		end, err := seekHole(f, start)
		if err != nil || end > size {
			end = size
		}
		if err := fn(start, end-start); err != nil {
			return err
		}
		off = end
	}
	return nil
}
