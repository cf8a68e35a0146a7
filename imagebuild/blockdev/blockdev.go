// Package blockdev is the block-device abstraction the image writers in
// imagebuild use: a fixed-size random-access byte store (io.ReaderAt +
// io.WriterAt + Size) that can be zeroed cheaply and filled from another file
// by reflink, copy_file_range or plain reads and writes.
//
// Implementations: File (a regular file, kept sparse), Memory (a byte slice,
// for tests and small images) and Section (a byte range of another device, so
// a file-system writer can be handed a partition). Copy and CopyBlob fill a
// device from a file or any reader and report the Method that carried the
// bytes; ParseSize and FormatSize read and print byte counts ("3GiB").
//
// Units and rules, common to every implementation:
//   - Offsets and lengths are bytes; ranges are half-open [off, off+n).
//   - Devices never grow: reads past Size return io.EOF, writes past Size fail
//     with ErrOutOfRange and write nothing.
//   - The on-disk formats built on top use 512-byte sectors (SectorSize);
//     BlockSize is the device's allocation and reflink granularity (4096 on
//     ext4 and XFS with default options), a power of two ≥ SectorSize.
//
// Limits: the fast paths (hole punching, FICLONERANGE, copy_file_range) are
// Linux-only; elsewhere zeroing writes zeroes and copies read and write.
package blockdev

import (
	"errors"
	"fmt"
	"io"
)

// SectorSize is the logical sector size, in bytes, of the formats written on
// these devices (GPT, FAT32). Sections start and end on sector boundaries.
const SectorSize = 512

// ErrOutOfRange is returned (wrapped) for an access outside [0, Size).
var ErrOutOfRange = errors.New("outside the device")

// BlockDev is a fixed-size random-access device. See the package doc for units.
type BlockDev interface {
	io.ReaderAt
	io.WriterAt
	// Size is the device size in bytes.
	Size() int64
	// BlockSize is the allocation granularity in bytes: a power of two, at
	// least SectorSize. Copies aligned to it can share storage (reflink).
	BlockSize() int64
	// Zero makes [off, off+n) read as zeroes, giving the storage back where
	// the device can (hole punching) and writing zeroes where it cannot.
	Zero(off, n int64) error
}

// fileRange is implemented by devices that are a byte range of a regular
// file. Copy uses it to reach the file for reflink and copy_file_range.
type fileRange interface {
	// fileRange returns the file and the offset, in bytes, of the device's
	// first byte within it.
	fileRange() (*File, int64)
}

// checkRange validates [off, off+n) against a device of the given size.
func checkRange(off, n, size int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("range [%d, %d) of a %d-byte device: %w", off, off+n, size, ErrOutOfRange)
	}
	return nil
}

// readAt implements io.ReaderAt's contract on a device of the given size:
// reads are clipped to the device and a short read returns io.EOF.
func readAt(p []byte, off, size int64, read func(p []byte, off int64) (int, error)) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, ErrOutOfRange)
	}
	if off >= size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > size-off {
		p = p[:size-off]
		short = true
	}
	n, err := read(p, off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// zeroes is a shared read-only buffer for writing zeroes.
var zeroes = make([]byte, 1<<20)

// writeZeroes writes n zero bytes at off through w, in 1 MiB writes.
func writeZeroes(w io.WriterAt, off, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeroes)))
		if _, err := w.WriteAt(zeroes[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// Section is the byte range [Offset, Offset+Size) of another device, itself a
// device. It keeps its parent's fast paths.
type Section struct {
	dev       BlockDev
	off, size int64
}

// NewSection returns the range [off, off+size) of dev. Both must be multiples
// of SectorSize and the range must lie inside dev.
func NewSection(dev BlockDev, off, size int64) (*Section, error) {
	if off%SectorSize != 0 || size%SectorSize != 0 {
		return nil, fmt.Errorf("section [%d, %d): not on %d-byte sector boundaries", off, off+size, SectorSize)
	}
	if err := checkRange(off, size, dev.Size()); err != nil {
		return nil, fmt.Errorf("section: %w", err)
	}
	return &Section{dev: dev, off: off, size: size}, nil
}

// Offset is the section's start within its parent device, in bytes.
func (s *Section) Offset() int64 { return s.off }

// Size is the section's length in bytes.
func (s *Section) Size() int64 { return s.size }

// BlockSize is the parent's block size.
func (s *Section) BlockSize() int64 { return s.dev.BlockSize() }

// ReadAt reads within the section.
func (s *Section) ReadAt(p []byte, off int64) (int, error) {
	return readAt(p, off, s.size, func(p []byte, off int64) (int, error) { return s.dev.ReadAt(p, s.off+off) })
}

// WriteAt writes within the section.
func (s *Section) WriteAt(p []byte, off int64) (int, error) {
	if err := checkRange(off, int64(len(p)), s.size); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	return s.dev.WriteAt(p, s.off+off)
}

// Zero zeroes within the section.
func (s *Section) Zero(off, n int64) error {
	if err := checkRange(off, n, s.size); err != nil {
		return fmt.Errorf("zero: %w", err)
	}
	return s.dev.Zero(s.off+off, n)
}

func (s *Section) fileRange() (*File, int64) {
	fr, ok := s.dev.(fileRange)
	if !ok {
		return nil, 0
	}
	f, off := fr.fileRange()
	return f, off + s.off
}

// Memory is a device held in memory, with a block size of SectorSize.
type Memory struct{ b []byte }

// NewMemory returns a zeroed in-memory device of size bytes.
func NewMemory(size int64) *Memory { return &Memory{b: make([]byte, size)} }

// Bytes returns the device's contents (not a copy).
func (m *Memory) Bytes() []byte { return m.b }

// Size is the device size in bytes.
func (m *Memory) Size() int64 { return int64(len(m.b)) }

// BlockSize is SectorSize.
func (m *Memory) BlockSize() int64 { return SectorSize }

// ReadAt reads from memory.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	return readAt(p, off, m.Size(), func(p []byte, off int64) (int, error) { return copy(p, m.b[off:]), nil })
}

// WriteAt writes into memory.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if err := checkRange(off, int64(len(p)), m.Size()); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	return copy(m.b[off:], p), nil
}

// Zero clears [off, off+n).
func (m *Memory) Zero(off, n int64) error {
	if err := checkRange(off, n, m.Size()); err != nil {
		return fmt.Errorf("zero: %w", err)
	}
	clear(m.b[off : off+n])
	return nil
}
