// Package gpt writes and reads GUID partition tables as UEFI 2.10 §5.2.3
// (protective MBR, Tables 5-3 and 5-4) and §5.3 (GPT header, Table 5-5;
// partition entry array, Tables 5-6 and 5-7) describe them.
//
// The writer emits the layout every partitioning tool emits: 512-byte
// sectors, the primary header at LBA 1 followed by an array of 128 entries of
// 128 bytes (LBAs 2–33), the backup array and header in the disk's last 33
// sectors, and a protective MBR covering the disk. It writes the backup
// structures before the primary ones, so a disk interrupted half-way never
// shows a valid primary table with a missing backup. Partition placement is
// the caller's choice; Align helps to put partitions on 1 MiB boundaries.
//
// The reader validates what the writer promises: the protective MBR, both
// headers' CRC32s and fields, both entry arrays' CRC32s, that the two tables
// agree, and that partitions lie in the usable area without overlapping.
//
// Limits: 512-byte logical sectors only; no hybrid MBRs; the reader requires
// both tables intact (it is for checking images, not for recovering disks).
package gpt

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"unicode/utf16"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
)

const (
	// SectorSize is the logical block size in bytes.
	SectorSize = 512
	// Alignment is where partitions customarily start, in bytes (1 MiB).
	Alignment = 1 << 20
	// NumEntries is the number of partition entries the writer emits.
	NumEntries = 128
	// EntrySize is the size of one partition entry in bytes.
	EntrySize = 128
	// MaxNameLen is the partition name's capacity in UTF-16 code units.
	MaxNameLen = 36

	arraySectors = NumEntries * EntrySize / SectorSize // 32
	signature    = "EFI PART"
	revision     = 0x00010000
	headerSize   = 92
	mbrSignature = 0xAA55
	osTypeGPT    = 0xEE
	// maxArrayBytes bounds the entry array the reader accepts (a sanity limit).
	maxArrayBytes = 1 << 20
)

// ErrInvalid is wrapped by every error about a malformed table.
var ErrInvalid = errors.New("invalid GPT")

// Partition is one used partition entry.
type Partition struct {
	// Name is the partition name, at most MaxNameLen UTF-16 code units.
	Name string
	// Type is the partition type GUID (never Zero for a used entry).
	Type GUID
	// GUID is the unique partition GUID.
	GUID GUID
	// FirstLBA and LastLBA are the first and last sector, inclusive.
	FirstLBA, LastLBA uint64
	// Attributes are the attribute bits of Table 5-7 (0: none).
	Attributes uint64
}

// Offset is the partition's first byte on the disk.
func (p Partition) Offset() int64 { return int64(p.FirstLBA) * SectorSize }

// Size is the partition's length in bytes.
func (p Partition) Size() int64 { return int64(p.LastLBA-p.FirstLBA+1) * SectorSize }

// Table is a partition table.
type Table struct {
	// DiskGUID identifies the disk.
	DiskGUID GUID
	// Partitions are the used entries in entry-array order; the writer puts
	// them in slots 1..len(Partitions), the reader skips unused slots.
	Partitions []Partition
}

// Usable returns the first and last LBA (inclusive) that partitions may use
// on a disk of size bytes written by this package.
func Usable(size int64) (first, last uint64) {
	sectors := uint64(size / SectorSize)
	return 2 + arraySectors, sectors - 2 - arraySectors
}

// Align rounds off up to the next multiple of Alignment.
func Align(off int64) int64 { return (off + Alignment - 1) / Alignment * Alignment }

// On-disk structures, little-endian, fields in the spec's order.

// mbrRecord is a legacy MBR partition record (Table 5-2 / 5-4).
type mbrRecord struct {
	BootIndicator uint8   // 0: not bootable
	StartCHS      [3]byte // 0x000200 for the protective record
	OSType        uint8   // 0xEE: GPT protective
	EndCHS        [3]byte // CHS of the last sector, 0xFFFFFF when it does not fit
	StartingLBA   uint32  // 1
	SizeInLBA     uint32  // disk sectors - 1, clamped to 0xFFFFFFFF
}

// protectiveMBR is LBA 0 (Table 5-3).
type protectiveMBR struct {
	BootCode      [440]byte // unused by UEFI
	DiskSignature uint32    // unused, 0
	Unknown       uint16    // 0
	Records       [4]mbrRecord
	Signature     uint16 // 0xAA55
}

