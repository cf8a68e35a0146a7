package uki

import (
	"bytes"
	"crypto/sha256"
	"debug/pe"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qcluster/qcluster/imagebuild/cpio"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/internal/testvm"
)

const osRelease = "ID=qcluster\nNAME=\"qcluster test OS\"\nVERSION_ID=1\n"

// root is the unpacked third_party cache, relative to this package.
const root = "../../third_party/cache/root"

func stub(t testing.TB) []byte {
	t.Helper()
	p := root + "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	needs.File(t, p, "run make fetch")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testOptions(t testing.TB) Options {
	return Options{
		Stub:      stub(t),
		OSRelease: osRelease,
		Cmdline:   "console=ttyS0 quiet",
		Uname:     "6.1.0-test",
		Linux:     Bytes(bytes.Repeat([]byte("kernel!"), 100001)), // odd length
		Initrd:    Bytes(bytes.Repeat([]byte{0xff}, 4097)),
	}
}

func build(t testing.TB, o Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(&buf, o); err != nil {
		t.Fatalf("Build: %v", err)
	}
	n, err := Size(o)
	if err != nil {
		t.Fatalf("Size: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("Size = %d, Build wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

// checkOffset finds the CheckSum field the way a reader of the spec would.
func checkOffset(b []byte) int {
	return int(binary.LittleEndian.Uint32(b[0x3c:])) + 4 + 20 + 64
}

func TestChecksumOfStub(t *testing.T) {
	s := stub(t)
	off := checkOffset(s)
	if got, want := checksum(s, off), binary.LittleEndian.Uint32(s[off:]); got != want {
		t.Fatalf("checksum of the stub = %#x, its header says %#x", got, want)
	}
}

func TestBuildReadBack(t *testing.T) {
	o := testOptions(t)
	img := build(t, o)
	f, err := pe.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("debug/pe: %v", err)
	}
	oh := f.OptionalHeader.(*pe.OptionalHeader64)
	stubFile, err := pe.NewFile(bytes.NewReader(o.Stub))
	if err != nil {
		t.Fatal(err)
	}
	nStub := len(stubFile.Sections)
	want := []struct {
		name string
		data []byte
	}{
		{".osrel", []byte(o.OSRelease)},
		{".cmdline", []byte(o.Cmdline)},
		{".uname", []byte(o.Uname)},
		{".linux", o.Linux.(Bytes)},
		{".initrd", o.Initrd.(Bytes)},
	}
	if len(f.Sections) != nStub+len(want) || int(f.FileHeader.NumberOfSections) != len(f.Sections) {
		t.Fatalf("%d sections (header says %d), want %d", len(f.Sections), f.FileHeader.NumberOfSections, nStub+len(want))
	}
	prevEnd := uint32(0)
	for _, s := range f.Sections[:nStub] {
		prevEnd = max(prevEnd, s.VirtualAddress+max(s.VirtualSize, s.Size))
	}
	var initData uint32
	for i, w := range want {
		s := f.Sections[nStub+i]
		if s.Name != w.name {
			t.Errorf("section %d is %q, want %q", nStub+i, s.Name, w.name)
		}
		got, err := s.Data()
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if int(s.VirtualSize) != len(w.data) || !bytes.Equal(got[:s.VirtualSize], w.data) {
			t.Errorf("%s: contents differ (%d bytes, want %d)", s.Name, s.VirtualSize, len(w.data))
		}
		if s.VirtualAddress%oh.SectionAlignment != 0 || s.VirtualAddress < prevEnd {
			t.Errorf("%s: VirtualAddress %#x not aligned to %#x or below the previous end %#x", s.Name, s.VirtualAddress, oh.SectionAlignment, prevEnd)
		}
		if s.Offset%oh.FileAlignment != 0 || s.Size%oh.FileAlignment != 0 {
			t.Errorf("%s: raw data at %#x size %#x not aligned to %#x", s.Name, s.Offset, s.Size, oh.FileAlignment)
		}
		if s.Characteristics != pe.IMAGE_SCN_CNT_INITIALIZED_DATA|pe.IMAGE_SCN_MEM_READ {
			t.Errorf("%s: characteristics %#x", s.Name, s.Characteristics)
		}
		prevEnd = s.VirtualAddress + max(s.VirtualSize, s.Size)
		initData += s.Size
	}
	last := f.Sections[len(f.Sections)-1]
	if oh.SizeOfImage%oh.SectionAlignment != 0 || oh.SizeOfImage < last.VirtualAddress+last.VirtualSize {
		t.Errorf("SizeOfImage %#x does not cover the last section (%#x+%#x)", oh.SizeOfImage, last.VirtualAddress, last.VirtualSize)
	}
	if int64(last.Offset+last.Size) != int64(len(img)) {
		t.Errorf("file is %d bytes, last section ends at %d", len(img), last.Offset+last.Size)
	}
	stubOH := stubFile.OptionalHeader.(*pe.OptionalHeader64)
	if oh.SizeOfInitializedData != stubOH.SizeOfInitializedData+initData {
		t.Errorf("SizeOfInitializedData %#x, want %#x", oh.SizeOfInitializedData, stubOH.SizeOfInitializedData+initData)
	}
	if got := checksum(img, checkOffset(img)); got != oh.CheckSum {
		t.Errorf("CheckSum %#x, recomputed %#x", oh.CheckSum, got)
	}
	// The stub's own sections are unchanged.
	if !bytes.Equal(img[oh.SizeOfHeaders:len(o.Stub)], o.Stub[oh.SizeOfHeaders:]) {
		t.Error("stub sections changed")
	}
}

func TestObjdump(t *testing.T) {
	objdump := needs.Tool(t, "objdump", "binutils")
	o := testOptions(t)
	p := filepath.Join(t.TempDir(), "uki.efi")
	if err := os.WriteFile(p, build(t, o), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(objdump, "-h", p).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump -h: %v\n%s", err, out)
	}
	sizes := map[string]int64{}
	for line := range strings.Lines(string(out)) {
		var idx int
		var name string
		var size int64
		if n, _ := fmt.Sscanf(line, "%d %s %x", &idx, &name, &size); n == 3 {
			sizes[name] = size
		}
	}
	for name, want := range map[string]int64{".osrel": int64(len(o.OSRelease)), ".cmdline": int64(len(o.Cmdline)),
		".uname": int64(len(o.Uname)), ".linux": o.Linux.Size(), ".initrd": o.Initrd.Size(), ".sdmagic": -1} {
		got, ok := sizes[name]
		if !ok || (want >= 0 && got != want) {
			t.Errorf("objdump: section %s size %d (listed %v), want %d\n%s", name, got, ok, want, out)
		}
	}
	// objdump -p validates the headers it prints; the checksum is one of them.
	out, err = exec.Command(objdump, "-p", p).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump -p: %v\n%s", err, out)
	}
}

func TestDeterministic(t *testing.T) {
	o := testOptions(t)
	a, b := sha256.Sum256(build(t, o)), sha256.Sum256(build(t, o))
	if a != b {
		t.Fatalf("two builds differ: %x, %x", a, b)
	}
	o.Cmdline += " x"
	if c := sha256.Sum256(build(t, o)); c == a {
		t.Fatal("a different command line gave the same image")
	}
}

func TestOptionalSectionsOmitted(t *testing.T) {
	o := testOptions(t)
	o.Cmdline, o.Uname, o.Initrd = "", "", nil
	f, err := pe.NewFile(bytes.NewReader(build(t, o)))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{".cmdline", ".uname", ".initrd"} {
		if f.Section(n) != nil {
			t.Errorf("empty %s present", n)
		}
	}
	if f.Section(".linux") == nil || f.Section(".osrel") == nil {
		t.Error(".linux or .osrel missing")
	}
}

// changing is a Blob whose second read differs from the first.
type changing struct{ n int }

func (c *changing) Size() int64 { return 8 }
func (c *changing) Open() (io.ReadCloser, error) {
	c.n++
	return io.NopCloser(bytes.NewReader(bytes.Repeat([]byte{byte(c.n)}, 8))), nil
}

func TestErrors(t *testing.T) {
	good := testOptions(t)
	le := binary.LittleEndian
	pe0 := int(le.Uint32(good.Stub[0x3c:]))
	opt := pe0 + 24
	edit := func(f func(b []byte)) []byte {
		b := bytes.Clone(good.Stub)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no NAME", func(o *Options) { o.OSRelease = "VERSION_ID=1\n" }, "lacks NAME="},
		{"no VERSION_ID", func(o *Options) { o.OSRelease = "NAME=x\nVERSION=1\n" }, "lacks VERSION_ID="},
		{"no kernel", func(o *Options) { o.Linux = nil }, "no kernel"},
		{"not PE", func(o *Options) { o.Stub = []byte("#!/bin/sh\n") }, "not a PE file"},
		{"PE32", func(o *Options) { o.Stub = edit(func(b []byte) { le.PutUint16(b[opt:], 0x10b) }) }, "not PE32+"},
		{"no header room", func(o *Options) {
			o.Stub = edit(func(b []byte) { le.PutUint32(b[opt+60:], 0x300) })
		}, "no room for 5 more section headers"},
		{"signed", func(o *Options) {
			o.Stub = edit(func(b []byte) { le.PutUint32(b[opt+112+8*4+4:], 0x100) })
		}, "stub is signed"},
		{"already a UKI", func(o *Options) { o.Stub = build(t, good) }, "stub already has a .osrel section"},
		{"short blob", func(o *Options) { o.Initrd = shortBlob{} }, "got 3 bytes, Size says 10"},
		{"changing blob", func(o *Options) { o.Initrd = &changing{} }, "contents changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			err := Build(io.Discard, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error: %q", err)
			}
		})
	}
}

