// Package erofs writes uncompressed EROFS file system images, the format of
// the read-only system partition.
//
// Format: the kernel's fs/erofs/erofs_fs.h and Documentation/filesystems/
// erofs.rst ("On-disk details"): a 128-byte superblock at byte 1024, 4096-byte
// blocks, 32-byte compact inodes (64-byte extended ones when an owner, size
// or link count does not fit 16/32 bits), metadata from block 0 (nid = byte
// offset / 32), directories as blocks of 12-byte dirents followed by their
// names, every block sorted by name and the blocks in name order (the kernel
// binary-searches them). Regular files, directories and symlinks are stored
// FLAT_INLINE (full blocks in the data area, the tail right after the inode)
// when the tail fits in the inode's metadata block, FLAT_PLAIN otherwise.
//
// Output is deterministic: entries are sorted, inodes numbered in that
// order, every inode carries the same time (Options.MTime), and nothing
// comes from the host.
//
// Limits: no compression, no extended attributes (so no ACLs or SELinux
// labels), no hard links, no device nodes, FIFOs or sockets, no chunked
// files, files below 4 GiB when their owner needs compact inodes, at most
// 2^32 blocks (16 TiB).
package erofs

import (
	"bytes"
	"io"
	"io/fs"
)

// BlockSize is the file system block size in bytes.
const BlockSize = 4096

// Blob is a sized source of bytes.
type Blob interface {
	// Size is the length in bytes.
	Size() int64
	// Open returns a reader of exactly Size bytes; the caller closes it.
	Open() (io.ReadCloser, error)
}

// Bytes is a Blob held in memory.
type Bytes []byte

// Size returns len(b).
func (b Bytes) Size() int64 { return int64(len(b)) }

// Open returns a reader of b.
func (b Bytes) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }

// Entry is one file, directory or symlink of the tree.
type Entry struct {
	// Path is slash-separated and relative to the root ("usr/bin/agent");
	// "" or "." is the root directory itself (to set its mode and owner).
	Path string
	// Mode holds the type (0, fs.ModeDir or fs.ModeSymlink) and the
	// permission bits, including fs.ModeSetuid, fs.ModeSetgid and
	// fs.ModeSticky.
	Mode fs.FileMode
	// UID and GID are the owner; default 0 (root).
	UID, GID uint32
	// Data is a regular file's contents; nil means empty.
	Data Blob
	// Target is a symlink's target.
	Target string
}

// Options control the image as a whole.
type Options struct {
	// MTime is every inode's modification time, in seconds since the
	// epoch (the superblock build time). Default 0.
	MTime int64
	// UUID is the file system UUID. Default: all zero.
	UUID [16]byte
	// Label is the volume name, at most 16 bytes. Default: empty.
	Label string
}

// Write writes the image of entries to w, sequentially. Parent directories
// that are not listed are created with mode 0755 and owner 0:0. Duplicate
// paths, a file below a non-directory, and invalid names are errors.
// Write returns the image size in bytes (a multiple of BlockSize).
func Write(w io.Writer, entries []Entry, o Options) (int64, error) {
	panic("not implemented yet")
}

// Size returns the image size Write would produce, in bytes, without
// reading any file contents.
func Size(entries []Entry, o Options) (int64, error) {
	panic("not implemented yet")
}
