package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// ErrNoGPT says a device carries no valid GPT.
var ErrNoGPT = errors.New("no GPT")

// Part is one used entry of a GPT partition array.
type Part struct {
	Number   int // 1-based index in the array
	Name     string
	TypeGUID string // upper case, dashed
	PartGUID string
	FirstLBA uint64 // in sectors
	LastLBA  uint64 // in sectors, inclusive
}

// sizeBytes is the partition's size for sectorSize-byte sectors.
func (p Part) SizeBytes(sectorSize int) uint64 {
	return (p.LastLBA - p.FirstLBA + 1) * uint64(sectorSize)
}

// ReadGPT reads the primary GPT of a disk with sectorSize-byte sectors (UEFI
// 2.10 §5.3.2 "GPT Header", §5.3.3 "GPT Partition Entry Array"), checking
// signature, header and array CRC32s. Unused entries (zero type) are skipped.
func ReadGPT(r io.ReaderAt, sectorSize int) ([]Part, error) {
	hdr := make([]byte, sectorSize)
	if _, err := r.ReadAt(hdr, int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("read GPT header: %w", err)
	}
	le := binary.LittleEndian
	if !bytes.Equal(hdr[0:8], []byte("EFI PART")) {
		return nil, ErrNoGPT
	}
	hdrSize := le.Uint32(hdr[12:16])
	if hdrSize < 92 || int(hdrSize) > sectorSize {
		return nil, fmt.Errorf("GPT header size %d out of range: %w", hdrSize, ErrNoGPT)
	}
	h := append([]byte(nil), hdr[:hdrSize]...)
	wantCRC := le.Uint32(h[16:20])
	clear(h[16:20])
	if got := crc32.ChecksumIEEE(h); got != wantCRC {
		return nil, fmt.Errorf("GPT header CRC32 %#08x, stored %#08x: %w", got, wantCRC, ErrNoGPT)
	}
	entriesLBA := le.Uint64(hdr[72:80])
	count := le.Uint32(hdr[80:84])
	entrySize := le.Uint32(hdr[84:88])
	arrayCRC := le.Uint32(hdr[88:92])
	if entrySize < 128 || entrySize%8 != 0 || count > 1024 {
		return nil, fmt.Errorf("GPT: %d entries of %d bytes is out of range: %w", count, entrySize, ErrNoGPT)
	}
	array := make([]byte, int(count)*int(entrySize))
	if _, err := r.ReadAt(array, int64(entriesLBA)*int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("read GPT partition array at LBA %d: %w", entriesLBA, err)
	}
	if got := crc32.ChecksumIEEE(array); got != arrayCRC {
		return nil, fmt.Errorf("GPT partition array CRC32 %#08x, stored %#08x: %w", got, arrayCRC, ErrNoGPT)
	}
	var parts []Part
	for i := range int(count) {
		e := array[i*int(entrySize) : (i+1)*int(entrySize)]
		if allZero(e[0:16]) {
			continue
		}
		p := Part{
			Number:   i + 1,
			TypeGUID: guidString(e[0:16]),
			PartGUID: guidString(e[16:32]),
			FirstLBA: le.Uint64(e[32:40]),
			LastLBA:  le.Uint64(e[40:48]),
			Name:     utf16String(e[56:128]),
		}
		if p.LastLBA < p.FirstLBA {
			return nil, fmt.Errorf("GPT entry %d (%q): last LBA %d before first LBA %d", p.Number, p.Name, p.LastLBA, p.FirstLBA)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// FindPart returns the partition with the given type and name.
func FindPart(parts []Part, typeGUID, name string) (Part, error) {
	var found []Part
	for _, p := range parts {
		if p.TypeGUID == typeGUID && p.Name == name {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return Part{}, fmt.Errorf("no partition %q of type %s in the GPT", name, typeGUID)
	default:
		return Part{}, fmt.Errorf("%d partitions %q of type %s in the GPT", len(found), name, typeGUID)
	}
}

// guidString formats a GPT GUID (first three fields little-endian).
func guidString(b []byte) string {
	le := binary.LittleEndian
	return strings.ToUpper(fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b[0:4]), le.Uint16(b[4:6]), le.Uint16(b[6:8]), b[8:10], b[10:16]))
}

// utf16String decodes a UTF-16LE string that ends at the first NUL or with
// b (a GPT partition name, an EFI variable's value).
func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
