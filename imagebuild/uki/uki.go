// Package uki assembles a unified kernel image (UKI): the systemd EFI stub
// (linuxx64.efi.stub, a PE32+ image) with the kernel, initramfs, command line
// and os-release appended as extra PE sections, as described by the UAPI
// Group's "Unified Kernel Image" specification and systemd-stub(7).
//
// The stub's headers are edited in place (Microsoft PE/COFF specification,
// "COFF File Header", "Optional Header Windows-Specific Fields" and "Section
// Table"): new section headers go after the stub's last one, their raw data
// starts on FileAlignment boundaries after the stub's last byte, and their
// virtual addresses on SectionAlignment boundaries after the stub's last
// section. NumberOfSections, SizeOfInitializedData and SizeOfImage are
// updated and CheckSum is recomputed with the PE image checksum algorithm
// (16-bit one's-complement-style sum with carry folding, plus the file
// length). Nothing else changes, so the output is a function of the inputs.
//
// Limits: the stub's SizeOfHeaders must leave room for the new section
// headers (the systemd 252 stub has room for 7 more); a signed stub
// (non-empty certificate table) is refused, since appending would break the
// signature; the output is not signed. Section order in the file is .osrel,
// .cmdline, .uname, .linux, .initrd (absent optional ones are skipped);
// systemd-stub looks sections up by name, so order does not matter to it.
package uki

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
)

// Blob is a section's content. Build opens each blob twice (once for the
// checksum, once to copy) and fails if the two reads differ in length or
// content sum.
type Blob = blockdev.Blob

// Bytes is a Blob held in memory.
type Bytes = blockdev.Bytes

// Options are the parts of a UKI.
type Options struct {
	// Stub is the whole systemd EFI stub file (linuxx64.efi.stub). Required.
	Stub []byte
	// OSRelease is the .osrel section: os-release(5) text. Required, and it
	// must set NAME and VERSION_ID (systemd-boot lists the entry by them).
	OSRelease string
	// Cmdline is the .cmdline section: the kernel command line. Optional
	// (default: no section, the stub then passes none).
	Cmdline string
	// Uname is the .uname section: the kernel release (`uname -r`).
	// Optional (default: no section).
	Uname string
	// Linux is the .linux section: the kernel's bzImage (vmlinuz). Required.
	Linux Blob
	// Initrd is the .initrd section: the initramfs (cpio, optionally
	// compressed). Optional (default: no section).
	Initrd Blob
}

// Offsets in the PE/COFF headers (PE format specification, PE32+).
const (
	offLfanew       = 0x3c // MS-DOS stub: file offset of the PE signature
	coffSize        = 20   // COFF file header after "PE\0\0"
	sectionHdrSize  = 40   // one section table entry
	magicPE32Plus   = 0x20b
	optSizeInitData = 8   // SizeOfInitializedData
	optSectAlign    = 32  // SectionAlignment
	optFileAlign    = 36  // FileAlignment
	optSizeOfImage  = 56  // SizeOfImage
	optSizeOfHdrs   = 60  // SizeOfHeaders
	optCheckSum     = 64  // CheckSum
	optNumDirs      = 108 // NumberOfRvaAndSizes
	optDirs         = 112 // data directories, 8 bytes each
	dirSecurity     = 4   // certificate table entry
	// IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
	sectionFlags = 0x40000040
)

// section is one section to append.
type section struct {
	name string
	blob Blob
	va   uint32 // virtual address
	raw  uint32 // file offset of the data
}

