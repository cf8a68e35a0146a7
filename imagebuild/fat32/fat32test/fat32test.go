// Package fat32test checks FAT volumes with independent tools for tests:
// dosfstools' fsck.fat and mtools' mcopy. A missing tool skips the test
// locally and fails it in CI.
package fat32test

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/internal/needs"
)

// fsckClean matches the only lines fsck.fat -n prints for a clean volume.
var fsckClean = regexp.MustCompile(`^(fsck\.fat \S+ \(.*\)|.*: \d+ files, \d+/\d+ clusters)$`)

// Fsck runs fsck.fat -n on the volume of size bytes at byte offset off of
// the image file and fails t unless it exits 0 and reports nothing but its
// summary. fsck.fat cannot take an offset, so a volume inside a disk is
// first copied, sparsely, to a temporary file. It returns fsck.fat's output.
func Fsck(t testing.TB, img string, off, size int64) string {
	t.Helper()
	needs.Tool(t, "fsck.fat", "dosfstools")
	vol := img
	if off != 0 {
		vol = filepath.Join(t.TempDir(), "volume.img")
		copySparse(t, img, off, size, vol)
	}
	out, err := exec.Command("fsck.fat", "-n", vol).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n %s: %v\n%s", vol, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !fsckClean.MatchString(line) {
			t.Fatalf("fsck.fat -n %s reports a problem: %q\n%s", vol, line, out)
		}
	}
	return string(out)
}

// copySparse copies [off, off+size) of src to a new file dst, leaving
// all-zero 64 KiB blocks as holes.
func copySparse(t testing.TB, src string, off, size int64, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf, zero := make([]byte, 64<<10), make([]byte, 64<<10)
	for pos := int64(0); pos < size; pos += int64(len(buf)) {
		n, err := in.ReadAt(buf[:min(int64(len(buf)), size-pos)], off+pos)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], pos); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Files extracts every file of the volume at byte offset off of the image
// with mtools (mcopy -s -i img@@off) and returns their contents by
// slash-separated path.
func Files(t testing.TB, img string, off int64) map[string][]byte {
	t.Helper()
	needs.Tool(t, "mcopy", "mtools")
	dir := t.TempDir()
	cmd := exec.Command("mcopy", "-s", "-i", img+"@@"+strconv.FormatInt(off, 10), "::*", dir+"/")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
