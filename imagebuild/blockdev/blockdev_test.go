package blockdev

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
)

// devices is the shared table: every implementation must pass the same tests.
var devices = []struct {
	name string
	new  func(t *testing.T, size int64) BlockDev
}{
	{"memory", func(t *testing.T, size int64) BlockDev { return NewMemory(size) }},
	{"file", func(t *testing.T, size int64) BlockDev { return newFile(t, size) }},
	{"section-of-file", func(t *testing.T, size int64) BlockDev {
		s, err := NewSection(newFile(t, size+8192), 4096, size)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
	{"section-of-memory", func(t *testing.T, size int64) BlockDev {
		s, err := NewSection(NewMemory(size+1024), 512, size)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

func newFile(t *testing.T, size int64) *File {
	t.Helper()
	f, err := Create(filepath.Join(t.TempDir(), "dev"), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func random(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

func readAll(t *testing.T, d BlockDev) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDevices(t *testing.T) {
	const size = 1 << 20
	for _, impl := range devices {
		t.Run(impl.name, func(t *testing.T) {
			d := impl.new(t, size)
			if d.Size() != size {
				t.Fatalf("Size() = %d, want %d", d.Size(), size)
			}
			if bs := d.BlockSize(); bs < SectorSize || bs&(bs-1) != 0 {
				t.Fatalf("BlockSize() = %d, want a power of two ≥ %d", bs, SectorSize)
			}
			want := make([]byte, size)
			if !bytes.Equal(readAll(t, d), want) {
				t.Fatal("a new device does not read as zeroes")
			}

			// Writes inside the device land; writes across its end write nothing.
			data := random(3000, 1)
			for _, off := range []int64{0, 5000, size - 3000} {
				if n, err := d.WriteAt(data, off); err != nil || n != len(data) {
					t.Fatalf("WriteAt(%d) = %d, %v", off, n, err)
				}
				copy(want[off:], data)
			}
			if _, err := d.WriteAt(data, size-100); !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("WriteAt across the end: err = %v, want ErrOutOfRange", err)
			}
			if _, err := d.WriteAt(data, -1); !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("WriteAt(-1): err = %v, want ErrOutOfRange", err)
			}
			if !bytes.Equal(readAll(t, d), want) {
				t.Fatal("contents differ after writes")
			}

			// Reads are clipped at the end with io.EOF.
			buf := make([]byte, 20)
			if n, err := d.ReadAt(buf, size-10); n != 10 || err != io.EOF {
				t.Fatalf("ReadAt across the end = %d, %v; want 10, EOF", n, err)
			}
			if n, err := d.ReadAt(buf, size); n != 0 || err != io.EOF {
				t.Fatalf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
			}

			// Zero clears exactly its range, including partial blocks.
			if err := d.Zero(5000+100, 2000); err != nil {
				t.Fatal(err)
			}
			clear(want[5100:7100])
			if err := d.Zero(size-10, 20); !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("Zero across the end: err = %v, want ErrOutOfRange", err)
			}
			if !bytes.Equal(readAll(t, d), want) {
				t.Fatal("contents differ after Zero")
			}

			// Copy from a plain reader goes through a buffer.
			src := random(70000, 2)
			m, err := Copy(d, 12345, bytes.NewReader(src), int64(len(src)))
			if err != nil || m != MethodReadWrite {
				t.Fatalf("Copy from a bytes.Reader = %v, %v; want %v", m, err, MethodReadWrite)
			}
			copy(want[12345:], src)

			// Copy from a file starts at the file's offset and advances it.
			f, err := os.Create(filepath.Join(t.TempDir(), "src"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fsrc := random(300000, 3)
			f.Write(fsrc)
			f.Seek(1000, io.SeekStart)
			m, err = Copy(d, 200000, f, 250000)
			if err != nil || m == MethodNone {
				t.Fatalf("Copy from a file = %v, %v", m, err)
			}
			if _, ok := d.(*Memory); ok && m != MethodReadWrite {
				t.Errorf("Copy into memory took %v, want %v", m, MethodReadWrite)
			}
			if pos, _ := f.Seek(0, io.SeekCurrent); pos != 251000 {
				t.Errorf("source offset after Copy = %d, want 251000", pos)
			}
			copy(want[200000:], fsrc[1000:251000])
			if !bytes.Equal(readAll(t, d), want) {
				t.Fatal("contents differ after Copy")
			}

			// A short source is an error, as is a range outside the device.
			if _, err := Copy(d, 0, bytes.NewReader(src[:10]), 11); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Copy from a short reader: err = %v, want io.ErrUnexpectedEOF", err)
			}
			f.Seek(int64(len(fsrc))-10, io.SeekStart)
			if _, err := Copy(d, 0, f, 11); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Copy from a short file: err = %v, want io.ErrUnexpectedEOF", err)
			}
			if _, err := Copy(d, size-5, bytes.NewReader(src), 10); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("Copy across the end: err = %v, want ErrOutOfRange", err)
			}
			if m, err := Copy(d, 0, bytes.NewReader(nil), 0); m != MethodNone || err != nil {
				t.Errorf("Copy of nothing = %v, %v; want none, nil", m, err)
			}
		})
	}
}

func TestSectionBounds(t *testing.T) {
	m := NewMemory(4096)
	for _, c := range []struct{ off, size int64 }{{-512, 512}, {0, 4608}, {4096, 512}, {100, 512}, {0, 100}} {
		if _, err := NewSection(m, c.off, c.size); err == nil {
			t.Errorf("NewSection(%d, %d) of a 4096-byte device succeeded", c.off, c.size)
		}
	}
	s, err := NewSection(m, 512, 1024)
	if err != nil {
		t.Fatal(err)
	}
	s.WriteAt([]byte{1}, 0)
	if m.Bytes()[512] != 1 {
		t.Fatal("a section write did not land at the section's offset")
	}
}

func TestFileStaysSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	d, err := Create(path, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if a := blockdevtest.Allocated(t, path); a != 0 {
		t.Fatalf("a new 64 MiB device allocates %d bytes, want 0", a)
	}
	d.WriteAt(random(1<<20, 4), 8<<20)
	if a := blockdevtest.Allocated(t, path); a < 1<<20 || a > 1<<20+64<<10 {
		t.Fatalf("after a 1 MiB write the device allocates %d bytes", a)
	}
	if err := d.Zero(8<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if a := blockdevtest.Allocated(t, path); a != 0 {
		t.Fatalf("after Zero the device allocates %d bytes, want 0 (hole punched)", a)
	}
	if _, err := Create(path, 512); err == nil {
		t.Fatal("Create over an existing file succeeded")
	}
	if _, err := Create(filepath.Join(t.TempDir(), "odd"), 1000); err == nil {
		t.Fatal("Create with a size that is not a multiple of 512 succeeded")
	}
}

func TestMethodString(t *testing.T) {
	for m, want := range map[Method]string{MethodNone: "none", MethodReflink: "reflink (FICLONERANGE)",
		MethodCopyFileRange: "copy_file_range", MethodReadWrite: "read/write", Method(9): "Method(9)"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), want)
		}
	}
}