// layout is the edited stub headers plus where every new section goes.
type layout struct {
	head     []byte // the stub, headers edited, checksum zero
	pad      int64  // zeroes after head up to the first section's data
	sections []section
	size     int64 // total file size
	checkOff int   // file offset of CheckSum
	fileAl   uint32
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// plan parses the stub and lays the sections out; it reads no blob contents.
func plan(o Options) (*layout, error) {
	if err := checkOSRelease(o.OSRelease); err != nil {
		return nil, err
	}
	if o.Linux == nil || o.Linux.Size() == 0 {
		return nil, errors.New("uki: no kernel (Options.Linux is empty)")
	}
	var secs []section
	add := func(name string, b Blob) {
		if b != nil && b.Size() > 0 {
			secs = append(secs, section{name: name, blob: b})
		}
	}
	add(".osrel", Bytes(o.OSRelease))
	add(".cmdline", Bytes(o.Cmdline))
	add(".uname", Bytes(o.Uname))
	add(".linux", o.Linux)
	add(".initrd", o.Initrd)

	stub := o.Stub
	le := binary.LittleEndian
	if len(stub) < 0x40 || string(stub[:2]) != "MZ" {
		return nil, fmt.Errorf("uki: stub is not a PE file: no MZ header in %d bytes", len(stub))
	}
	pe := int(le.Uint32(stub[offLfanew:]))
	if pe+4+coffSize > len(stub) || string(stub[pe:pe+4]) != "PE\x00\x00" {
		return nil, fmt.Errorf("uki: stub is not a PE file: no PE signature at offset %#x", pe)
	}
	coff := pe + 4
	nsec := int(le.Uint16(stub[coff+2:]))
	optSize := int(le.Uint16(stub[coff+16:]))
	opt := coff + coffSize
	if optSize < optDirs || opt+optSize > len(stub) || le.Uint16(stub[opt:]) != magicPE32Plus {
		return nil, fmt.Errorf("uki: stub is not PE32+ (optional header of %d bytes at %#x)", optSize, opt)
	}
	if ndirs := le.Uint32(stub[opt+optNumDirs:]); ndirs > dirSecurity && optSize >= optDirs+8*(dirSecurity+1) {
		if le.Uint32(stub[opt+optDirs+8*dirSecurity+4:]) != 0 {
			return nil, errors.New("uki: stub is signed (certificate table present): appending sections would break the signature")
		}
	}
	sectAl := uint64(le.Uint32(stub[opt+optSectAlign:]))
	fileAl := uint64(le.Uint32(stub[opt+optFileAlign:]))
	if sectAl == 0 || fileAl == 0 || sectAl&(sectAl-1) != 0 || fileAl&(fileAl-1) != 0 {
		return nil, fmt.Errorf("uki: stub has invalid alignments: section %#x, file %#x", sectAl, fileAl)
	}
	hdrSize := uint64(le.Uint32(stub[opt+optSizeOfHdrs:]))
	table := opt + optSize
	if table+nsec*sectionHdrSize > len(stub) {
		return nil, fmt.Errorf("uki: stub's section table (%d entries at %#x) runs past its end", nsec, table)
	}

	// Ends of the stub's sections, in memory and in the file.
	vaEnd := uint64(le.Uint32(stub[opt+optSizeOfImage:]))
	rawEnd := uint64(len(stub)) // section data lies within the stub
	for i := range nsec {
		s := stub[table+i*sectionHdrSize:]
		name := string(bytes.TrimRight(s[:8], "\x00"))
		for _, n := range secs {
			if n.name == name {
				return nil, fmt.Errorf("uki: stub already has a %s section (is it a UKI already?)", name)
			}
		}
		vsize, va := uint64(le.Uint32(s[8:])), uint64(le.Uint32(s[12:]))
		rsize, rptr := uint64(le.Uint32(s[16:])), uint64(le.Uint32(s[20:]))
		vaEnd = max(vaEnd, va+max(vsize, rsize))
		if rptr+rsize > uint64(len(stub)) {
			return nil, fmt.Errorf("uki: stub's section %s (raw data %#x+%#x) runs past its end (%d bytes)", name, rptr, rsize, len(stub))
		}
	}
	need := uint64(table + (nsec+len(secs))*sectionHdrSize)
	if need > hdrSize || hdrSize > uint64(len(stub)) {
		return nil, fmt.Errorf("uki: no room for %d more section headers in the stub: need %d header bytes, SizeOfHeaders is %d", len(secs), need, hdrSize)
	}
	va, raw := alignUp(vaEnd, sectAl), alignUp(rawEnd, fileAl)
	l := &layout{
		head:     make([]byte, rawEnd),
		pad:      int64(raw - rawEnd),
		checkOff: opt + optCheckSum,
		fileAl:   uint32(fileAl),
	}
	copy(l.head, stub)
	h := l.head
	initData := uint64(le.Uint32(h[opt+optSizeInitData:]))
	for i := range secs {
		size := uint64(secs[i].blob.Size())
		rsize := alignUp(size, fileAl)
		if va+size > 1<<32 || raw+rsize > 1<<32 {
			return nil, fmt.Errorf("uki: image too large for PE32+: section %s of %d bytes ends past 4 GiB", secs[i].name, size)
		}
		secs[i].va, secs[i].raw = uint32(va), uint32(raw)
		e := h[table+(nsec+i)*sectionHdrSize:][:sectionHdrSize]
		clear(e)
		copy(e[0:8], secs[i].name)
		le.PutUint32(e[8:], uint32(size))   // VirtualSize
		le.PutUint32(e[12:], uint32(va))    // VirtualAddress
		le.PutUint32(e[16:], uint32(rsize)) // SizeOfRawData
		le.PutUint32(e[20:], uint32(raw))   // PointerToRawData
		le.PutUint32(e[36:], sectionFlags)  // Characteristics
		initData += rsize
		raw += rsize
		va = alignUp(va+max(size, rsize), sectAl)
	}
	le.PutUint16(h[coff+2:], uint16(nsec+len(secs)))
	le.PutUint32(h[opt+optSizeInitData:], uint32(min(initData, 1<<32-1)))
	le.PutUint32(h[opt+optSizeOfImage:], uint32(va))
	le.PutUint32(h[opt+optCheckSum:], 0)
	l.sections = secs
	l.size = int64(raw)
	return l, nil
}

// checkOSRelease requires the keys systemd-boot lists an entry by.
func checkOSRelease(s string) error {
	have := map[string]bool{}
	for line := range strings.Lines(s) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && strings.Trim(v, `"'`) != "" {
			have[k] = true
		}
	}
	for _, k := range []string{"NAME", "VERSION_ID"} {
		if !have[k] {
			return fmt.Errorf("uki: os-release lacks %s= (systemd-boot needs NAME and VERSION_ID)", k)
		}
	}
	return nil
}

