// Package cpio writes and reads "newc" cpio archives (SVR4 without CRC), the
// format the Linux kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst).
//
// The writer needs no root: device nodes, owners and modes are written as
// fields, not created on the host. Output is deterministic: inode numbers are
// assigned in write order and every entry carries the writer's fixed mtime.
// Parent directories that were not written explicitly are added (mode 0755)
// before their first child, so the kernel never has to guess.
//
// Limits: no hard links (every entry has nlink 1, directories 2), names of at
// most 4095 bytes, files of at most 4 GiB - 1 (the format's 32-bit size field).
package cpio

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

const (
	magic      = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
	maxName    = 4095
	maxSize    = 1<<32 - 1
)

// File-type bits of the mode field (sys/stat.h); fs.FileMode uses its own.
const (
	typeDir     = 0o040000
	typeRegular = 0o100000
	typeSymlink = 0o120000
	typeChar    = 0o020000
	typeBlock   = 0o060000
)

// Writer writes a newc archive. Errors are sticky: after the first one every
// method returns it.
type Writer struct {
	w     *bufio.Writer
	off   int64
	ino   uint32
	mtime int64
	dirs  map[string]bool
	err   error
}

// NewWriter returns a writer to w whose entries all carry mtime (seconds since
// the epoch; 0 is a good reproducible choice).
func NewWriter(w io.Writer, mtime int64) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 1<<16), mtime: mtime, dirs: map[string]bool{".": true}}
}

// Dir adds a directory.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.entry(name, typeDir|uint32(perm.Perm()), 0, 0, 0, nil)
}

// File adds a regular file with the given contents.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.FileFrom(name, perm, int64(len(data)), bytes.NewReader(data))
}

// FileFrom adds a regular file of size bytes read from r; r must yield exactly size bytes.
func (w *Writer) FileFrom(name string, perm fs.FileMode, size int64, r io.Reader) error {
	return w.entry(name, typeRegular|uint32(perm.Perm()), size, 0, 0, r)
}

// Symlink adds a symbolic link to target.
func (w *Writer) Symlink(name, target string) error {
	return w.entry(name, typeSymlink|0o777, int64(len(target)), 0, 0, strings.NewReader(target))
}

// CharDev adds a character device node, e.g. /dev/console (5, 1).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return w.entry(name, typeChar|uint32(perm.Perm()), 0, major, minor, nil)
}

// BlockDev adds a block device node.
func (w *Writer) BlockDev(name string, perm fs.FileMode, major, minor uint32) error {
	return w.entry(name, typeBlock|uint32(perm.Perm()), 0, major, minor, nil)
}

// Close writes the trailer and flushes. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if err := w.header(trailer, 0, 0, 0, 0, 1); err != nil {
		return err
	}
	w.err = w.w.Flush()
	return w.err
}

// clean turns a name into the archive's relative form ("dev/console").
func clean(name string) (string, error) {
	n := strings.TrimPrefix(path.Clean("/"+name), "/")
	if n == "" || n == trailer || len(n) > maxName {
		return "", fmt.Errorf("cpio: invalid entry name %q", name)
	}
	return n, nil
}

func (w *Writer) entry(name string, mode uint32, size int64, major, minor uint32, r io.Reader) error {
	if w.err != nil {
		return w.err
	}
	n, err := clean(name)
	if err != nil {
		return err
	}
	if size < 0 || size > maxSize {
		return fmt.Errorf("cpio: %s: size %d does not fit the newc format (max %d)", n, size, int64(maxSize))
	}
	if err := w.parents(n); err != nil {
		return err
	}
	if mode&0o170000 == typeDir {
		if w.dirs[n] {
			return nil // already added as a parent
		}
		w.dirs[n] = true
	}
	nlink := uint32(1)
	if mode&0o170000 == typeDir {
		nlink = 2
	}
	if err := w.header(n, mode, size, major, minor, nlink); err != nil {
		return err
	}
	if r != nil && size > 0 {
		m, err := io.CopyN(w.w, r, size)
		w.off += m
		if err != nil {
			w.err = fmt.Errorf("cpio: %s: copy %d bytes: %w", n, size, err)
			return w.err
		}
	}
	return w.pad()
}

// parents adds the missing parent directories of n, outermost first.
func (w *Writer) parents(n string) error {
	dir := path.Dir(n)
	if w.dirs[dir] {
		return nil
	}
	if err := w.parents(dir); err != nil {
		return err
	}
	w.dirs[dir] = true
	if err := w.header(dir, typeDir|0o755, 0, 0, 0, 2); err != nil {
		return err
	}
	return w.pad()
}

