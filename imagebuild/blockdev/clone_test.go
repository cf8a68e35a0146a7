package blockdev

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCloneFile: the clone has the source's bytes, keeps its holes, and an
// odd-sized file (not a whole number of sectors) copies too.
func TestCloneFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	rand.Read(data)
	const size = 256<<20 + 17
	for _, off := range []int64{0, 100 << 20, size - 1<<20 - 17} {
		if _, err := f.WriteAt(data[:1<<20], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(dir, "dst")
	t0 := time.Now()
	m, err := CloneFile(dst, src, 0o600)
	_ = t0
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("method: %s", m)
	if out, err := exec.Command("cmp", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cmp: %v: %s", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Fatalf("size %d, want %d", st.Size, size)
	}
	if used := st.Blocks * 512; used > 16<<20 {
		t.Errorf("clone uses %d bytes for 3 MiB of data: holes were filled", used)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	// du agrees (an independent reading of the allocation).
	out, err := exec.Command("du", "-k", dst).Output()
	if err == nil {
		kb, _ := strconv.Atoi(strings.Fields(string(out))[0])
		if kb > 16<<10 {
			t.Errorf("du says %d KiB", kb)
		}
	}

	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("1519 bytes?"), 0o644)
	if _, err := CloneFile(small+".copy", small, 0o400); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(small + ".copy"); !bytes.Equal(b, []byte("1519 bytes?")) {
		t.Errorf("small copy: %q", b)
	}
	if _, err := CloneFile(filepath.Join(dir, "x"), filepath.Join(dir, "missing"), 0o600); err == nil {
		t.Error("clone of a missing file: no error")
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("failed clone left its target")
	}
}

// sparseSource writes a 3 GiB sparse file with data MiB of data spread
// over it, like a node's disk after boot.
func sparseSource(b *testing.B, data int) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for i := range data {
		if _, err := f.WriteAt(buf, int64(i)*(3<<30)/int64(data)); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(3 << 30); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkCloneFile: a restore's disk copy (no reflinks on ext4: the data
// extents are copied, holes skipped), against BenchmarkQcow2Overlay.
func BenchmarkCloneFile(b *testing.B) {
	src := sparseSource(b, 64)
	dir := b.TempDir()
	b.ResetTimer()
	for i := range b.N {
		if _, err := CloneFile(filepath.Join(dir, strconv.Itoa(i)), src, 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQcow2Overlay: the alternative, a qcow2 overlay on the snapshot's
// raw disk made by qemu-img (writes go to the overlay; reads of untouched
// clusters go through qcow2 to the raw file).
func BenchmarkQcow2Overlay(b *testing.B) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		b.Skip("no qemu-img")
	}
	src := sparseSource(b, 64)
	dir := b.TempDir()
	b.ResetTimer()
	for i := range b.N {
		out := filepath.Join(dir, strconv.Itoa(i)+".qcow2")
		if o, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", src, "-F", "raw", out).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, o)
		}
	}
}