// wordSum adds the little-endian 16-bit words of p, which starts at an even
// file offset, to a running total. odd carries a dangling low byte between
// calls; the caller feeds chunks in order.
type wordSum struct {
	total uint64
	odd   int // -1: none; else the pending low byte
	n     int64
}

func newWordSum() *wordSum { return &wordSum{odd: -1} }

func (s *wordSum) Write(p []byte) (int, error) {
	n := len(p)
	s.n += int64(n)
	if s.odd >= 0 && len(p) > 0 {
		s.total += uint64(s.odd) | uint64(p[0])<<8
		s.odd, p = -1, p[1:]
	}
	// Eight bytes at a time: two 32-bit lanes each collect two words per
	// step and are emptied before they can overflow.
	const lanes = 0x0000ffff0000ffff
	for len(p) >= 8 {
		var acc uint64
		n := min(len(p)/8, 1<<14)
		for i := 0; i < n*8; i += 8 {
			v := binary.LittleEndian.Uint64(p[i:])
			acc += v&lanes + (v>>16)&lanes
		}
		s.total += acc&0xffffffff + acc>>32
		p = p[n*8:]
	}
	for len(p) >= 2 {
		s.total += uint64(p[0]) | uint64(p[1])<<8
		p = p[2:]
	}
	if len(p) == 1 {
		s.odd = int(p[0])
	}
	return n, nil
}

// sum returns the total including a dangling byte (as if zero padded).
func (s *wordSum) sum() uint64 {
	if s.odd >= 0 {
		return s.total + uint64(s.odd)
	}
	return s.total
}

