package erofs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
	"github.com/qcluster/qcluster/internal/needs"
)

const testMTime = 1700000000

// testTree exercises every layout decision: inline and plain tails, empty
// files, exact blocks, multi-block directories, extended inodes, odd names.
func testTree() []Entry {
	es := []Entry{
		{Path: "", Mode: fs.ModeDir | 0o755},
		{Path: "etc/os-release", Mode: 0o644, Data: Bytes("NAME=qcluster\nVERSION_ID=1\n")},
		{Path: "etc/empty", Mode: 0o600},
		{Path: "etc/ssl", Mode: fs.ModeDir | 0o700, UID: 1000, GID: 1000},
		{Path: "usr/bin/agent", Mode: 0o755, Data: Bytes(blockdevtest.Pattern(1<<20+123, 1))},
		{Path: "usr/bin/sudo", Mode: 0o755 | fs.ModeSetuid, Data: Bytes(blockdevtest.Pattern(4096, 2))},
		{Path: "usr/bin/sg", Mode: 0o755 | fs.ModeSetgid, Data: Bytes(blockdevtest.Pattern(4097, 3))},
		{Path: "usr/bin/almost", Mode: 0o644, Data: Bytes(blockdevtest.Pattern(4095, 4))},
		{Path: "usr/bin/tail4000", Mode: 0o644, Data: Bytes(blockdevtest.Pattern(8192+4000, 5))},
		{Path: "tmp", Mode: fs.ModeDir | 0o777 | fs.ModeSticky},
		{Path: "bin", Mode: fs.ModeSymlink | 0o777, Target: "usr/bin"},
		{Path: "usr/lib/long-link", Mode: fs.ModeSymlink | 0o777, Target: strings.Repeat("x/", 1000) + "end"},
		{Path: "home/big-ids/file", Mode: 0o640, UID: 70000, GID: 80000, Data: Bytes("extended inode\n")},
		{Path: "!sorts-before-dot", Mode: 0o644, Data: Bytes("!")},
		{Path: "-dash", Mode: 0o644, Data: Bytes("-")},
		{Path: "names/" + strings.Repeat("n", 255), Mode: 0o644, Data: Bytes("max name")},
	}
	// A directory of several blocks, entries given in reverse order.
	for i := 599; i >= 0; i-- {
		es = append(es, Entry{Path: fmt.Sprintf("many/file-with-a-longish-name-%04d", i), Mode: 0o644,
			Data: Bytes(fmt.Sprintf("%d\n", i))})
	}
	return es
}

func writeImage(t testing.TB, es []Entry, o Options) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.erofs")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := Write(f, es, o)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	want, err := Size(es, o)
	if err != nil {
		t.Fatalf("Size: %v", err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if n != want || st.Size() != n || n%BlockSize != 0 {
		t.Fatalf("Write returned %d, Size %d, file has %d bytes", n, want, st.Size())
	}
	return p
}

// file is what a path should look like after reading the image back.
type file struct {
	mode     fs.FileMode
	uid, gid uint32
	data     string
}

// expected returns the tree the entries describe, implicit directories included.
func expected(es []Entry) map[string]file {
	m := map[string]file{".": {mode: fs.ModeDir | 0o755}}
	for _, e := range es {
		p := strings.TrimPrefix(e.Path, "/")
		if p == "" {
			p = "."
		}
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			if _, ok := m[d]; !ok {
				m[d] = file{mode: fs.ModeDir | 0o755}
			}
		}
		f := file{mode: e.Mode, uid: e.UID, gid: e.GID, data: e.Target}
		if e.Data != nil {
			f.data = string(e.Data.(Bytes))
		}
		m[p] = f
	}
	return m
}

