package blockdev

import (
	"errors"
	"fmt"
	"os"
)

// File is a device backed by a regular file. Everything never written stays
// a hole, so a mostly empty multi-GiB disk occupies little space.
type File struct {
	f         *os.File
	size      int64
	blockSize int64
}

// Create creates a sparse file of size bytes at path, which must not exist
// yet (mode 0644), and returns it as a device. Close it when done.
func Create(path string, size int64) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create block device: %w", err)
	}
	d, err := NewFile(f, size)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return d, nil
}

// Open opens the existing file at path read-write as a device of its current size.
func Open(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open block device: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open block device: %w", err)
	}
	d, err := NewFile(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// NewFile uses f, a regular file opened read-write, as a device of size bytes,
// truncating or sparsely extending it to that size. The device owns f from
// then on: Close closes it.
func NewFile(f *os.File, size int64) (*File, error) {
	if size < 0 || size%SectorSize != 0 {
		return nil, fmt.Errorf("block device %s: size %d is not a multiple of %d bytes", f.Name(), size, SectorSize)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("block device %s: %w", f.Name(), err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("block device %s: not a regular file (%s)", f.Name(), fi.Mode().Type())
	}
	if fi.Size() != size {
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("block device %s: set size %d: %w", f.Name(), size, err)
		}
	}
	return &File{f: f, size: size, blockSize: blockSizeOf(f)}, nil
}

// Name is the file's name as given to Create, Open or os.OpenFile.
func (d *File) Name() string { return d.f.Name() }

// Size is the device size in bytes.
func (d *File) Size() int64 { return d.size }

// BlockSize is the file system's block size (st_blksize), at least SectorSize.
func (d *File) BlockSize() int64 { return d.blockSize }

// ReadAt reads from the file.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	return readAt(p, off, d.size, d.f.ReadAt)
}

// WriteAt writes into the file.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if err := checkRange(off, int64(len(p)), d.size); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	return d.f.WriteAt(p, off)
}

// Zero punches a hole over [off, off+n) (fallocate PUNCH_HOLE|KEEP_SIZE),
// and writes zeroes only where the file system cannot punch holes.
func (d *File) Zero(off, n int64) error {
	if err := checkRange(off, n, d.size); err != nil {
		return fmt.Errorf("zero: %w", err)
	}
	if n == 0 {
		return nil
	}
	err := punchHole(d.f, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("zero [%d, %d) of %s: %w", off, off+n, d.f.Name(), err)
	}
	if err := writeZeroes(d.f, off, n); err != nil {
		return fmt.Errorf("zero [%d, %d) of %s: %w", off, off+n, d.f.Name(), err)
	}
	return nil
}

// Sync flushes the file to stable storage.
func (d *File) Sync() error { return d.f.Sync() }

// Close closes the file.
func (d *File) Close() error { return d.f.Close() }

func (d *File) fileRange() (*File, int64) { return d, 0 }
