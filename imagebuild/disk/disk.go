// Package disk synthesizes a qcluster node's disk at launch time: a raw,
// sparse file with a GPT and four partitions, built from the OS image's
// payloads in milliseconds where the file system can share blocks.
//
// Layout (names, type GUIDs and ESP paths are imagebuild/disklayout's, the
// contract with the guest; see ARCHITECTURE.md, "The node disk"), 512-byte
// sectors, partitions on 1 MiB boundaries, in this order:
//
//	1 ESP       gpt.TypeEFISystem  ESPSize (128 MiB)   FAT32: EFI/BOOT/BOOTX64.EFI = Loader,
//	                                                   loader/loader.conf = LoaderConf,
//	                                                   EFI/Linux/qcluster-a.efi = Kernel, ExtraESPFiles
//	2 SYSTEM-A  TypeSystem         SystemSize (1 GiB)  the System payload from offset 0
//	3 SYSTEM-B  TypeSystem         SystemSize (1 GiB)  empty
//	4 DATA      TypeData           the rest, whole MiB  empty (the guest formats it)
//
// Nothing is written as zeroes: SYSTEM-B, DATA and the unused parts of the
// ESP and SYSTEM-A stay holes. Payload data goes in by reflink
// (FICLONERANGE) where source and disk share a file system that supports it,
// else copy_file_range, else read/write (imagebuild/blockdev); Stats says
// which. Payloads whose Blob opens as an *os.File can take the fast paths;
// a verifying reader always goes through read/write.
//
// Output is deterministic: the disk GUID, the partition GUIDs and the ESP's
// volume serial are derived from Options.Seed (SHA-256), the ESP's
// timestamps are Options.Time. Same inputs and seed, same bytes.
//
// The disk is written to a temporary file next to the output and renamed
// over it when complete; on any error the temporary file is removed. The
// file is not fsynced: a node disk is disposable.
package disk

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/disklayout"
	"github.com/qcluster/qcluster/imagebuild/fat32"
	"github.com/qcluster/qcluster/imagebuild/gpt"
	"github.com/qcluster/qcluster/internal/atomicfile"
)

// Blob is a payload: Size bytes, read from the start by Open. When Open
// returns an *os.File the copy can reflink it. osimage.Payload and
// blockdev.FileBlob satisfy it.
type Blob = blockdev.Blob

// File is an extra file for the ESP.
type File struct {
	// Path is the slash-separated path in the ESP, e.g. "EFI/qcluster/x.json".
	Path string
	// Blob is the content; at most 4 GiB - 1 bytes.
	Blob Blob
}

// Partition type GUIDs.
var (
	typeSystem = gpt.MustParseGUID(disklayout.TypeSystem)
	typeData   = gpt.MustParseGUID(disklayout.TypeData)
)

// Architecture is the only one the disk layout supports (BOOTX64.EFI).
const Architecture = "x86_64"

// Defaults of Options.
const (
	DefaultSize       int64 = 3 << 30
	DefaultESPSize    int64 = 128 << 20
	DefaultSystemSize int64 = 1 << 30
	// MinDataSize is the smallest DATA partition a plan accepts.
	MinDataSize int64 = 1 << 20
)

// Options describe one node disk. Loader, Kernel and System are required.
type Options struct {
	// Size is the disk size in bytes, a multiple of 512. Default DefaultSize (3 GiB).
	Size int64
	// ESPSize is the ESP's size in bytes, whole MiB, at least 33 MiB (FAT32).
	// Default DefaultESPSize (128 MiB).
	ESPSize int64
	// SystemSize is the size of SYSTEM-A and of SYSTEM-B each, in bytes,
	// whole MiB. Default DefaultSystemSize (1 GiB).
	SystemSize int64
	// Seed derives the disk GUID, the partition GUIDs and the ESP serial;
	// give each node its own (its name, say). Default "": every disk made
	// without a seed has the same GUIDs.
	Seed string
	// Time is the timestamp of every ESP file and directory (FAT local time,
	// 2 s resolution, 1980–2107). Default: 1980-01-01 00:00:00.
	Time time.Time
	// Loader is the EFI boot loader (systemd-boot's systemd-bootx64.efi).
	Loader Blob
	// Kernel is slot A's unified kernel image (the "kernel.efi" payload).
	Kernel Blob
	// System is SYSTEM-A's content (the "system" payload).
	System Blob
	// ExtraESPFiles are added to the ESP; their paths may not clash with
	// the loader's, its configuration's or the kernel's.
	ExtraESPFiles []File
	// Logger receives debug records of each stage. Default: none.
	Logger *slog.Logger
}

// Plan is a validated disk layout, ready to write.
type Plan struct {
	opts    Options
	table   gpt.Table
	esp     *fat32.Layout
	minSize int64
}

