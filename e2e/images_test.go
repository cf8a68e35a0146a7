package e2e

import (
	"bytes"
	"debug/elf"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/cpio"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/imagebuild/uki"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/resolve"
)

// baseImage is the default testos image (make image) and its payloads'
// raw blob files.
type baseImage struct {
	Dir            string
	Info           osimage.ProductInfo
	Kernel, System string // paths of the payloads' blob files
}

// loadBase reads the default image afresh each time: `make image` may
// replace it between tests.
func loadBase() (baseImage, error) {
	dir, err := resolve.Find(resolve.Image(""))
	if err != nil {
		return baseImage{}, err
	}
	img, err := osimage.Open(dir)
	if err != nil {
		return baseImage{}, err
	}
	b := baseImage{Dir: dir, Info: img.Config().ProductInfo}
	for name, dst := range map[string]*string{osimage.PayloadKernel: &b.Kernel, osimage.PayloadSystem: &b.System} {
		p, err := img.PayloadUnverified(name)
		if err != nil {
			return baseImage{}, fmt.Errorf("the default image must be uncompressed: %w", err)
		}
		rc, err := p.Open()
		if err != nil {
			return baseImage{}, err
		}
		f, ok := rc.(*os.File)
		rc.Close()
		if !ok {
			return baseImage{}, fmt.Errorf("payload %s is not a file", name)
		}
		*dst = f.Name()
	}
	return b, nil
}

// base returns the default image, skipping (failing in CI) without it.
func base(t testing.TB) baseImage {
	t.Helper()
	b, err := loadBase()
	if err != nil {
		needs.File(t, "out/testos", "run make image: "+err.Error())
		t.Fatal(err)
	}
	return b
}

// writeImage writes an OS image of the given payload files to a new
// directory below parent.
func writeImage(t testing.TB, parent string, info osimage.ProductInfo, kernel, system, compression string) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "image-")
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "image")
	if err := osimage.Write(dir, info, []osimage.PayloadSource{
		{Name: osimage.PayloadKernel, Path: kernel, Compression: compression},
		{Name: osimage.PayloadSystem, Path: system, Compression: compression},
	}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyFile copies src to dst (a real copy: the result may be modified).
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// flipByte inverts one bit of the byte at off in path.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// systemCorruptOffset lies 1 MiB into the system payload: inside the EROFS
// file system's data (a few MiB), away from its superblock, so the node
// mounts it and dm-verity finds the flipped bit when the agent reads every
// block back.
const systemCorruptOffset = 1<<20 + 123

// verityImage is a consistent image (its chunk hashes match) whose system
// payload has one bit flipped, so that its dm-verity root hash, baked into
// the UKI's command line, no longer matches: only the node can tell.
func verityImage(t testing.TB) string {
	t.Helper()
	b := base(t)
	sys := filepath.Join(t.TempDir(), "system")
	copyFile(t, b.System, sys)
	flipByte(t, sys, systemCorruptOffset)
	return writeImage(t, t.TempDir(), b.Info, b.Kernel, sys, "")
}

// corruptBlobImage is a copy of the default layout below parent with one
// bit of the system blob flipped: its digest and chunk hash no longer match.
func corruptBlobImage(t testing.TB, parent string) string {
	t.Helper()
	b := base(t)
	dir := filepath.Join(parent, "corrupt-image")
	err := filepath.WalkDir(b.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.Dir, p)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		copyFile(t, p, dst)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(b.Dir, b.System)
	flipByte(t, filepath.Join(dir, rel), systemCorruptOffset)
	return dir
}

// panicImage is the default image with an initramfs whose /init exits at
// once: the kernel panics ("Attempted to kill init!"). The UKI keeps the
// default kernel, command line (console=ttyS0 quiet panic=-1 ...) and
// os-release; only the initramfs changes.
func panicImage(t testing.TB) string {
	t.Helper()
	b := base(t)
	// The runfile under Bazel (E2E_DATA), else make fetch's.
	stubPath, err := resolve.Find(resolve.Stub(""))
	if err != nil {
		needs.File(t, "third_party/cache/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub", err.Error())
	}
	stub, err := os.ReadFile(stubPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := pe.Open(b.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	section := func(name string) []byte {
		s := f.Section(name)
		if s == nil {
			t.Fatalf("UKI %s has no %s section", b.Kernel, name)
		}
		data, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		return data[:min(int(s.VirtualSize), len(data))]
	}
	var initrd bytes.Buffer
	w := cpio.NewWriter(&initrd, 0)
	for _, err := range []error{
		w.Dir("dev", 0o755),
		w.CharDev("dev/console", 0o600, 5, 1),
		w.File("init", 0o755, exitELF(1)),
		w.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	kernel := filepath.Join(t.TempDir(), "kernel.efi")
	out, err := os.Create(kernel)
	if err != nil {
		t.Fatal(err)
	}
	err = uki.Build(out, uki.Options{
		Stub:      stub,
		OSRelease: string(section(".osrel")),
		Cmdline:   string(section(".cmdline")),
		Uname:     string(section(".uname")),
		Linux:     uki.Bytes(section(".linux")),
		Initrd:    uki.Bytes(initrd.Bytes()),
	})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return writeImage(t, t.TempDir(), b.Info, kernel, b.System, "")
}

// exitELF returns a static x86-64 ELF executable of 132 bytes that calls
// exit(status): one PT_LOAD segment mapping the file at 0x400000, the code
// right after the headers (System V ABI, ELF-64 object file format).
func exitELF(status byte) []byte {
	const base = 0x400000
	hdr := binary.Size(elf.Header64{})
	ph := binary.Size(elf.Prog64{})
	code := []byte{
		0xbf, status, 0, 0, 0, // mov edi, status
		0xb8, 60, 0, 0, 0, // mov eax, 60 (exit)
		0x0f, 0x05, // syscall
	}
	size := uint64(hdr + ph + len(code))
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Entry: base + uint64(hdr+ph), Phoff: uint64(hdr),
		Ehsize: uint16(hdr), Phentsize: uint16(ph), Phnum: 1,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	p := elf.Prog64{
		Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X),
		Vaddr: base, Paddr: base, Filesz: size, Memsz: size, Align: 0x1000,
	}
	binary.Write(&b, binary.LittleEndian, h)
	binary.Write(&b, binary.LittleEndian, p)
	b.Write(code)
	return b.Bytes()
}

// TestExitELF checks the hand-made executable with debug/elf; the kernel
// running it is TestFailFast/KernelPanic's business.
func TestExitELF(t *testing.T) {
	b := exitELF(1)
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC || len(f.Progs) != 1 {
		t.Fatalf("class %v machine %v type %v, %d program headers", f.Class, f.Machine, f.Type, len(f.Progs))
	}
	p := f.Progs[0]
	if off := f.Entry - p.Vaddr; p.Type != elf.PT_LOAD || off >= p.Filesz || p.Filesz != uint64(len(b)) {
		t.Fatalf("entry %#x outside the loaded segment %+v", f.Entry, p.ProgHeader)
	}
}