// fold reduces a sum of 16-bit words the way the PE checksum's end-around
// carry does: the result is total mod 0xffff, written as 0xffff rather than
// 0 unless every word was zero.
func fold(total uint64) uint32 {
	if total == 0 {
		return 0
	}
	return uint32((total-1)%0xffff + 1)
}

// checksum returns the PE image checksum of a whole file: the folded sum
// of its 16-bit words with the CheckSum field (at checkOff) taken as zero,
// plus the file length.
func checksum(file []byte, checkOff int) uint32 {
	s := newWordSum()
	s.Write(file[:checkOff])
	s.Write([]byte{0, 0, 0, 0})
	s.Write(file[checkOff+4:])
	return fold(s.sum()) + uint32(len(file))
}

// sumBlob reads b once and returns its word sum, checking its length.
func sumBlob(name string, b Blob) (uint64, error) {
	r, err := b.Open()
	if err != nil {
		return 0, fmt.Errorf("uki: open %s: %w", name, err)
	}
	defer r.Close()
	s := newWordSum()
	if _, err := io.Copy(s, r); err != nil {
		return 0, fmt.Errorf("uki: read %s: %w", name, err)
	}
	if s.n != b.Size() {
		return 0, fmt.Errorf("uki: read %s: got %d bytes, Size says %d", name, s.n, b.Size())
	}
	return s.sum(), nil
}

// Build writes the UKI described by o to w. It writes sequentially and never
// seeks; on error w may hold a prefix of the image (write to a temporary
// file and rename). Each blob is read twice: once for the checksum, once to
// copy; a blob that changes in between is an error.
func Build(w io.Writer, o Options) error {
	l, err := plan(o)
	if err != nil {
		return err
	}
	// The sections' data starts on FileAlignment (even) offsets and the
	// padding is zero, so each part's word sum can be taken on its own.
	hs := newWordSum()
	hs.Write(l.head)
	total := hs.sum()
	sums := make([]uint64, len(l.sections))
	for i, s := range l.sections {
		if sums[i], err = sumBlob(s.name, s.blob); err != nil {
			return err
		}
		total += sums[i]
	}
	binary.LittleEndian.PutUint32(l.head[l.checkOff:], fold(total)+uint32(l.size))

	bw := bufio.NewWriterSize(w, 1<<20)
	zeros := make([]byte, l.fileAl)
	if _, err := bw.Write(l.head); err != nil {
		return fmt.Errorf("uki: write stub: %w", err)
	}
	if _, err := bw.Write(zeros[:l.pad]); err != nil {
		return fmt.Errorf("uki: write padding: %w", err)
	}
	for i, s := range l.sections {
		if err := copySection(bw, s, sums[i], zeros); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("uki: write: %w", err)
	}
	return nil
}

// copySection writes one section's data and padding, checking that the
// data still has the word sum it had when the checksum was taken.
func copySection(w io.Writer, s section, want uint64, zeros []byte) error {
	r, err := s.blob.Open()
	if err != nil {
		return fmt.Errorf("uki: open %s: %w", s.name, err)
	}
	defer r.Close()
	sum := newWordSum()
	n, err := io.Copy(io.MultiWriter(w, sum), r)
	if err != nil {
		return fmt.Errorf("uki: copy %s: %w", s.name, err)
	}
	if n != s.blob.Size() || sum.sum() != want {
		return fmt.Errorf("uki: copy %s: contents changed since the checksum pass (%d bytes, Size says %d)", s.name, n, s.blob.Size())
	}
	pad := alignUp(uint64(n), uint64(len(zeros))) - uint64(n)
	if _, err := w.Write(zeros[:pad]); err != nil {
		return fmt.Errorf("uki: write padding after %s: %w", s.name, err)
	}
	return nil
}

// Size returns the number of bytes Build(w, o) writes, without reading the
// blobs' contents.
func Size(o Options) (int64, error) {
	l, err := plan(o)
	if err != nil {
		return 0, err
	}
	return l.size, nil
}