// NewPlan fills in defaults, validates the options, lays out the partitions
// and plans the ESP. Errors name the sizes that do not fit.
func NewPlan(opts Options) (*Plan, error) {
	if opts.Size == 0 {
		opts.Size = DefaultSize
	}
	if opts.ESPSize == 0 {
		opts.ESPSize = DefaultESPSize
	}
	if opts.SystemSize == 0 {
		opts.SystemSize = DefaultSystemSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	for _, in := range []struct {
		name string
		b    Blob
	}{{"loader", opts.Loader}, {"kernel", opts.Kernel}, {"system", opts.System}} {
		if in.b == nil {
			return nil, fmt.Errorf("plan node disk: no %s given", in.name)
		}
	}
	switch {
	case opts.Size < 0 || opts.Size%gpt.SectorSize != 0:
		return nil, fmt.Errorf("plan node disk: disk size %d is not a positive multiple of %d bytes", opts.Size, gpt.SectorSize)
	case opts.ESPSize < 0 || opts.ESPSize%gpt.Alignment != 0:
		return nil, fmt.Errorf("plan node disk: ESP size %d is not a whole number of MiB", opts.ESPSize)
	case opts.SystemSize < 0 || opts.SystemSize%gpt.Alignment != 0:
		return nil, fmt.Errorf("plan node disk: system partition size %d is not a whole number of MiB", opts.SystemSize)
	}
	if s := opts.System.Size(); s > opts.SystemSize {
		return nil, fmt.Errorf("plan node disk: system payload is %s, partition %s is %s",
			blockdev.FormatSize(s), disklayout.NameSystemA, blockdev.FormatSize(opts.SystemSize))
	}

	p := &Plan{opts: opts}
	const lba = gpt.SectorSize
	start := int64(gpt.Alignment)
	part := func(name string, typ gpt.GUID, size int64) gpt.Partition {
		pt := gpt.Partition{Name: name, Type: typ, GUID: p.guid("partition " + name),
			FirstLBA: uint64(start / lba), LastLBA: uint64((start+size)/lba - 1)}
		start += size
		return pt
	}
	esp := part(disklayout.NameESP, gpt.TypeEFISystem, opts.ESPSize)
	a := part(disklayout.NameSystemA, typeSystem, opts.SystemSize)
	b := part(disklayout.NameSystemB, typeSystem, opts.SystemSize)
	// DATA takes whole MiB up to the backup table (the last 33 sectors).
	p.minSize = start + MinDataSize + (1+gpt.NumEntries*gpt.EntrySize/lba)*lba
	if opts.Size < p.minSize {
		return nil, fmt.Errorf("plan node disk: disk size %s is smaller than the plan's %s (ESP %s, 2 × system %s, data at least %s, GPT)",
			blockdev.FormatSize(opts.Size), blockdev.FormatSize(p.minSize), blockdev.FormatSize(opts.ESPSize),
			blockdev.FormatSize(opts.SystemSize), blockdev.FormatSize(MinDataSize))
	}
	_, lastUsable := gpt.Usable(opts.Size)
	end := (int64(lastUsable+1) * lba) / gpt.Alignment * gpt.Alignment
	data := part(disklayout.NameData, typeData, end-start)
	p.table = gpt.Table{DiskGUID: p.guid("disk"), Partitions: []gpt.Partition{esp, a, b, data}}

	files := []fat32.File{
		{Path: disklayout.LoaderPath, Blob: opts.Loader},
		{Path: disklayout.LoaderConfPath, Blob: blockdev.Bytes(disklayout.LoaderConf)},
		{Path: disklayout.KernelPath, Blob: opts.Kernel},
	}
	for _, f := range opts.ExtraESPFiles {
		files = append(files, fat32.File{Path: f.Path, Blob: f.Blob})
	}
	serial := sha256.Sum256([]byte(opts.Seed + "\x00fat32 serial"))
	espLayout, err := fat32.Plan(opts.ESPSize, files, fat32.Options{
		Serial:        binary.LittleEndian.Uint32(serial[:]),
		Time:          opts.Time,
		HiddenSectors: uint32(esp.FirstLBA),
	})
	if err != nil {
		return nil, fmt.Errorf("plan node disk: partition %s: %w", disklayout.NameESP, err)
	}
	p.esp = espLayout
	return p, nil
}

// guid derives a GUID for purpose from the seed: SHA-256(seed NUL purpose),
// shaped as an RFC 9562 version 4 GUID.
func (p *Plan) guid(purpose string) gpt.GUID {
	sum := sha256.Sum256([]byte(p.opts.Seed + "\x00" + purpose))
	var g gpt.GUID
	copy(g[:], sum[:])
	g[6] = g[6]&0x0F | 0x40 // version 4
	g[8] = g[8]&0x3F | 0x80 // variant 10
	return g
}

// Partitions returns the planned partitions, in table order.
func (p *Plan) Partitions() []gpt.Partition {
	return append([]gpt.Partition(nil), p.table.Partitions...)
}

// DiskGUID returns the planned disk GUID.
func (p *Plan) DiskGUID() gpt.GUID { return p.table.DiskGUID }

// MinSize is the smallest disk, in bytes, that holds this plan's partitions.
func (p *Plan) MinSize() int64 { return p.minSize }

// Size is the disk size in bytes.
func (p *Plan) Size() int64 { return p.opts.Size }

// Copied reports how one payload reached the disk.
type Copied struct {
	// Partition is the partition it went to (disklayout.NameESP or disklayout.NameSystemA).
	Partition string
	// Path is its path in the ESP; "" for a whole-partition payload.
	Path string
	// Bytes is its size in bytes.
	Bytes int64
	// Method is the copy path that carried the data.
	Method blockdev.Method
}

// Stats describe a finished write.
type Stats struct {
	// Copied lists every payload and ESP file, in write order.
	Copied []Copied
	// ESP, System and Table are how long writing the ESP, SYSTEM-A and the
	// GPT took; Total is the whole Write, including creating and renaming
	// the file.
	ESP, System, Table, Total time.Duration
}

// Write plans the disk of opts and writes it to path.
func Write(ctx context.Context, path string, opts Options) (*Stats, error) {
	p, err := NewPlan(opts)
	if err != nil {
		return nil, err
	}
	return p.Write(ctx, path)
}

// Write writes the planned disk to path, replacing any file there only once
// the new disk is complete.
func (p *Plan) Write(ctx context.Context, path string) (st *Stats, err error) {
	start := time.Now()
	log := p.opts.Logger
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("write node disk %s: %w", path, err)
	}
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return nil, fmt.Errorf("node disk: %w", err)
	}
	defer func() {
		if err != nil {
			f.Abort()
			err = fmt.Errorf("write node disk %s: %w", path, err)
		}
	}()
	dev, err := blockdev.NewFile(f.File, p.opts.Size)
	if err != nil {
		return nil, err
	}
	st = &Stats{}
	section := func(i int) (*blockdev.Section, error) {
		pt := p.table.Partitions[i]
		return blockdev.NewSection(dev, pt.Offset(), pt.Size())
	}

	// ESP.
	t := time.Now()
	esp, err := section(0)
	if err != nil {
		return nil, err
	}
	copied, err := p.esp.Write(esp)
	if err != nil {
		return nil, fmt.Errorf("partition %s: %w", disklayout.NameESP, err)
	}
	for _, c := range copied {
		st.Copied = append(st.Copied, Copied{Partition: disklayout.NameESP, Path: c.Path, Bytes: c.Bytes, Method: c.Method})
	}
	st.ESP = time.Since(t)
	log.Debug("node disk: ESP written", "path", path, "files", len(copied), "used", p.esp.Used(), "duration", st.ESP)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// SYSTEM-A.
	t = time.Now()
	sysA, err := section(1)
	if err != nil {
		return nil, err
	}
	m, err := blockdev.CopyBlob(sysA, 0, ctxBlob{ctx, p.opts.System})
	if err != nil {
		return nil, fmt.Errorf("partition %s: system payload: %w", disklayout.NameSystemA, err)
	}
	st.Copied = append(st.Copied, Copied{Partition: disklayout.NameSystemA, Bytes: p.opts.System.Size(), Method: m})
	st.System = time.Since(t)
	log.Debug("node disk: system payload written", "path", path, "bytes", p.opts.System.Size(), "method", m.String(), "duration", st.System)

	// The partition table, backup first (gpt.Write's order).
	t = time.Now()
	if err := gpt.Write(dev, p.table); err != nil {
		return nil, err
	}
	st.Table = time.Since(t)

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := f.Commit(); err != nil {
		return nil, err
	}
	st.Total = time.Since(start)
	log.Debug("node disk written", "path", path, "size", p.opts.Size, "duration", st.Total)
	return st, nil
}

// ctxBlob makes the read/write path of a copy stop when ctx is done; files
// pass through untouched so that the fast paths still apply.
type ctxBlob struct {
	ctx context.Context
	Blob
}

func (c ctxBlob) Open() (io.ReadCloser, error) {
	rc, err := c.Blob.Open()
	if err != nil {
		return nil, err
	}
	if _, ok := rc.(*os.File); ok {
		return rc, nil
	}
	return ctxReader{c.ctx, rc}, nil
}

type ctxReader struct {
	ctx context.Context
	io.ReadCloser
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.ReadCloser.Read(p)
}