// header is the GPT header (Table 5-5); the rest of its sector is zero.
type header struct {
	Signature                [8]byte // "EFI PART"
	Revision                 uint32  // 0x00010000
	HeaderSize               uint32  // 92
	HeaderCRC32              uint32  // CRC32 of HeaderSize bytes with this field zero
	Reserved                 uint32  // 0
	MyLBA                    uint64  // LBA of this header
	AlternateLBA             uint64  // LBA of the other header
	FirstUsableLBA           uint64
	LastUsableLBA            uint64
	DiskGUID                 [16]byte // mixed-endian, see GUID
	PartitionEntryLBA        uint64   // first LBA of this header's entry array
	NumberOfPartitionEntries uint32
	SizeOfPartitionEntry     uint32 // 128 × 2^n
	PartitionEntryArrayCRC32 uint32
}

// entry is a partition entry (Table 5-6); entries may be larger than this,
// the rest being zero.
type entry struct {
	PartitionTypeGUID   [16]byte // zero: unused entry
	UniquePartitionGUID [16]byte
	StartingLBA         uint64
	EndingLBA           uint64 // inclusive
	Attributes          uint64
	PartitionName       [MaxNameLen]uint16 // UTF-16LE, NUL-padded
}

func encode(v any, size int) []byte {
	b := make([]byte, size)
	if _, err := binary.Encode(b, binary.LittleEndian, v); err != nil {
		panic(err) // fixed-size structs into buffers at least their size
	}
	return b
}

// Write writes t onto dev: backup array and header first, then the primary
// array and header, then the protective MBR. Sectors between the tables and
// the partitions are left alone.
func Write(dev blockdev.BlockDev, t Table) error {
	size := dev.Size()
	if size%SectorSize != 0 {
		return fmt.Errorf("write GPT: disk size %d is not a multiple of %d", size, SectorSize)
	}
	sectors := uint64(size / SectorSize)
	if sectors < 2*(2+arraySectors)+1 {
		return fmt.Errorf("write GPT: disk of %d bytes is too small for two tables", size)
	}
	first, last := Usable(size)
	if err := check(t, first, last, NumEntries); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	array := make([]byte, NumEntries*EntrySize)
	for i, p := range t.Partitions {
		e := entry{
			PartitionTypeGUID:   p.Type.disk(),
			UniquePartitionGUID: p.GUID.disk(),
			StartingLBA:         p.FirstLBA,
			EndingLBA:           p.LastLBA,
			Attributes:          p.Attributes,
		}
		copy(e.PartitionName[:], utf16.Encode([]rune(p.Name)))
		copy(array[i*EntrySize:], encode(&e, EntrySize))
	}
	lastLBA := sectors - 1
	primary := header{
		Revision: revision, HeaderSize: headerSize,
		MyLBA: 1, AlternateLBA: lastLBA,
		FirstUsableLBA: first, LastUsableLBA: last,
		DiskGUID:                 t.DiskGUID.disk(),
		PartitionEntryLBA:        2,
		NumberOfPartitionEntries: NumEntries, SizeOfPartitionEntry: EntrySize,
		PartitionEntryArrayCRC32: crc32.ChecksumIEEE(array),
	}
	copy(primary.Signature[:], signature)
	backup := primary
	backup.MyLBA, backup.AlternateLBA = lastLBA, 1
	backup.PartitionEntryLBA = lastLBA - arraySectors

	mbr := protectiveMBR{Signature: mbrSignature}
	mbr.Records[0] = mbrRecord{
		StartCHS: [3]byte{0x00, 0x02, 0x00}, OSType: osTypeGPT,
		EndCHS: [3]byte{0xFF, 0xFF, 0xFF}, StartingLBA: 1,
		SizeInLBA: uint32(min(sectors-1, 0xFFFFFFFF)),
	}
	for _, w := range []struct {
		what string
		b    []byte
		lba  uint64
	}{
		{"backup entry array", array, backup.PartitionEntryLBA},
		{"backup header", sealHeader(backup), backup.MyLBA},
		{"primary entry array", array, primary.PartitionEntryLBA},
		{"primary header", sealHeader(primary), primary.MyLBA},
		{"protective MBR", encode(&mbr, SectorSize), 0},
	} {
		if _, err := dev.WriteAt(w.b, int64(w.lba)*SectorSize); err != nil {
			return fmt.Errorf("write GPT %s at LBA %d: %w", w.what, w.lba, err)
		}
	}
	return nil
}