// readTree walks dir on the host.
func readTree(t testing.TB, dir string) map[string]file {
	t.Helper()
	m := map[string]file{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		f := file{mode: info.Mode(), uid: st.Uid, gid: st.Gid}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			f.data, err = os.Readlink(p)
		case info.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			f.data = string(b)
		}
		m[rel] = f
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// compare reports differences between two trees; owners (and the set-id
// bits, which an unprivileged chown clears) only if withOwners.
func compare(t testing.TB, got, want map[string]file, withOwners bool) {
	t.Helper()
	for p, w := range want {
		if !withOwners {
			w.mode &^= fs.ModeSetuid | fs.ModeSetgid
		}
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: missing", p)
			continue
		}
		if !withOwners {
			g.mode &^= fs.ModeSetuid | fs.ModeSetgid
		}
		if g.mode != w.mode {
			t.Errorf("%s: mode %v, want %v", p, g.mode, w.mode)
		}
		if g.data != w.data {
			t.Errorf("%s: contents differ (%d bytes, want %d)", p, len(g.data), len(w.data))
		}
		if withOwners && (g.uid != w.uid || g.gid != w.gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, g.uid, g.gid, w.uid, w.gid)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected", p)
		}
	}
}

func fsck(t testing.TB, img string, args ...string) {
	t.Helper()
	tool := needs.Tool(t, "fsck.erofs", "erofs-utils")
	out, err := exec.Command(tool, append(args, img)...).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.erofs %s %s: %v\n%s", strings.Join(args, " "), img, err, out)
	}
}

func TestFsckExtract(t *testing.T) {
	es := testTree()
	img := writeImage(t, es, Options{MTime: testMTime})
	fsck(t, img)
	dir := filepath.Join(t.TempDir(), "x")
	fsck(t, img, "--extract="+dir, "--preserve")
	// fsck.erofs 1.5 chowns after chmod, which clears set-id bits: owners
	// and set-id bits are checked by TestMount and TestDumpErofs.
	compare(t, readTree(t, dir), expected(es), false)
}

func TestDumpErofs(t *testing.T) {
	tool := needs.Tool(t, "dump.erofs", "erofs-utils")
	img := writeImage(t, testTree(), Options{MTime: testMTime, UUID: [16]byte{0: 0x11, 15: 0xff}, Label: "system"})
	out, err := exec.Command(tool, "-s", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs -s: %v\n%s", err, out)
	}
	for _, want := range []string{"Filesystem UUID:                              11000000-0000-0000-0000-0000000000ff",
		"Filesystem root nid:                          0", "Filesystem inode count:                       624"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dump.erofs -s lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(tool, "--path=/home/big-ids/file", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs --path: %v\n%s", err, out)
	}
	for _, want := range []string{"Inode size: 64", "Uid: 70000   Gid: 80000", "Access: 0640"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dump.erofs --path lacks %q:\n%s", want, out)
		}
	}
}

// TestMount reads the image back through the host kernel's erofs driver.
func TestMount(t *testing.T) {
	needs.Loop(t)
	fss, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fss), "\terofs\n") {
		exec.Command("modprobe", "erofs").Run()
		if fss, _ = os.ReadFile("/proc/filesystems"); !strings.Contains(string(fss), "\terofs\n") {
			t.Skip("host kernel has no erofs")
		}
	}
	es := testTree()
	img := writeImage(t, es, Options{MTime: testMTime})
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v\n%s", err, out)
		}
	}()
	compare(t, readTree(t, mnt), expected(es), true)
	// Times and link counts.
	for _, p := range []string{".", "usr/bin/agent", "home/big-ids/file", "usr"} {
		info, err := os.Lstat(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		if info.ModTime().Unix() != testMTime {
			t.Errorf("%s: mtime %v, want %d", p, info.ModTime(), testMTime)
		}
	}
	for p, want := range map[string]uint64{".": 2 + 6, "usr": 2 + 2, "usr/bin/agent": 1, "many": 2} {
		info, _ := os.Lstat(filepath.Join(mnt, p))
		if n := info.Sys().(*syscall.Stat_t).Nlink; n != want {
			t.Errorf("%s: nlink %d, want %d", p, n, want)
		}
	}
	// Lookups go through the kernel's binary search over blocks.
	for _, i := range []int{0, 1, 299, 300, 598, 599} {
		p := filepath.Join(mnt, fmt.Sprintf("many/file-with-a-longish-name-%04d", i))
		if b, err := os.ReadFile(p); err != nil || string(b) != fmt.Sprintf("%d\n", i) {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(mnt, "many/file-with-a-longish-name-0600")); !os.IsNotExist(err) {
		t.Errorf("lookup of a missing name: %v", err)
	}
}

func TestGolden(t *testing.T) {
	var a, b bytes.Buffer
	o := Options{MTime: testMTime, UUID: [16]byte{1, 2, 3}, Label: "golden"}
	if _, err := Write(&a, testTree(), o); err != nil {
		t.Fatal(err)
	}
	// The same tree given in another order.
	es := testTree()
	slices.Reverse(es)
	if _, err := Write(&b, es, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("entry order changed the image")
	}
	sum := sha256.Sum256(a.Bytes())
	const want = "80e4b1f15d8e539f2107d38b657b546bb2dcc8ffe57bca5c6f96fcd5ef8c8391"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("image sha256 %s (%d bytes), want %s", got, a.Len(), want)
	}
}

