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
	"bytes"
	"io"
)

// Blob is a sized source of bytes that can be read more than once. Build
// opens each blob twice (once for the checksum, once to copy) and fails if
// the two reads differ in length or content sum.
type Blob interface {
	// Size is the length in bytes.
	Size() int64
	// Open returns a reader of exactly Size bytes; the caller closes it.
	Open() (io.ReadCloser, error)
}

// Bytes is a Blob held in memory.
type Bytes []byte

// Size returns len(b).
func (b Bytes) Size() int64 { return int64(len(b)) }

// Open returns a reader of b.
func (b Bytes) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }

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

// Build writes the UKI described by o to w. It writes sequentially and never
// seeks; on error w may hold a prefix of the image (write to a temporary
// file and rename).
func Build(w io.Writer, o Options) error {
	panic("not implemented yet")
}

// Size returns the number of bytes Build(w, o) writes, without reading the
// blobs' contents.
func Size(o Options) (int64, error) {
	panic("not implemented yet")
}