// sealHeader fills in the header CRC and returns its sector.
func sealHeader(h header) []byte {
	h.HeaderCRC32 = 0
	h.HeaderCRC32 = crc32.ChecksumIEEE(encode(&h, headerSize))
	return encode(&h, SectorSize)
}

// check validates partitions against a usable range and an entry count.
func check(t Table, first, last uint64, entries int) error {
	if len(t.Partitions) > entries {
		return fmt.Errorf("%d partitions, at most %d fit: %w", len(t.Partitions), entries, ErrInvalid)
	}
	ps := slices.Clone(t.Partitions)
	for i, p := range ps {
		if p.Type == (GUID{}) {
			return fmt.Errorf("partition %d (%q) has the zero type GUID: %w", i+1, p.Name, ErrInvalid)
		}
		if n := len(utf16.Encode([]rune(p.Name))); n > MaxNameLen {
			return fmt.Errorf("partition %d name %q is %d UTF-16 units, at most %d: %w", i+1, p.Name, n, MaxNameLen, ErrInvalid)
		}
		if p.FirstLBA > p.LastLBA || p.FirstLBA < first || p.LastLBA > last {
			return fmt.Errorf("partition %d (%q) spans LBAs %d–%d, outside the usable %d–%d: %w",
				i+1, p.Name, p.FirstLBA, p.LastLBA, first, last, ErrInvalid)
		}
	}
	slices.SortFunc(ps, func(a, b Partition) int { return cmp.Compare(a.FirstLBA, b.FirstLBA) })
	for i := 1; i < len(ps); i++ {
		if ps[i].FirstLBA <= ps[i-1].LastLBA {
			return fmt.Errorf("partitions %q and %q overlap: %w", ps[i-1].Name, ps[i].Name, ErrInvalid)
		}
	}
	return nil
}

// Read reads and validates the table on a disk of size bytes.
func Read(r io.ReaderAt, size int64) (*Table, error) {
	if size%SectorSize != 0 || size < (2*(2+arraySectors)+1)*SectorSize {
		return nil, fmt.Errorf("read GPT: disk size %d: %w", size, ErrInvalid)
	}
	lastLBA := uint64(size/SectorSize) - 1
	sector := make([]byte, SectorSize)
	if _, err := r.ReadAt(sector, 0); err != nil {
		return nil, fmt.Errorf("read GPT: protective MBR: %w", err)
	}
	var mbr protectiveMBR
	binary.Decode(sector, binary.LittleEndian, &mbr)
	if mbr.Signature != mbrSignature {
		return nil, fmt.Errorf("read GPT: MBR signature %#04x, want %#04x: %w", mbr.Signature, mbrSignature, ErrInvalid)
	}
	if !slices.ContainsFunc(mbr.Records[:], func(r mbrRecord) bool { return r.OSType == osTypeGPT && r.StartingLBA == 1 }) {
		return nil, fmt.Errorf("read GPT: no protective (0xEE) MBR record starting at LBA 1: %w", ErrInvalid)
	}
	primary, parr, err := readHeader(r, 1, lastLBA)
	if err != nil {
		return nil, fmt.Errorf("read GPT: primary: %w", err)
	}
	if primary.AlternateLBA != lastLBA {
		return nil, fmt.Errorf("read GPT: primary: backup header at LBA %d, want the last LBA %d: %w", primary.AlternateLBA, lastLBA, ErrInvalid)
	}
	backup, barr, err := readHeader(r, lastLBA, lastLBA)
	if err != nil {
		return nil, fmt.Errorf("read GPT: backup: %w", err)
	}
	if backup.AlternateLBA != 1 {
		return nil, fmt.Errorf("read GPT: backup: primary header at LBA %d, want 1: %w", backup.AlternateLBA, ErrInvalid)
	}
	p, b := *primary, *backup
	p.HeaderCRC32, b.HeaderCRC32 = 0, 0
	p.MyLBA, p.AlternateLBA, p.PartitionEntryLBA = b.MyLBA, b.AlternateLBA, b.PartitionEntryLBA
	if p != b || !bytes.Equal(parr, barr) {
		return nil, fmt.Errorf("read GPT: primary and backup tables differ: %w", ErrInvalid)
	}
	t := &Table{DiskGUID: guidFromDisk(primary.DiskGUID)}
	es := int(primary.SizeOfPartitionEntry)
	for i := 0; i < int(primary.NumberOfPartitionEntries); i++ {
		var e entry
		binary.Decode(parr[i*es:], binary.LittleEndian, &e)
		if e.PartitionTypeGUID == ([16]byte{}) {
			continue
		}
		name := e.PartitionName[:]
		if n := slices.Index(name, 0); n >= 0 {
			name = name[:n]
		}
		t.Partitions = append(t.Partitions, Partition{
			Name:       string(utf16.Decode(name)),
			Type:       guidFromDisk(e.PartitionTypeGUID),
			GUID:       guidFromDisk(e.UniquePartitionGUID),
			FirstLBA:   e.StartingLBA,
			LastLBA:    e.EndingLBA,
			Attributes: e.Attributes,
		})
	}
	if err := check(*t, primary.FirstUsableLBA, primary.LastUsableLBA, int(primary.NumberOfPartitionEntries)); err != nil {
		return nil, fmt.Errorf("read GPT: %w", err)
	}
	return t, nil
}

