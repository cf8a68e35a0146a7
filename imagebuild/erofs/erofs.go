// Package erofs writes uncompressed EROFS file system images, the format of
// the read-only system partition.
//
// Format: the kernel's fs/erofs/erofs_fs.h and Documentation/filesystems/
// erofs.rst ("On-disk details"): a 128-byte superblock at byte 1024 (struct
// erofs_super_block), 4096-byte blocks, 32-byte compact inodes (struct
// erofs_inode_compact; 64-byte struct erofs_inode_extended when an owner,
// size or link count does not fit 16/32 bits), directories as blocks of
// 12-byte dirents (struct erofs_dirent) followed by their names, every block
// sorted by name and the blocks in name order (the kernel binary-searches
// them). Regular files, directories and symlinks are stored FLAT_INLINE
// (full blocks in the data area, the tail right after the inode, in the same
// block) when that wastes less space than FLAT_PLAIN (every byte in the data
// area, the last block zero padded).
//
// Layout: block 0 holds only the superblock; the data blocks of all inodes
// follow in tree order; the metadata area (inodes with their inline tails,
// meta_blkaddr) comes last, so the image is written in one sequential pass
// that reads every file once. The root inode is nid 0; nids are byte offsets
// into the metadata area divided by 32.
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
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
)

// BlockSize is the file system block size in bytes.
const BlockSize = 4096

// Blob is a file's content: exactly Size bytes from Open.
type Blob = blockdev.Blob

// Bytes is a Blob held in memory.
type Bytes = blockdev.Bytes

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

// On-disk constants (erofs_fs.h).
const (
	superOffset   = 1024
	magic         = 0xE0F5E1E2
	blkSzBits     = 12
	compactSize   = 32
	extendedSize  = 64
	direntSize    = 12
	slotSize      = 32 // nid unit
	nullAddr      = 0xFFFFFFFF
	maxNameLen    = 255
	maxTarget     = 4095
	compatMTime   = 0x2 // EROFS_FEATURE_COMPAT_MTIME: build_time is set
	layoutPlain   = 0   // EROFS_INODE_FLAT_PLAIN
	layoutInline  = 2   // EROFS_INODE_FLAT_INLINE
	ftRegular     = 1   // EROFS_FT_REG_FILE
	ftDir         = 2   // EROFS_FT_DIR
	ftSymlink     = 7   // EROFS_FT_SYMLINK
	sIFREG        = 0o100000
	sIFDIR        = 0o040000
	sIFLNK        = 0o120000
	maxCompactU16 = 1<<16 - 1
)

// node is one inode of the tree, with its place in the image.
type node struct {
	path     string
	name     string
	mode     fs.FileMode
	uid, gid uint32
	data     Blob
	target   string
	explicit bool
	children []*node
	parent   *node

	size     uint64 // i_size
	extended bool   // 64-byte inode
	inline   bool   // FLAT_INLINE with a tail after the inode
	nid      uint64
	blkaddr  uint32 // first data block, or nullAddr
	nblocks  uint64 // blocks in the data area
	nlink    uint32
	ino      uint32
	tail     []byte // inline tail, filled while writing
}

func (n *node) isDir() bool     { return n.mode.IsDir() }
func (n *node) isSymlink() bool { return n.mode&fs.ModeSymlink != 0 }

// image is a laid-out file system.
type image struct {
	order     []*node // tree order: depth first, children by name
	metaBlk   uint64  // meta_blkaddr
	metaSize  uint64  // bytes of metadata
	blocks    uint64  // total blocks
	opts      Options
	zeroBlock []byte
}

// Write writes the image of entries to w, sequentially, reading each Data
// blob once. Parent directories that are not listed are created with mode
// 0755 and owner 0:0. Duplicate paths, a path below a non-directory, and
// invalid names are errors. Write returns the image size in bytes (a
// multiple of BlockSize). On error w may hold part of an image.
func Write(w io.Writer, entries []Entry, o Options) (int64, error) {
	im, err := plan(entries, o)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := im.write(bw); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("erofs: write image: %w", err)
	}
	return int64(im.blocks) * BlockSize, nil
}

// Size returns the image size Write would produce, in bytes, without
// reading any file contents.
func Size(entries []Entry, o Options) (int64, error) {
	im, err := plan(entries, o)
	if err != nil {
		return 0, err
	}
	return int64(im.blocks) * BlockSize, nil
}

