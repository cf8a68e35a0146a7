package fat32

import (
	"encoding/binary"
	"fmt"
	"time"
)

// On-disk structures, little-endian, in the order of the Microsoft FAT
// specification ("Microsoft Extensible Firmware Initiative FAT32 File System
// Specification", version 1.03, §3–§7), which UEFI 2.10 §13.3 adopts.

// bootSector is sector 0 (and its backup, sector 6): the BPB (§3.1) with the
// FAT32 extension (§3.3).
type bootSector struct {
	JmpBoot    [3]byte // EB 58 90: jump over the BPB
	OEMName    [8]byte // informational
	BytsPerSec uint16  // 512
	SecPerClus uint8   // 1, 2, 4, …, 128
	RsvdSecCnt uint16  // 32
	NumFATs    uint8   // 2
	RootEntCnt uint16  // 0 on FAT32
	TotSec16   uint16  // 0 on FAT32
	Media      uint8   // 0xF8: fixed disk
	FATSz16    uint16  // 0 on FAT32
	SecPerTrk  uint16  // legacy CHS geometry: 32, which divides every whole-MiB size (mtools checks)
	NumHeads   uint16  // legacy CHS geometry: 64, informational
	HiddSec    uint32  // sectors before the volume on its disk
	TotSec32   uint32  // sectors in the volume
	FATSz32    uint32  // sectors per FAT
	ExtFlags   uint16  // 0: FATs mirrored at run time
	FSVer      uint16  // 0.0
	RootClus   uint32  // 2: the root directory's first cluster
	FSInfo     uint16  // 1: FSInfo sector
	BkBootSec  uint16  // 6: backup boot sector
	Reserved   [12]byte
	DrvNum     uint8 // 0x80: hard disk
	Reserved1  uint8
	BootSig    uint8    // 0x29: the next three fields are present
	VolID      uint32   // volume serial number
	VolLab     [11]byte // volume label, "NO NAME    " when none
	FilSysType [8]byte  // "FAT32   ", informational
	BootCode   [420]byte
	Signature  uint16 // 0xAA55
}

// fsInfo is sector 1 (and its backup, sector 7): hints for allocators (§5).
type fsInfo struct {
	LeadSig   uint32 // 0x41615252
	Reserved1 [480]byte
	StrucSig  uint32 // 0x61417272
	FreeCount uint32 // free clusters
	NxtFree   uint32 // where to start looking for a free cluster
	Reserved2 [12]byte
	TrailSig  uint32 // 0xAA550000
}

// dirEntry is a short (8.3) directory entry (§6).
type dirEntry struct {
	Name         [11]byte // 8 + 3, space-padded, no dot
	Attr         uint8
	NTRes        uint8 // 0
	CrtTimeTenth uint8 // 0–199: tenths of a second to add to CrtTime
	CrtTime      uint16
	CrtDate      uint16
	LstAccDate   uint16
	FstClusHI    uint16
	WrtTime      uint16
	WrtDate      uint16
	FstClusLO    uint16
	FileSize     uint32 // bytes; 0 for directories
}

// lfnEntry is a long-name directory entry (§7): 13 UTF-16 units of the name,
// stored before its short entry, last part first.
type lfnEntry struct {
	Ord       uint8 // 1-based part number, 0x40 on the last part
	Name1     [5]uint16
	Attr      uint8 // attrLongName
	Type      uint8 // 0
	Chksum    uint8 // checksum of the short name
	Name2     [6]uint16
	FstClusLO uint16 // 0
	Name3     [2]uint16
}

const (
	sectorSize   = 512
	reserved     = 32 // reserved sectors, as mkfs.fat
	numFATs      = 2
	rootCluster  = 2
	fsInfoSector = 1
	backupBoot   = 6
	media        = 0xF8
	entrySize    = 32
	lfnChars     = 13

	attrReadOnly  = 0x01
	attrHidden    = 0x02
	attrSystem    = 0x04
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrArchive   = 0x20
	attrLongName  = attrReadOnly | attrHidden | attrSystem | attrVolumeID

	lastLongEntry = 0x40
	endOfChain    = 0x0FFFFFFF
	// minClusters and maxClusters bound a FAT32 volume's cluster count (§3.5).
	minClusters = 65525
	maxClusters = 0x0FFFFFF5 - 2
)

// encode returns v's little-endian encoding, size bytes long.
func encode(v any, size int) []byte {
	b := make([]byte, size)
	if _, err := binary.Encode(b, binary.LittleEndian, v); err != nil {
		panic(err) // fixed-size structs into buffers of their size
	}
	return b
}

// dosTime converts t to FAT's date and time fields (§6.1): local time, two
// seconds' resolution (the rest in tenths), years 1980–2107.
func dosTime(t time.Time) (date, clock uint16, tenth uint8, err error) {
	if t.Year() < 1980 || t.Year() > 2107 {
		return 0, 0, 0, fmt.Errorf("time %s is outside FAT's years 1980–2107", t.Format(time.RFC3339))
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	clock = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	tenth = uint8(t.Second()%2*100 + t.Nanosecond()/10_000_000)
	return date, clock, tenth, nil
}