type shortBlob struct{}

func (shortBlob) Size() int64                  { return 10 }
func (shortBlob) Open() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("abc")), nil }

// TestBoot boots a UKI from an ESP under OVMF and waits for its init's marker.
func TestBoot(t *testing.T) {
	needs.Short(t, "boots a VM under TCG")
	mkfs := needs.Tool(t, "mkfs.vfat", "dosfstools")
	mcopy := needs.Tool(t, "mcopy", "mtools")
	mmd := needs.Tool(t, "mmd", "mtools")
	abi, err := os.ReadFile("../../third_party/cache/kernel")
	if err != nil {
		needs.File(t, "../../third_party/cache/kernel", "run make fetch")
	}
	vmlinuz := root + "/boot/vmlinuz-" + strings.TrimSpace(string(abi))
	needs.File(t, vmlinuz, "run make fetch")
	dir := t.TempDir()

	// The init: a static Go binary.
	initBin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "./testdata/init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build init: %v\n%s", err, out)
	}
	initData, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	var initrd bytes.Buffer
	cw := cpio.NewWriter(&initrd, 0)
	for _, err := range []error{
		cw.Dir("dev", 0o755),
		cw.CharDev("dev/console", 0o600, 5, 1),
		cw.Dir("proc", 0o755),
		cw.File("init", 0o755, initData),
		cw.Close(),
	} {
		if err != nil {
			t.Fatalf("cpio: %v", err)
		}
	}
	kernel, err := os.ReadFile(vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "qcluster-uki-test: init reached, cmdline: "
	cmdline := "console=ttyS0 panic=-1 uki_test_marker=42"
	o := Options{Stub: stub(t), OSRelease: osRelease, Cmdline: cmdline, Uname: strings.TrimSpace(string(abi)),
		Linux: Bytes(kernel), Initrd: Bytes(initrd.Bytes())}
	ukiPath := filepath.Join(dir, "uki.efi")
	start := time.Now()
	f, err := os.Create(ukiPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := Build(f, o); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(ukiPath)
	t.Logf("UKI of %d bytes (kernel %d, initrd %d) built in %v", st.Size(), len(kernel), initrd.Len(), time.Since(start))

	esp := filepath.Join(dir, "esp.img")
	for _, argv := range [][]string{
		{mkfs, "-C", "-n", "ESP", "-i", "12345678", esp, "32768"},
		{mmd, "-i", esp, "::/EFI", "::/EFI/BOOT"},
		{mcopy, "-i", esp, ukiPath, "::/EFI/BOOT/BOOTX64.EFI"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%q: %v\n%s", argv, err, out)
		}
	}
	start = time.Now()
	console, werr := testvm.BootUEFI(t, esp, 120*time.Second)
	found := false
	for _, line := range console {
		if strings.HasPrefix(line, marker) {
			found = true
			if !strings.Contains(line, "uki_test_marker=42") {
				t.Errorf("init saw a different command line: %q", line)
			}
		}
	}
	if !found {
		t.Fatalf("no marker on the serial console (%v)\nlast lines:\n%s", werr, testvm.Tail(console, 30))
	}
	if werr != nil {
		t.Errorf("after power-off: %v", werr)
	}
	t.Logf("marker after %v", time.Since(start))
}

// BenchmarkBuild assembles a UKI with a 16 MiB kernel and a 4 MiB initrd.
func BenchmarkBuild(b *testing.B) {
	o := testOptions(b)
	o.Linux = Bytes(make([]byte, 16<<20))
	o.Initrd = Bytes(make([]byte, 4<<20))
	b.SetBytes(20 << 20)
	for b.Loop() {
		if err := Build(io.Discard, o); err != nil {
			b.Fatal(err)
		}
	}
}
