package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Method is the path a Copy took.
type Method int

const (
	// MethodNone: nothing was copied (n was 0).
	MethodNone Method = iota
	// MethodReflink: the bytes were shared with the source (FICLONERANGE);
	// no data moved.
	MethodReflink
	// MethodCopyFileRange: the kernel copied the bytes (copy_file_range);
	// on XFS and btrfs this shares extents too, on ext4 it copies.
	MethodCopyFileRange
	// MethodReadWrite: the bytes went through a user-space buffer.
	MethodReadWrite
)

// String names the method as the tools' man pages do.
func (m Method) String() string {
	switch m {
	case MethodNone:
		return "none"
	case MethodReflink:
		return "reflink (FICLONERANGE)"
	case MethodCopyFileRange:
		return "copy_file_range"
	case MethodReadWrite:
		return "read/write"
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// copyBufferSize is the read/write path's buffer, in bytes.
const copyBufferSize = 1 << 20

// Copy copies exactly n bytes from src into dst at offset off and reports the
// path that carried them. A source shorter than n is an error wrapping
// io.ErrUnexpectedEOF; bytes after the first n are left unread.
//
// When dst is a File or a Section of one and src is an *os.File positioned
// at a seekable offset, Copy tries, in order:
//  1. FICLONERANGE for the largest prefix that is a whole number of blocks,
//     when both offsets are block-aligned (dst.BlockSize());
//  2. copy_file_range for what is left, in a loop;
//  3. read/write for what is left after that.
//
// Each step falls back to the next on EXDEV, EOPNOTSUPP, ENOSYS, EINVAL,
// EBADF or ENOTTY. The Method returned is the one that moved the first byte;
// a sub-block tail after a reflinked prefix takes one of the later paths.
// On success src's offset is advanced by n, as a read would. Any other
// source is read into a 1 MiB buffer.
func Copy(dst BlockDev, off int64, src io.Reader, n int64) (Method, error) {
	if err := checkRange(off, n, dst.Size()); err != nil {
		return MethodNone, fmt.Errorf("copy %d bytes: %w", n, err)
	}
	if n == 0 {
		return MethodNone, nil
	}
	if fr, ok := dst.(fileRange); ok {
		if df, base := fr.fileRange(); df != nil {
			if sf, ok := src.(*os.File); ok {
				if pos, err := sf.Seek(0, io.SeekCurrent); err == nil {
					m, err := copyFile(df, base+off, sf, pos, n)
					if err != nil {
						return m, err
					}
					if _, err := sf.Seek(pos+n, io.SeekStart); err != nil {
						return m, fmt.Errorf("copy: advance %s: %w", sf.Name(), err)
					}
					return m, nil
				}
			}
		}
	}
	return MethodReadWrite, readWrite(dst, off, src, n)
}

// copyFile copies n bytes from src at sOff to dst at dOff (absolute offsets).
func copyFile(dst *File, dOff int64, src *os.File, sOff, n int64) (Method, error) {
	method := MethodNone
	var done int64
	if bs := dst.blockSize; dOff%bs == 0 && sOff%bs == 0 && n >= bs {
		c := n / bs * bs
		err := cloneRange(dst.f, dOff, src, sOff, c)
		switch {
		case err == nil:
			done, method = c, MethodReflink
		case !errors.Is(err, errors.ErrUnsupported):
			return method, fmt.Errorf("copy %d bytes from %s at %d to %s at %d: %w", c, src.Name(), sOff, dst.f.Name(), dOff, err)
		}
	}
	if done < n {
		c, err := copyFileRange(dst.f, dOff+done, src, sOff+done, n-done)
		if c > 0 && method == MethodNone {
			method = MethodCopyFileRange
		}
		done += c
		if err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return method, fmt.Errorf("copy %d bytes from %s at %d to %s at %d: %w", n-done, src.Name(), sOff+done, dst.f.Name(), dOff+done, err)
		}
	}
	if done < n {
		if method == MethodNone {
			method = MethodReadWrite
		}
		if err := readWrite(dst, dOff+done, io.NewSectionReader(src, sOff+done, n-done), n-done); err != nil {
			return method, err
		}
	}
	return method, nil
}

// readWrite copies n bytes from src to dst at off through a buffer.
func readWrite(dst io.WriterAt, off int64, src io.Reader, n int64) error {
	buf := make([]byte, min(n, copyBufferSize))
	c, err := io.CopyBuffer(io.NewOffsetWriter(dst, off), io.LimitReader(src, n), buf)
	if err != nil {
		return fmt.Errorf("copy %d bytes at offset %d: %w", n, off, err)
	}
	if c < n {
		return fmt.Errorf("copy %d bytes at offset %d: source ended after %d bytes: %w", n, off, c, io.ErrUnexpectedEOF)
	}
	return nil
}

// CopyBlob copies all of b into dst at off with Copy, then makes sure b ends
// there: content longer than Size is an error, and a reader that checks
// what it read when it reaches its end (a verifying reader) gets to do so.
func CopyBlob(dst BlockDev, off int64, b Blob) (m Method, err error) {
	rc, err := b.Open()
	if err != nil {
		return MethodNone, err
	}
	defer func() {
		if cerr := rc.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if m, err = Copy(dst, off, rc, b.Size()); err != nil {
		return m, err
	}
	var one [1]byte
	for {
		n, err := rc.Read(one[:])
		switch {
		case n > 0:
			return m, fmt.Errorf("content is longer than its declared %d bytes", b.Size())
		case errors.Is(err, io.EOF):
			return m, nil
		case err != nil:
			return m, err
		}
	}
}
