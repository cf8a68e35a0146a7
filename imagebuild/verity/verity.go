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
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
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

// Sizes of the format.
const (
	digestSize    = sha256.Size
	hashesPerBlk  = BlockSize / digestSize // 128
	superSize     = 512                    // struct verity_sb
	maxSalt       = 256
	superVersion  = 1 // superblock format version
	readChunk     = 256 * BlockSize
	uuidNamespace = "qcluster dm-verity superblock uuid v1"
)

// levelBlocks returns the number of hash blocks of each tree level for n
// data blocks, lowest level (hashes of data blocks) first. Like the kernel
// (dm-verity-target.c, verity_ctr), there is no level at all for one data
// block: its salted hash is the root hash.
func levelBlocks(n uint64) []uint64 {
	var lv []uint64
	for n > 1 {
		n = (n + hashesPerBlk - 1) / hashesPerBlk
		lv = append(lv, n)
	}
	return lv
}

// TailSize returns the number of bytes Build writes to hashOut for size
// bytes of data: padding, superblock block and hash tree.
func TailSize(size int64) int64 {
	n := dataBlocks(size)
	t := int64(n)*BlockSize - size + BlockSize
	for _, b := range levelBlocks(n) {
		t += int64(b) * BlockSize
	}
	return t
}

func dataBlocks(size int64) uint64 { return uint64((size + BlockSize - 1) / BlockSize) }

// Build reads size bytes of data and writes to hashOut the bytes that follow
// the data on the device: zeroes up to HashOffset, the superblock block,
// then the hash tree. size need not be a multiple of BlockSize; the last
// block is hashed as if zero padded (the padding written to hashOut makes
// that true on the device). The tree is held in memory (1/128 of the data).
func Build(data io.ReaderAt, size int64, hashOut io.Writer, p Params) (Table, error) {
	if size <= 0 {
		return Table{}, fmt.Errorf("verity: data size is %d bytes, need at least 1", size)
	}
	if len(p.Salt) > maxSalt {
		return Table{}, fmt.Errorf("verity: salt is %d bytes, at most %d allowed", len(p.Salt), maxSalt)
	}
	n := dataBlocks(size)
	t := Table{
		DataBlocks:     n,
		HashOffset:     int64(n) * BlockSize,
		HashStartBlock: n + 1,
		Salt:           append([]byte(nil), p.Salt...),
		UUID:           p.UUID,
	}
	if t.UUID == ([16]byte{}) {
		t.UUID = deriveUUID(p.Salt, size)
	}

	// Level 0: the salted hash of every data block.
	lv := levelBlocks(n)
	levels := make([][]byte, len(lv))
	for i, b := range lv {
		levels[i] = make([]byte, b*BlockSize)
	}
	first := t.RootHash[:]
	if len(lv) > 0 {
		first = levels[0]
	}
	if err := hashData(data, size, p.Salt, first); err != nil {
		return Table{}, err
	}
	// Upper levels, and the root from the top block.
	for i := 1; i < len(levels); i++ {
		hashBlocks(levels[i-1], p.Salt, levels[i])
	}
	if len(levels) > 0 {
		hashBlocks(levels[len(levels)-1], p.Salt, t.RootHash[:])
	}

	w := bufio.NewWriterSize(hashOut, 1<<20)
	if _, err := w.Write(make([]byte, t.HashOffset-size)); err != nil {
		return Table{}, fmt.Errorf("verity: write padding: %w", err)
	}
	if _, err := w.Write(t.superblock()); err != nil {
		return Table{}, fmt.Errorf("verity: write superblock: %w", err)
	}
	for i := len(levels) - 1; i >= 0; i-- {
		if _, err := w.Write(levels[i]); err != nil {
			return Table{}, fmt.Errorf("verity: write hash level %d: %w", i, err)
		}
	}
	if err := w.Flush(); err != nil {
		return Table{}, fmt.Errorf("verity: write hash tree: %w", err)
	}
	return t, nil
}

// hashData writes sha256(salt || block) of every data block to out, in
// order; the last block is zero padded.
func hashData(data io.ReaderAt, size int64, salt []byte, out []byte) error {
	buf := make([]byte, readChunk)
	h := sha256.New()
	var sum [digestSize]byte
	for off := int64(0); off < size; off += readChunk {
		chunk := buf[:min(readChunk, size-off)]
		k, err := data.ReadAt(chunk, off)
		if k < len(chunk) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("verity: read data at offset %d of %d: %w", off+int64(k), size, err)
		}
		if rem := len(chunk) % BlockSize; rem != 0 { // the last, partial block
			chunk = buf[:len(chunk)+BlockSize-rem]
			clear(chunk[k:])
		}
		for b := 0; b < len(chunk); b += BlockSize {
			h.Reset()
			h.Write(salt)
			h.Write(chunk[b : b+BlockSize])
			copy(out, h.Sum(sum[:0]))
			out = out[digestSize:]
		}
	}
	return nil
}

// hashBlocks writes the salted hash of every block of in to out.
func hashBlocks(in, salt, out []byte) {
	h := sha256.New()
	var sum [digestSize]byte
	for b := 0; b < len(in); b += BlockSize {
		h.Reset()
		h.Write(salt)
		h.Write(in[b : b+BlockSize])
		copy(out[b/BlockSize*digestSize:], h.Sum(sum[:0]))
	}
}

// superblock returns the hash area's first block: struct verity_sb
// (cryptsetup lib/verity/verity.c), little-endian, zero padded.
func (t Table) superblock() []byte {
	b := make([]byte, BlockSize)
	le := binary.LittleEndian
	copy(b[0:8], "verity")                    // signature "verity\0\0"
	le.PutUint32(b[8:], superVersion)         // superblock version
	le.PutUint32(b[12:], Version)             // hash_type
	copy(b[16:32], t.UUID[:])                 // uuid
	copy(b[32:64], Algorithm)                 // algorithm[32]
	le.PutUint32(b[64:], BlockSize)           // data_block_size
	le.PutUint32(b[68:], BlockSize)           // hash_block_size
	le.PutUint64(b[72:], t.DataBlocks)        // data_blocks
	le.PutUint16(b[80:], uint16(len(t.Salt))) // salt_size, then 6 bytes padding
	copy(b[88:88+maxSalt], t.Salt)            // salt[256], then 168 bytes padding
	return b
}

// deriveUUID makes a UUID from the salt and data size, with the RFC 9562
// version 8 (custom) and variant bits set.
func deriveUUID(salt []byte, size int64) [16]byte {
	h := sha256.New()
	h.Write([]byte(uuidNamespace))
	binary.Write(h, binary.LittleEndian, size)
	h.Write(salt)
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return u
}