// plan builds the tree and assigns nids and blocks.
func plan(entries []Entry, o Options) (*image, error) {
	if len(o.Label) > 16 {
		return nil, fmt.Errorf("erofs: label %q is %d bytes, at most 16 allowed", o.Label, len(o.Label))
	}
	root, err := buildTree(entries)
	if err != nil {
		return nil, err
	}
	im := &image{opts: o, zeroBlock: make([]byte, BlockSize)}
	var walk func(n *node)
	walk = func(n *node) {
		n.ino = uint32(len(im.order))
		im.order = append(im.order, n)
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(root)

	// Sizes, link counts, inode formats.
	for _, n := range im.order {
		switch {
		case n.isDir():
			n.size = uint64(len(encodeDir(n)))
			n.nlink = 2
			for _, c := range n.children {
				if c.isDir() {
					n.nlink++
				}
			}
		case n.isSymlink():
			n.size, n.nlink = uint64(len(n.target)), 1
		default:
			n.nlink = 1
			if n.data != nil {
				if n.data.Size() < 0 {
					return nil, fmt.Errorf("erofs: %s: negative size %d", n.path, n.data.Size())
				}
				n.size = uint64(n.data.Size())
			}
		}
		n.extended = n.uid > maxCompactU16 || n.gid > maxCompactU16 || n.size > 1<<32-1 || n.nlink > maxCompactU16
	}

	// Metadata area: inodes in tree order, 32-byte aligned, each with its
	// inline tail in the same block.
	var pos uint64
	for _, n := range im.order {
		isize := uint64(compactSize)
		if n.extended {
			isize = extendedSize
		}
		tail := n.size % BlockSize
		room := BlockSize - pos%BlockSize
		n.inline = tail > 0 && isize+tail <= BlockSize
		if n.inline && isize+tail > room {
			// Either skip to the next block or give the tail a block of
			// its own in the data area, whichever wastes less.
			if room <= BlockSize-tail {
				pos += room
			} else {
				n.inline = false
			}
		}
		if isize > BlockSize-pos%BlockSize {
			pos = alignUp(pos, BlockSize)
		}
		n.nid = pos / slotSize
		pos += isize
		if n.inline {
			pos += tail
		}
		pos = alignUp(pos, slotSize)
	}
	// fsck.erofs (1.5 to today) reads the 12-byte xattr header after every
	// inode, xattrs or not: an inode in the image's last bytes fails its
	// check (read past the end). One more block keeps images it checks.
	if pos%BlockSize == 0 {
		pos += slotSize
	}
	im.metaSize = pos

	// Data area: from block 1, in tree order.
	blk := uint64(1)
	for _, n := range im.order {
		n.nblocks = n.size / BlockSize
		if !n.inline {
			n.nblocks = alignUp(n.size, BlockSize) / BlockSize
		}
		switch {
		case n.nblocks > 0:
			n.blkaddr = uint32(blk)
		case n.inline:
			n.blkaddr = nullAddr
		}
		blk += n.nblocks
		if blk >= nullAddr {
			return nil, fmt.Errorf("erofs: image too large: more than %d blocks by %s", uint32(nullAddr), n.path)
		}
	}
	im.metaBlk = blk
	im.blocks = blk + alignUp(im.metaSize, BlockSize)/BlockSize
	if im.blocks >= nullAddr {
		return nil, fmt.Errorf("erofs: image too large: %d blocks", im.blocks)
	}
	return im, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// buildTree validates entries and links them into a tree.
func buildTree(entries []Entry) (*node, error) {
	root := &node{path: ".", mode: fs.ModeDir | 0o755}
	byPath := map[string]*node{".": root}
	var get func(p string) (*node, error)
	get = func(p string) (*node, error) { // the directory p, created if missing
		if n, ok := byPath[p]; ok {
			if !n.isDir() {
				return nil, fmt.Errorf("erofs: %s is not a directory but has entries below it", p)
			}
			return n, nil
		}
		parent, err := get(path.Dir(p))
		if err != nil {
			return nil, err
		}
		n := &node{path: p, name: path.Base(p), mode: fs.ModeDir | 0o755, parent: parent}
		parent.children = append(parent.children, n)
		byPath[p] = n
		return n, nil
	}
	for _, e := range entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return nil, err
		}
		switch t := e.Mode.Type(); {
		case t == fs.ModeDir:
			if e.Data != nil || e.Target != "" {
				return nil, fmt.Errorf("erofs: %s: a directory has no data or target", p)
			}
		case t == fs.ModeSymlink:
			if e.Target == "" || len(e.Target) > maxTarget || strings.IndexByte(e.Target, 0) >= 0 {
				return nil, fmt.Errorf("erofs: %s: symlink target of %d bytes (need 1 to %d, no NUL)", p, len(e.Target), maxTarget)
			}
		case t == 0:
			if e.Target != "" {
				return nil, fmt.Errorf("erofs: %s: a regular file has no target", p)
			}
		default:
			return nil, fmt.Errorf("erofs: %s: unsupported file type %v", p, t)
		}
		if n, ok := byPath[p]; ok {
			if n.explicit || !e.Mode.IsDir() {
				return nil, fmt.Errorf("erofs: %s: duplicate entry", p)
			}
			n.mode, n.uid, n.gid, n.explicit = e.Mode, e.UID, e.GID, true
			continue
		}
		parent, err := get(path.Dir(p))
		if err != nil {
			return nil, err
		}
		n := &node{path: p, name: path.Base(p), mode: e.Mode, uid: e.UID, gid: e.GID,
			data: e.Data, target: e.Target, explicit: true, parent: parent}
		parent.children = append(parent.children, n)
		byPath[p] = n
	}
	for _, n := range byPath {
		slices.SortFunc(n.children, func(a, b *node) int { return strings.Compare(a.name, b.name) })
	}
	root.parent = root
	return root, nil
}