type shortBlob struct{ size int64 }

func (s shortBlob) Size() int64 { return s.size }
func (s shortBlob) Open() (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("0123456789")), nil
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		es   []Entry
		o    Options
		want string
	}{
		{"duplicate", []Entry{{Path: "a", Mode: 0o644}, {Path: "a", Mode: 0o644}}, Options{}, "a: duplicate entry"},
		{"duplicate dir", []Entry{{Path: "a", Mode: fs.ModeDir}, {Path: "a", Mode: fs.ModeDir}}, Options{}, "a: duplicate entry"},
		{"below file", []Entry{{Path: "a", Mode: 0o644}, {Path: "a/b", Mode: 0o644}}, Options{}, "a is not a directory"},
		{"dotdot", []Entry{{Path: "a/../b", Mode: 0o644}}, Options{}, "is not clean"},
		{"double slash", []Entry{{Path: "a//b", Mode: 0o644}}, Options{}, "is not clean"},
		{"long name", []Entry{{Path: strings.Repeat("n", 256), Mode: 0o644}}, Options{}, "name of 256 bytes"},
		{"empty target", []Entry{{Path: "l", Mode: fs.ModeSymlink}}, Options{}, "symlink target of 0 bytes"},
		{"device", []Entry{{Path: "d", Mode: fs.ModeDevice}}, Options{}, "unsupported file type"},
		{"dir data", []Entry{{Path: "d", Mode: fs.ModeDir, Data: Bytes("x")}}, Options{}, "a directory has no data"},
		{"label", nil, Options{Label: strings.Repeat("l", 17)}, "at most 16 allowed"},
		{"short blob", []Entry{{Path: "f", Data: shortBlob{10000}}}, Options{}, "read f: got 10 bytes, Size says 10000"},
		{"long blob", []Entry{{Path: "f", Data: shortBlob{5}}}, Options{}, "read f: more than the 5 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Write(io.Discard, tc.es, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzWrite checks images of files with arbitrary sizes with fsck.erofs.
func FuzzWrite(f *testing.F) {
	f.Add(uint16(0), uint16(1), uint16(4095), uint8(3))
	f.Add(uint16(4096), uint16(4064), uint16(33), uint8(40))
	f.Add(uint16(8191), uint16(4000), uint16(4030), uint8(0))
	f.Fuzz(func(t *testing.T, a, b, c uint16, nfiles uint8) {
		es := []Entry{
			{Path: "a", Mode: 0o644, Data: Bytes(blockdevtest.Pattern(int(a), 1))},
			{Path: "d/b", Mode: 0o644, Data: Bytes(blockdevtest.Pattern(int(b), 2))},
			{Path: "d/c", Mode: 0o644, Data: Bytes(blockdevtest.Pattern(int(c)*3, 3))},
		}
		for i := range int(nfiles) {
			es = append(es, Entry{Path: fmt.Sprintf("d/e/%s%d", strings.Repeat("x", int(a)%200), i),
				Mode: 0o644, Data: Bytes(blockdevtest.Pattern(int(b)%5000+i, 4))})
		}
		img := writeImage(t, es, Options{})
		dir := filepath.Join(t.TempDir(), "x")
		fsck(t, img, "--extract="+dir)
		compare(t, readTree(t, dir), expected(es), false)
	})
}

// BenchmarkWrite writes a 64 MiB tree of 256 files.
func BenchmarkWrite(b *testing.B) {
	var es []Entry
	for i := range 256 {
		es = append(es, Entry{Path: fmt.Sprintf("d%d/f%d", i%8, i), Mode: 0o644, Data: Bytes(make([]byte, 256<<10+i))})
	}
	b.SetBytes(64 << 20)
	for b.Loop() {
		if _, err := Write(io.Discard, es, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
