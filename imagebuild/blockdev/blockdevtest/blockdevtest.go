// Package blockdevtest holds test helpers for code that writes block devices:
// a reflink-capable XFS file system on a loop device, a check that two
// files share extents, what a file allocates, a blob's contents, and
// reproducible contents. It
// shells out to mkfs.xfs, losetup, mount and filefrag, and skips (or, in CI,
// fails) the test when they are missing.
package blockdevtest

import (
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qcluster/qcluster/internal/needs"
)

// XFSSize is the size, in bytes, of the sparse loop file behind XFS; mkfs.xfs
// refuses file systems under 300 MiB.
const XFSSize = 2 << 30

// XFS makes a reflink-capable XFS file system (mkfs.xfs -m reflink=1) in a
// sparse file under t.TempDir(), mounts it through a loop device and returns
// the mount point. Unmount and loop detach are registered with t.Cleanup.
func XFS(t testing.TB) string {
	t.Helper()
	needs.Loop(t)
	needs.Tool(t, "mkfs.xfs", "xfsprogs")
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(XFSSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.xfs", "-q", "-m", "reflink=1", img)
	loop := strings.TrimSpace(run(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	run(t, "mount", "-t", "xfs", loop, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// SharedExtents returns how many of path's extents filefrag -v marks
// "shared" (FIEMAP_EXTENT_SHARED).
func SharedExtents(t testing.TB, path string) int {
	t.Helper()
	needs.Tool(t, "filefrag", "e2fsprogs")
	out := run(t, "filefrag", "-v", path)
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "shared") {
			n++
		}
	}
	return n
}

// Allocated returns the bytes the file system allocated for path.
func Allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// Read returns all of what b opens (a blockdev.Blob, an OS image's
// payload).
func Read(t testing.TB, b interface{ Open() (io.ReadCloser, error) }) []byte {
	t.Helper()
	rc, err := b.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Pattern returns size reproducible bytes: the same for the same size and
// seed.
func Pattern(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(size)))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// run runs a command and returns its stdout, failing t with its stderr.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
