package oci

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/qcluster/qcluster/internal/needs"
	"golang.org/x/sys/unix"
)

// mountXFS mounts a fresh XFS with reflink=1 on a loop file and returns the
// mount point; it is unmounted (and the loop device released) at cleanup.
func mountXFS(t *testing.T) string {
	t.Helper()
	needs.Loop(t)
	mkfs := needs.Tool(t, "mkfs.xfs", "xfsprogs")
	mount := needs.Tool(t, "mount", "mount")
	umount := needs.Tool(t, "umount", "mount")
	img := filepath.Join(t.TempDir(), "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 300<<20); err != nil { // the smallest XFS mkfs.xfs makes
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command(mount, "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop %s: %v: %s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(umount, mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// usedBytes returns the bytes in use on the file system holding path.
func usedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// TestPlaceFileReflinkXFS: on XFS with reflink=1 the writer clones the
// payload; filefrag (e2fsprogs, via FIEMAP) shows the blob's extents as
// shared, and the file system's used space does not grow by the payload.
func TestPlaceFileReflinkXFS(t *testing.T) {
	filefrag := needs.Tool(t, "filefrag", "e2fsprogs")
	mnt := mountXFS(t)
	const size = 64 << 20
	data := randomBytes(t, size)
	src := filepath.Join(mnt, "payload")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	before := usedBytes(t, mnt)
	w, err := Create(filepath.Join(mnt, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	d, m, err := w.PlaceFile(src, "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.AddBlob("application/json", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ispecManifest(c, d)); err != nil {
		t.Fatal(err)
	}
	after := usedBytes(t, mnt)
	if m != MethodReflink {
		t.Fatalf("method %s on XFS with reflink=1, want %s", m, MethodReflink)
	}
	t.Logf("used space: %d bytes before, %d after placing %d bytes", before, after, size)
	if grew := after - before; grew >= size/2 {
		t.Errorf("used space grew by %d bytes for a %d-byte reflink", grew, size)
	}

	blob, err := BlobPath(filepath.Join(mnt, "layout"), d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filefrag, "-v", blob).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag -v %s: %v: %s", blob, err, out)
	}
	extents, shared := 0, 0
	for _, line := range strings.Split(string(out), "\n") {
		if fields := strings.Fields(line); len(fields) > 0 && strings.HasSuffix(fields[0], ":") && strings.Contains(line, "..") {
			extents++
			if strings.Contains(line, "shared") {
				shared++
			}
		}
	}
	if extents == 0 || shared != extents {
		t.Errorf("filefrag: %d of %d extents shared, want all:\n%s", shared, extents, out)
	}
	got, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("reflinked blob differs from its source")
	}
	// A clone is not a link: changing the source leaves the blob alone.
	sfi, _ := os.Stat(src)
	bfi, _ := os.Stat(blob)
	if os.SameFile(sfi, bfi) {
		t.Error("reflinked blob is the same inode as its source")
	}
}

func ispecManifest(config ispec.Descriptor, layers ...ispec.Descriptor) ispec.Manifest {
	return ispec.Manifest{Config: config, Layers: layers}
}
