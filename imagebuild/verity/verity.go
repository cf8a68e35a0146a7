// Package verity computes a dm-verity hash tree and superblock for a data
// image, in the layout `veritysetup format` writes when the hash tree is
// appended to the data device (--hash-offset, with a superblock).
//
// Format (kernel Documentation/admin-guide/device-mapper/verity.rst and
// cryptsetup's "DMVerity" on-disk format, struct verity_sb): hash type
// (format version) 1, SHA-256, 4096-byte data and hash blocks. Every data
// block is hashed as sha256(salt || block); hashes are packed 128 to a hash
// block (zero padded); levels are hashed the same way until one block
// remains, whose salted hash is the root hash. In the hash area the level
// nearest the root comes first. The hash area starts with a 512-byte
// superblock padded to one hash block, so the tree starts one hash block
// after the hash offset.
//
// Limits: SHA-256 and 4096-byte blocks only; format version 1 only; no
// forward error correction; data must not be empty.
package verity

import (
	"fmt"
	"io"
)

// BlockSize is the data and hash block size in bytes.
const BlockSize = 4096

// Params choose the variable parts of the hash area.
type Params struct {
	// Salt is mixed into every hash; at most 256 bytes. Default (nil): no
	// salt ("-" in the table). Choose it deterministically for
	// reproducible images.
	Salt []byte
	// UUID is written to the superblock (veritysetup shows it; the kernel
	// ignores it). Default (zero): derived from the salt and data size.
	UUID [16]byte
}

// Table is what a dm-verity target needs to open the device: the result
// of Build.
type Table struct {
	// DataBlocks is the number of 4096-byte data blocks covered (data size
	// rounded up to BlockSize, divided by it).
	DataBlocks uint64
	// HashOffset is the byte offset of the hash area (the superblock) on
	// the device: the data size rounded up to BlockSize.
	HashOffset int64
	// HashStartBlock is the first block of the hash tree, in hash blocks
	// from the start of the hash device: HashOffset/BlockSize + 1 (the
	// superblock's block).
	HashStartBlock uint64
	// RootHash is the salted SHA-256 of the top hash block.
	RootHash [32]byte
	// Salt is a copy of Params.Salt.
	Salt []byte
	// UUID is the superblock UUID actually written.
	UUID [16]byte
}

// Algorithm is the hash algorithm name used in tables and the superblock.
const Algorithm = "sha256"

// Version is the dm-verity hash type (format version).
const Version = 1

// Build reads size bytes of data and writes to hashOut the bytes that follow
// the data on the device: zeroes up to HashOffset, the superblock block,
// then the hash tree. size need not be a multiple of BlockSize; the last
// block is hashed as if zero padded (the padding written to hashOut makes
// that true on the device).
func Build(data io.ReaderAt, size int64, hashOut io.Writer, p Params) (Table, error) {
	panic("not implemented yet")
}

// TailSize returns the number of bytes Build writes to hashOut for size
// bytes of data: padding, superblock block and hash tree.
func TailSize(size int64) int64 {
	panic("not implemented yet")
}

// Sectors returns the length of the verity target in 512-byte sectors
// (the data blocks).
func (t Table) Sectors() uint64 { return t.DataBlocks * (BlockSize / 512) }

// RootHex returns the root hash in lowercase hex.
func (t Table) RootHex() string { return fmt.Sprintf("%x", t.RootHash) }

// SaltHex returns the salt in lowercase hex, or "-" when there is none.
func (t Table) SaltHex() string {
	if len(t.Salt) == 0 {
		return "-"
	}
	return fmt.Sprintf("%x", t.Salt)
}

// Line returns the device-mapper table line for a verity target whose data
// and hash live on the same device dev ("/dev/vda2" or "major:minor"):
//
//	0 <sectors> verity 1 <dev> <dev> 4096 4096 <data blocks> <hash start block> sha256 <root hex> <salt hex>
//
// In DM_TABLE_LOAD terms: start 0, length Sectors(), target type "verity",
// and Params(dev) as the parameter string.
func (t Table) Line(dev string) string {
	return fmt.Sprintf("0 %d verity %s", t.Sectors(), t.Params(dev))
}

// Params returns the verity target's parameter string (the table line
// without "0 <sectors> verity ").
func (t Table) Params(dev string) string {
	return fmt.Sprintf("%d %s %s %d %d %d %d %s %s %s", Version, dev, dev, BlockSize, BlockSize,
		t.DataBlocks, t.HashStartBlock, Algorithm, t.RootHex(), t.SaltHex())
}
