package blockdev_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
)

// payload writes n random bytes to dir/name and returns the open file.
func payload(t *testing.T, dir string, n int) (*os.File, []byte) {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	path := filepath.Join(dir, "payload")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, b
}

// copyInto copies src into a new device at off and checks the bytes.
func copyInto(t *testing.T, dir string, src *os.File, want []byte, off int64) (blockdev.Method, string) {
	t.Helper()
	path := filepath.Join(dir, "disk")
	os.Remove(path)
	d, err := blockdev.Create(path, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	src.Seek(0, 0)
	m, err := blockdev.Copy(d, off, src, int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	d.ReadAt(got, off)
	if !bytes.Equal(got, want) {
		t.Fatalf("copy via %v: bytes differ", m)
	}
	return m, path
}

func fsType(t *testing.T, dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type
}

// On ext4 (the repository's file system) there is no reflink: copy_file_range copies.
func TestCopyExt4(t *testing.T) {
	dir := t.TempDir()
	if fsType(t, dir) != unix.EXT4_SUPER_MAGIC {
		t.Skipf("%s is not on ext4", dir)
	}
	src, want := payload(t, dir, 8<<20+123)
	if m, _ := copyInto(t, dir, src, want, 1<<20); m != blockdev.MethodCopyFileRange {
		t.Errorf("aligned copy on ext4 took %v, want %v", m, blockdev.MethodCopyFileRange)
	}
}

// On XFS with reflink=1 an aligned copy shares extents with its source; an
// unaligned one falls back to copy_file_range; across file systems to read/write.
func TestCopyXFS(t *testing.T) {
	mnt := blockdevtest.XFS(t)
	src, want := payload(t, mnt, 8<<20+123)

	m, path := copyInto(t, mnt, src, want, 1<<20)
	if m != blockdev.MethodReflink {
		t.Errorf("aligned copy on XFS took %v, want %v", m, blockdev.MethodReflink)
	}
	if n := blockdevtest.SharedExtents(t, path); n == 0 {
		t.Errorf("after a reflink copy, filefrag -v shows no shared extent in %s", path)
	}

	if m, _ := copyInto(t, mnt, src, want, 1<<20+512); m != blockdev.MethodCopyFileRange {
		t.Errorf("unaligned copy on XFS took %v, want %v", m, blockdev.MethodCopyFileRange)
	}

	other := t.TempDir()
	if fsType(t, other) == fsType(t, mnt) {
		t.Skip("the temporary directory is on XFS too")
	}
	if m, _ := copyInto(t, other, src, want, 1<<20); m != blockdev.MethodReadWrite {
		t.Errorf("copy from XFS to %s took %v, want %v", other, m, blockdev.MethodReadWrite)
	}
}