// cleanPath turns an entry path into a clean relative one ("." for the root).
func cleanPath(p string) (string, error) {
	q := strings.TrimPrefix(p, "/")
	if q == "" {
		return ".", nil
	}
	if path.Clean(q) != q || strings.HasPrefix(q, "../") || q == ".." {
		return "", fmt.Errorf("erofs: path %q is not clean (want a/b/c, no . or .. or //)", p)
	}
	for c := range strings.SplitSeq(q, "/") {
		if len(c) > maxNameLen || strings.IndexByte(c, 0) >= 0 {
			return "", fmt.Errorf("erofs: path %q: name of %d bytes (at most %d, no NUL)", p, len(c), maxNameLen)
		}
	}
	return q, nil
}

// dirent is one directory entry before encoding.
type dirent struct {
	name string
	n    *node
}

// encodeDir returns a directory's contents: blocks of dirents and names,
// the last one cut at its end (erofs.rst, "Directories"). Before nids are
// assigned it still has the right length.
func encodeDir(d *node) []byte {
	ents := []dirent{{".", d}, {"..", d.parent}}
	for _, c := range d.children {
		ents = append(ents, dirent{c.name, c})
	}
	slices.SortFunc(ents, func(a, b dirent) int { return cmp.Compare(a.name, b.name) })
	var out []byte
	for len(ents) > 0 {
		// As many entries as fit in one block.
		k, used := 0, 0
		for k < len(ents) && used+direntSize+len(ents[k].name) <= BlockSize {
			used += direntSize + len(ents[k].name)
			k++
		}
		blk := make([]byte, used)
		nameOff := k * direntSize
		for i, e := range ents[:k] {
			de := blk[i*direntSize:]
			binary.LittleEndian.PutUint64(de[0:], e.n.nid)
			binary.LittleEndian.PutUint16(de[8:], uint16(nameOff))
			de[10] = fileType(e.n)
			nameOff += copy(blk[nameOff:], e.name)
		}
		if len(out) > 0 {
			out = append(out, make([]byte, alignUp(uint64(len(out)), BlockSize)-uint64(len(out)))...)
		}
		out = append(out, blk...)
		ents = ents[k:]
	}
	return out
}

func fileType(n *node) byte {
	switch {
	case n.isDir():
		return ftDir
	case n.isSymlink():
		return ftSymlink
	}
	return ftRegular
}