func (w *Writer) header(name string, mode uint32, size int64, major, minor, nlink uint32) error {
	w.ino++
	ino := w.ino
	if name == trailer {
		ino = 0
	}
	var b strings.Builder
	b.Grow(headerSize + len(name) + 4)
	b.WriteString(magic)
	for _, v := range []uint32{
		ino,                   // c_ino
		mode,                  // c_mode
		0,                     // c_uid
		0,                     // c_gid
		nlink,                 // c_nlink
		uint32(w.mtime),       // c_mtime
		uint32(size),          // c_filesize
		0,                     // c_devmajor (of the archive's file system; unused)
		0,                     // c_devminor
		major,                 // c_rdevmajor
		minor,                 // c_rdevminor
		uint32(len(name) + 1), // c_namesize, with the NUL
		0,                     // c_check (newc: always 0)
	} {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	m, err := w.w.WriteString(b.String())
	w.off += int64(m)
	if err != nil {
		w.err = fmt.Errorf("cpio: write header of %s: %w", name, err)
		return w.err
	}
	return w.pad()
}

// pad aligns the stream to 4 bytes, as newc requires after names and data.
func (w *Writer) pad() error {
	if rem := w.off % 4; rem != 0 {
		m, err := w.w.Write(make([]byte, 4-rem))
		w.off += int64(m)
		if err != nil {
			w.err = fmt.Errorf("cpio: pad: %w", err)
			return w.err
		}
	}
	return nil
}

// Entry is one member of an archive as read back.
type Entry struct {
	Name         string
	Mode         uint32 // type and permission bits as in struct stat
	Size         int64
	Mtime        int64
	Major, Minor uint32 // rdev, for device nodes
	Data         []byte // contents of files, target of symlinks
}

// IsDir reports whether the entry is a directory.
func (e Entry) IsDir() bool { return e.Mode&0o170000 == typeDir }

// ErrFormat is wrapped by every error about malformed input to ReadAll.
var ErrFormat = errors.New("malformed newc archive")

// ReadAll reads every entry of a newc archive up to its trailer. It is meant
// for tests and tools: it holds all contents in memory.
func ReadAll(r io.Reader) ([]Entry, error) {
	br := bufio.NewReader(r)
	var off int64
	skip := func() error {
		if rem := off % 4; rem != 0 {
			n, err := io.CopyN(io.Discard, br, 4-rem)
			off += n
			return err
		}
		return nil
	}
	var out []Entry
	for {
		hdr := make([]byte, headerSize)
		if _, err := io.ReadFull(br, hdr); err != nil {
			return out, fmt.Errorf("cpio: header at offset %d: %w: %v", off, ErrFormat, err)
		}
		off += headerSize
		if string(hdr[:6]) != magic {
			return out, fmt.Errorf("cpio: bad magic %q at offset %d: %w", hdr[:6], off-headerSize, ErrFormat)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return out, fmt.Errorf("cpio: field %d at offset %d: %w", i, off-headerSize, ErrFormat)
			}
			f[i] = uint32(v)
		}
		nameSize := int(f[11])
		if nameSize < 1 || nameSize > maxName+1 {
			return out, fmt.Errorf("cpio: name size %d at offset %d: %w", nameSize, off-headerSize, ErrFormat)
		}
		name := make([]byte, nameSize)
		if _, err := io.ReadFull(br, name); err != nil {
			return out, fmt.Errorf("cpio: name at offset %d: %w: %v", off, ErrFormat, err)
		}
		off += int64(nameSize)
		if err := skip(); err != nil {
			return out, fmt.Errorf("cpio: %w: %v", ErrFormat, err)
		}
		n := strings.TrimSuffix(string(name), "\x00")
		if n == trailer {
			return out, nil
		}
		e := Entry{Name: n, Mode: f[1], Size: int64(f[6]), Mtime: int64(f[5]), Major: f[9], Minor: f[10]}
		if e.Size > 0 {
			if e.Size > 1<<30 {
				return out, fmt.Errorf("cpio: %s: size %d too large to read into memory: %w", n, e.Size, ErrFormat)
			}
			e.Data = make([]byte, e.Size)
			if _, err := io.ReadFull(br, e.Data); err != nil {
				return out, fmt.Errorf("cpio: %s: data: %w: %v", n, ErrFormat, err)
			}
			off += e.Size
			if err := skip(); err != nil {
				return out, fmt.Errorf("cpio: %w: %v", ErrFormat, err)
			}
		}
		out = append(out, e)
	}
}