// readHeader reads and validates the header at lba and its entry array.
func readHeader(r io.ReaderAt, lba, lastLBA uint64) (*header, []byte, error) {
	sector := make([]byte, SectorSize)
	if _, err := r.ReadAt(sector, int64(lba)*SectorSize); err != nil {
		return nil, nil, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	var h header
	binary.Decode(sector, binary.LittleEndian, &h)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("header at LBA %d: %s: %w", lba, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch {
	case string(h.Signature[:]) != signature:
		return nil, nil, bad("signature %q", h.Signature[:])
	case h.Revision>>16 != 1:
		return nil, nil, bad("revision %#08x", h.Revision)
	case h.HeaderSize < headerSize || h.HeaderSize > SectorSize:
		return nil, nil, bad("header size %d", h.HeaderSize)
	}
	sealed := slices.Clone(sector[:h.HeaderSize])
	binary.LittleEndian.PutUint32(sealed[16:], 0)
	if crc := crc32.ChecksumIEEE(sealed); crc != h.HeaderCRC32 {
		return nil, nil, bad("header CRC32 %#08x, computed %#08x", h.HeaderCRC32, crc)
	}
	es, n := uint64(h.SizeOfPartitionEntry), uint64(h.NumberOfPartitionEntries)
	arrayBytes := es * n
	arraySectors := (arrayBytes + SectorSize - 1) / SectorSize
	switch {
	case h.MyLBA != lba:
		return nil, nil, bad("MyLBA %d", h.MyLBA)
	case es < EntrySize || es&(es-1) != 0:
		return nil, nil, bad("entry size %d is not 128 × 2^n", es)
	case arrayBytes > maxArrayBytes:
		return nil, nil, bad("%d entries of %d bytes", n, es)
	case h.FirstUsableLBA > h.LastUsableLBA || h.FirstUsableLBA < 2 || h.LastUsableLBA >= lastLBA:
		return nil, nil, bad("usable LBAs %d–%d on a disk whose last LBA is %d", h.FirstUsableLBA, h.LastUsableLBA, lastLBA)
	case h.PartitionEntryLBA < 2 || h.PartitionEntryLBA > lastLBA || arraySectors > lastLBA-h.PartitionEntryLBA:
		return nil, nil, bad("entry array at LBA %d (%d sectors)", h.PartitionEntryLBA, arraySectors)
	case h.PartitionEntryLBA+arraySectors > h.FirstUsableLBA && h.PartitionEntryLBA <= h.LastUsableLBA:
		return nil, nil, bad("entry array at LBA %d overlaps the usable LBAs %d–%d", h.PartitionEntryLBA, h.FirstUsableLBA, h.LastUsableLBA)
	case lba >= h.FirstUsableLBA && lba <= h.LastUsableLBA:
		return nil, nil, bad("header inside the usable LBAs %d–%d", h.FirstUsableLBA, h.LastUsableLBA)
	}
	array := make([]byte, arrayBytes)
	if _, err := r.ReadAt(array, int64(h.PartitionEntryLBA)*SectorSize); err != nil {
		return nil, nil, fmt.Errorf("header at LBA %d: entry array: %w", lba, err)
	}
	if crc := crc32.ChecksumIEEE(array); crc != h.PartitionEntryArrayCRC32 {
		return nil, nil, bad("entry array CRC32 %#08x, computed %#08x", h.PartitionEntryArrayCRC32, crc)
	}
	return &h, array, nil
}
