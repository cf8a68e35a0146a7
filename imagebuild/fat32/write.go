package fat32

import (
	"encoding/binary"
	"fmt"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
)

// Copied reports how one file's data reached the device.
type Copied struct {
	// Path is the file's path as given in File.Path, without a leading slash.
	Path string
	// Bytes is the file size in bytes.
	Bytes int64
	// Method is the copy path that carried the data (blockdev.MethodNone for
	// an empty file).
	Method blockdev.Method
}

// Write writes the volume onto dev, whose size must be the planned size. It
// first discards the whole device (a hole punch on files), then writes the
// FATs, the directories and the file data, and the boot sectors last, so an
// interrupted write never leaves something that looks like a valid volume.
// It reads each file's Blob once and returns a Copied per file, in path order.
func (l *Layout) Write(dev blockdev.BlockDev) ([]Copied, error) {
	if dev.Size() != l.Size() {
		return nil, fmt.Errorf("write FAT32 volume: device is %d bytes, the plan is for %d", dev.Size(), l.Size())
	}
	if err := dev.Zero(0, dev.Size()); err != nil {
		return nil, fmt.Errorf("write FAT32 volume: %w", err)
	}
	fat := l.fat()
	for i := range uint32(numFATs) {
		off := int64(reserved+i*l.fatSectors) * sectorSize
		if _, err := dev.WriteAt(fat, off); err != nil {
			return nil, fmt.Errorf("write FAT32 volume: FAT %d: %w", i+1, err)
		}
	}
	for _, d := range l.dirs {
		b, err := l.directory(d)
		if err != nil {
			return nil, fmt.Errorf("write FAT32 volume: directory %q: %w", d.path, err)
		}
		if _, err := dev.WriteAt(b, l.clusterOffset(d.cluster)); err != nil {
			return nil, fmt.Errorf("write FAT32 volume: directory %q: %w", d.path, err)
		}
	}
	copied := make([]Copied, 0, len(l.allFiles))
	for _, f := range l.allFiles {
		c := Copied{Path: f.path, Bytes: f.size}
		if f.size > 0 {
			m, err := blockdev.CopyBlob(dev, l.clusterOffset(f.cluster), f.blob)
			if err != nil {
				return nil, fmt.Errorf("write FAT32 volume: file %q: %w", f.path, err)
			}
			c.Method = m
		}
		copied = append(copied, c)
	}
	boot, info := l.bootSector(), l.fsInfo()
	for _, s := range []struct {
		what   string
		b      []byte
		sector int64
	}{
		{"backup FSInfo", info, backupBoot + fsInfoSector},
		{"backup boot sector", boot, backupBoot},
		{"FSInfo", info, fsInfoSector},
		{"boot sector", boot, 0},
	} {
		if _, err := dev.WriteAt(s.b, s.sector*sectorSize); err != nil {
			return nil, fmt.Errorf("write FAT32 volume: %s: %w", s.what, err)
		}
	}
	return copied, nil
}

// fat returns the used part of a FAT: the two reserved entries and every
// allocated chain; the rest stays zero (free).
func (l *Layout) fat() []byte {
	b := make([]byte, int(l.next)*4)
	binary.LittleEndian.PutUint32(b[0:], 0x0FFFFF00|media)
	binary.LittleEndian.PutUint32(b[4:], endOfChain) // clean shut-down, no errors
	chain := func(n *node) {
		for c := n.cluster; c < n.cluster+n.clusters-1; c++ {
			binary.LittleEndian.PutUint32(b[c*4:], c+1)
		}
		binary.LittleEndian.PutUint32(b[(n.cluster+n.clusters-1)*4:], endOfChain)
	}
	for _, d := range l.dirs {
		chain(d)
	}
	for _, f := range l.files {
		chain(f)
	}
	return b
}

// directory returns the clusters of directory d.
func (l *Layout) directory(d *node) ([]byte, error) {
	date, clock, tenth, err := dosTime(l.opts.Time)
	if err != nil {
		return nil, err
	}
	short := func(name [11]byte, attr uint8, cluster uint32, size int64) []byte {
		e := dirEntry{
			Name: name, Attr: attr,
			CrtTimeTenth: tenth, CrtTime: clock, CrtDate: date, LstAccDate: date,
			WrtTime: clock, WrtDate: date,
			FstClusHI: uint16(cluster >> 16), FstClusLO: uint16(cluster),
			FileSize: uint32(size),
		}
		return encode(&e, entrySize)
	}
	name := func(s string) (n [11]byte) {
		copy(n[:], s+"           ")
		return n
	}
	b := make([]byte, 0, int64(d.clusters)*l.ClusterSize())
	if d.parent == nil {
		if l.opts.Label != "" {
			b = append(b, short(name(l.opts.Label), attrVolumeID, 0, 0)...)
		}
	} else {
		parent := d.parent.cluster
		if d.parent.parent == nil {
			parent = 0 // ".." of a first-level directory names the root as 0 (§6.7)
		}
		b = append(b, short(name("."), attrDirectory, d.cluster, 0)...)
		b = append(b, short(name(".."), attrDirectory, parent, 0)...)
	}
	for _, c := range d.children {
		if c.lfn {
			for _, e := range lfnEntries(c.name, c.short) {
				b = append(b, e...)
			}
		}
		attr := uint8(attrArchive)
		if c.dir {
			attr = attrDirectory
		}
		size := c.size
		if c.dir {
			size = 0
		}
		b = append(b, short(c.short, attr, c.cluster, size)...)
	}
	return b[:cap(b)], nil
}

// bootSector returns sector 0.
func (l *Layout) bootSector() []byte {
	bs := bootSector{
		JmpBoot:    [3]byte{0xEB, 0x58, 0x90},
		BytsPerSec: sectorSize,
		SecPerClus: uint8(l.secPerClus),
		RsvdSecCnt: reserved,
		NumFATs:    numFATs,
		Media:      media,
		SecPerTrk:  32,
		NumHeads:   64,
		HiddSec:    l.opts.HiddenSectors,
		TotSec32:   l.totalSectors,
		FATSz32:    l.fatSectors,
		RootClus:   rootCluster,
		FSInfo:     fsInfoSector,
		BkBootSec:  backupBoot,
		DrvNum:     0x80,
		BootSig:    0x29,
		VolID:      l.opts.Serial,
		Signature:  0xAA55,
	}
	copy(bs.OEMName[:], "QCLUSTER")
	label := l.opts.Label
	if label == "" {
		label = "NO NAME"
	}
	copy(bs.VolLab[:], label+"           ")
	copy(bs.FilSysType[:], "FAT32   ")
	// Not bootable on BIOS: halt forever (hlt; jmp back).
	copy(bs.BootCode[:], []byte{0xF4, 0xEB, 0xFD})
	return encode(&bs, sectorSize)
}

// fsInfo returns the FSInfo sector.
func (l *Layout) fsInfo() []byte {
	next := l.next
	if next > l.clusters+1 {
		next = 0xFFFFFFFF // unknown: the volume is full
	}
	fi := fsInfo{
		LeadSig:   0x41615252,
		StrucSig:  0x61417272,
		FreeCount: l.clusters - l.used,
		NxtFree:   next,
		TrailSig:  0xAA550000,
	}
	return encode(&fi, sectorSize)
}