// unixMode converts an fs.FileMode into st_mode bits.
func unixMode(n *node) uint32 {
	m := uint32(n.mode.Perm())
	switch {
	case n.isDir():
		m |= sIFDIR
	case n.isSymlink():
		m |= sIFLNK
	default:
		m |= sIFREG
	}
	if n.mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if n.mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if n.mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// write emits the superblock block, the data area and the metadata area.
func (im *image) write(w io.Writer) error {
	if _, err := w.Write(im.superblock()); err != nil {
		return fmt.Errorf("erofs: write superblock: %w", err)
	}
	for _, n := range im.order {
		if err := im.writeData(w, n); err != nil {
			return err
		}
	}
	meta := make([]byte, alignUp(im.metaSize, BlockSize))
	for _, n := range im.order {
		at := meta[n.nid*slotSize:]
		im.putInode(at, n)
		if n.inline {
			copy(at[inodeSize(n):], n.tail)
		}
	}
	if _, err := w.Write(meta); err != nil {
		return fmt.Errorf("erofs: write metadata: %w", err)
	}
	return nil
}

func inodeSize(n *node) int {
	if n.extended {
		return extendedSize
	}
	return compactSize
}

// writeData writes n's blocks in the data area and keeps its inline tail.
func (im *image) writeData(w io.Writer, n *node) error {
	var r io.Reader
	switch {
	case n.isDir():
		r = bytes.NewReader(encodeDir(n))
	case n.isSymlink():
		r = strings.NewReader(n.target)
	case n.data != nil:
		rc, err := n.data.Open()
		if err != nil {
			return fmt.Errorf("erofs: open %s: %w", n.path, err)
		}
		defer rc.Close()
		r = rc
	default:
		return nil
	}
	inData := n.size
	if n.inline {
		inData = n.nblocks * BlockSize
	}
	got, err := io.CopyN(w, r, int64(inData))
	if err == nil && n.inline {
		n.tail = make([]byte, n.size-inData)
		var k int
		k, err = io.ReadFull(r, n.tail)
		got += int64(k)
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("erofs: read %s: got %d bytes, Size says %d", n.path, got, n.size)
		}
		return fmt.Errorf("erofs: copy %s: %w", n.path, err)
	}
	if n.data != nil {
		if k, _ := r.Read(make([]byte, 1)); k > 0 {
			return fmt.Errorf("erofs: read %s: more than the %d bytes Size says", n.path, n.size)
		}
	}
	if pad := n.nblocks*BlockSize - inData; !n.inline && pad > 0 {
		if _, err := w.Write(im.zeroBlock[:pad]); err != nil {
			return fmt.Errorf("erofs: write padding of %s: %w", n.path, err)
		}
	}
	return nil
}

// superblock returns block 0 with struct erofs_super_block at byte 1024.
func (im *image) superblock() []byte {
	b := make([]byte, BlockSize)
	s := b[superOffset:]
	le := binary.LittleEndian
	le.PutUint32(s[0:], magic)                    // magic
	le.PutUint32(s[4:], 0)                        // checksum (no SB_CHKSUM)
	le.PutUint32(s[8:], compatMTime)              // feature_compat
	s[12] = blkSzBits                             // blkszbits
	s[13] = 0                                     // sb_extslots
	le.PutUint16(s[14:], uint16(im.order[0].nid)) // root_nid
	le.PutUint64(s[16:], uint64(len(im.order)))   // inos
	le.PutUint64(s[24:], uint64(im.opts.MTime))   // build_time
	le.PutUint32(s[32:], 0)                       // build_time_nsec
	le.PutUint32(s[36:], uint32(im.blocks))       // blocks
	le.PutUint32(s[40:], uint32(im.metaBlk))      // meta_blkaddr
	le.PutUint32(s[44:], 0)                       // xattr_blkaddr
	copy(s[48:64], im.opts.UUID[:])               // uuid
	copy(s[64:80], im.opts.Label)                 // volume_name
	le.PutUint32(s[80:], 0)                       // feature_incompat
	return b                                      // the rest is reserved, zero
}

// putInode encodes n's inode at b.
func (im *image) putInode(b []byte, n *node) {
	le := binary.LittleEndian
	layout := uint16(layoutPlain)
	if n.inline {
		layout = layoutInline
	}
	blkaddr := n.blkaddr
	if n.nblocks == 0 && !n.inline {
		blkaddr = 0
	}
	if !n.extended {
		le.PutUint16(b[0:], layout<<1)           // i_format: compact, layout
		le.PutUint16(b[2:], 0)                   // i_xattr_icount
		le.PutUint16(b[4:], uint16(unixMode(n))) // i_mode
		le.PutUint16(b[6:], uint16(n.nlink))     // i_nlink
		le.PutUint32(b[8:], uint32(n.size))      // i_size
		le.PutUint32(b[16:], blkaddr)            // i_u.raw_blkaddr
		le.PutUint32(b[20:], n.ino)              // i_ino
		le.PutUint16(b[24:], uint16(n.uid))      // i_uid
		le.PutUint16(b[26:], uint16(n.gid))      // i_gid
		return                                   // mtime: the superblock's build_time
	}
	le.PutUint16(b[0:], layout<<1|1)            // i_format: extended, layout
	le.PutUint16(b[4:], uint16(unixMode(n)))    // i_mode
	le.PutUint64(b[8:], n.size)                 // i_size
	le.PutUint32(b[16:], blkaddr)               // i_u.raw_blkaddr
	le.PutUint32(b[20:], n.ino)                 // i_ino
	le.PutUint32(b[24:], n.uid)                 // i_uid
	le.PutUint32(b[28:], n.gid)                 // i_gid
	le.PutUint64(b[32:], uint64(im.opts.MTime)) // i_mtime
	le.PutUint32(b[40:], 0)                     // i_mtime_nsec
	le.PutUint32(b[44:], n.nlink)               // i_nlink
}
