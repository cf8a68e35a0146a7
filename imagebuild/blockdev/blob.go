package blockdev

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Blob is content of a known size, readable from its start. The image
// builders (erofs, uki, fat32, disk) all take their inputs as Blobs.
type Blob interface {
	// Open returns a reader positioned at the first byte. An *os.File lets
	// CopyBlob use the fast paths.
	Open() (io.ReadCloser, error)
	// Size is the content's length in bytes.
	Size() int64
}

// Bytes is a Blob held in memory.
type Bytes []byte

// Size returns len(b).
func (b Bytes) Size() int64 { return int64(len(b)) }

// Open returns a reader of b.
func (b Bytes) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }

// FileBlob is a Blob over a host file. It opens as an *os.File, so copies
// of it can take CopyBlob's fast paths; its Size is the file's when
// NewFileBlob looked.
type FileBlob struct {
	Path string
	size int64
}

// NewFileBlob returns the regular file at path as a Blob.
func NewFileBlob(path string) (FileBlob, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileBlob{}, err
	}
	if !fi.Mode().IsRegular() {
		return FileBlob{}, fmt.Errorf("%s: not a regular file", path)
	}
	return FileBlob{Path: path, size: fi.Size()}, nil
}

// Open opens the file.
func (f FileBlob) Open() (io.ReadCloser, error) { return os.Open(f.Path) }

// Size returns the file's size.
func (f FileBlob) Size() int64 { return f.size }
