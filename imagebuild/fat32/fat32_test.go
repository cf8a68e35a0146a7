package fat32

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/fat32/fat32test"
	"github.com/qcluster/qcluster/internal/needs"
)

// mem is a Blob in memory.
type mem = blockdev.Bytes

func random(n int, seed uint64) mem {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)}).Read(b)
	return b
}

func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		v    any
		want int
	}{{bootSector{}, sectorSize}, {fsInfo{}, sectorSize}, {dirEntry{}, entrySize}, {lfnEntry{}, entrySize}} {
		if got := binary.Size(c.v); got != c.want {
			t.Errorf("binary.Size(%T) = %d, want %d", c.v, got, c.want)
		}
	}
}

// The cluster size is the one mkfs.fat -F 32 picks for the same size.
func TestGeometryLikeMkfs(t *testing.T) {
	needs.Tool(t, "mkfs.fat", "dosfstools")
	for _, mib := range []int64{33, 64, 128, 260, 261, 512, 1024} {
		size := mib << 20
		l, err := Plan(size, nil, Options{})
		if err != nil {
			t.Fatalf("%d MiB: %v", mib, err)
		}
		img := filepath.Join(t.TempDir(), "mkfs.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(img, size)
		if out, err := exec.Command("mkfs.fat", "-F", "32", img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.fat: %v\n%s", err, out)
		}
		f, _ := os.Open(img)
		boot := make([]byte, 512)
		f.ReadAt(boot, 0)
		f.Close()
		if want := int64(boot[13]) * 512; l.ClusterSize() != want {
			t.Errorf("%d MiB: cluster size %d, mkfs.fat picks %d", mib, l.ClusterSize(), want)
		}
		if l.Clusters() < minClusters {
			t.Errorf("%d MiB: %d clusters, FAT32 needs %d", mib, l.Clusters(), minClusters)
		}
		if l.dataStart()%4096 != 0 || l.dataStart()%l.ClusterSize() != 0 {
			t.Errorf("%d MiB: data area at %d, not 4 KiB and cluster aligned", mib, l.dataStart())
		}
	}
	if _, err := Plan(32<<20, nil, Options{}); err == nil || !strings.Contains(err.Error(), "too small for FAT32") {
		t.Errorf("Plan(32 MiB) = %v, want a too-small error", err)
	}
}

// espFiles is a typical ESP plus names that exercise long names.
func espFiles(t testing.TB) ([]File, map[string][]byte) {
	loader := random(120_000, 1)
	if b, err := os.ReadFile("../../third_party/cache/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi"); err == nil {
		loader = b
	}
	files := []File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Blob: loader},
		{Path: "/loader/loader.conf", Blob: mem("timeout 0\ndefault qcluster-a.efi\neditor no\n")},
		{Path: "EFI/Linux/qcluster-a.efi", Blob: random(3<<20+123, 2)},
		{Path: "empty", Blob: mem(nil)},
		{Path: "Long File Name 1.txt", Blob: random(4095, 3)},
		{Path: "Long File Name 2.txt", Blob: random(4096, 4)},
		{Path: "Long File Name 3.txt", Blob: random(4097, 5)},
		{Path: "snow ☃ and a name of exactly twenty-six.x", Blob: random(13, 6)},
		{Path: "a/b/c/d/e/f/deep.bin", Blob: random(512, 7)},
		{Path: "a/b/c/.hidden", Blob: random(1, 8)},
		{Path: "MIXED.Case", Blob: random(2, 9)},
		{Path: "x.tar.gz", Blob: random(3, 10)},
	}
	want := map[string][]byte{}
	for _, f := range files {
		want[strings.TrimPrefix(f.Path, "/")] = f.Blob.(mem)
	}
	return files, want
}

func writeImage(t testing.TB, path string, size int64, files []File, opts Options) []Copied {
	t.Helper()
	l, err := Plan(size, files, opts)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := blockdev.Create(path, size)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	copied, err := l.Write(dev)
	if err != nil {
		t.Fatal(err)
	}
	return copied
}

func TestTools(t *testing.T) {
	needs.Tool(t, "blkid", "util-linux")
	files, want := espFiles(t)
	img := filepath.Join(t.TempDir(), "esp.img")
	opts := Options{Label: "ESP", Serial: 0xC0FFEE42, Time: time.Date(2024, 2, 29, 13, 37, 43, 0, time.UTC)}
	copied := writeImage(t, img, 128<<20, files, opts)
	if len(copied) != len(files) {
		t.Errorf("%d files reported copied, want %d", len(copied), len(files))
	}
	fat32test.Fsck(t, img, 0, 128<<20)
	got := fat32test.Files(t, img, 0)
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			t.Errorf("mcopy: %s: %d bytes, want %d bytes (or different content)", p, len(got[p]), len(b))
		}
		delete(got, p)
	}
	for p := range got {
		t.Errorf("mcopy: unexpected file %s", p)
	}
	out, err := exec.Command("blkid", "-p", "-o", "export", img).Output()
	if err != nil {
		t.Fatalf("blkid -p: %v", err)
	}
	for _, kv := range []string{"TYPE=vfat", "VERSION=FAT32", "LABEL=ESP", "UUID=C0FF-EE42"} {
		if !strings.Contains(string(out), kv+"\n") {
			t.Errorf("blkid -p: no %s in\n%s", kv, out)
		}
	}
	// mtools shows the chosen time.
	if out, err := exec.Command("mdir", "-i", img, "::/EFI/BOOT").Output(); err != nil || !strings.Contains(string(out), "2024-02-29  13:37") {
		t.Errorf("mdir ::/EFI/BOOT: %v: want the time 2024-02-29 13:37 in\n%s", err, out)
	}
}

// fsck.fat notices damage where this test looks: the checks above can fail.
func TestFsckNoticesDamage(t *testing.T) {
	files, _ := espFiles(t)
	for name, damage := range map[string]func(l *Layout, b []byte){
		"FSInfo free count":  func(l *Layout, b []byte) { b[sectorSize+488]++ },
		"backup boot sector": func(l *Layout, b []byte) { b[backupBoot*sectorSize+67]++ },
		"second FAT":         func(l *Layout, b []byte) { b[(reserved+l.fatSectors)*sectorSize+12]++ },
		"LFN checksum": func(l *Layout, b []byte) {
			root := b[l.dataStart():]
			for i := 0; ; i += entrySize {
				if root[i+11] == attrLongName {
					root[i+13]++
					return
				}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			needs.Tool(t, "fsck.fat", "dosfstools")
			l, err := Plan(64<<20, files, Options{})
			if err != nil {
				t.Fatal(err)
			}
			dev := blockdev.NewMemory(64 << 20)
			if _, err := l.Write(dev); err != nil {
				t.Fatal(err)
			}
			damage(l, dev.Bytes())
			img := filepath.Join(t.TempDir(), "esp.img")
			os.WriteFile(img, dev.Bytes(), 0o644)
			if out, err := exec.Command("fsck.fat", "-n", img).CombinedOutput(); err == nil && strings.Count(string(out), "\n") <= 2 {
				t.Errorf("fsck.fat -n finds nothing wrong after damaging the %s:\n%s", name, out)
			}
		})
	}
}

// Same input, same bytes; another serial, other bytes.
func TestDeterministic(t *testing.T) {
	files, _ := espFiles(t)
	sum := func(opts Options) [32]byte {
		l, err := Plan(64<<20, files, opts)
		if err != nil {
			t.Fatal(err)
		}
		dev := blockdev.NewMemory(64 << 20)
		if _, err := l.Write(dev); err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(dev.Bytes())
	}
	a, b, c := sum(Options{Serial: 1}), sum(Options{Serial: 1}), sum(Options{Serial: 2})
	if a != b {
		t.Error("two writes of the same volume differ")
	}
	if a == c {
		t.Error("volumes with different serials are identical")
	}
}

// Files of at least 4 KiB start 4 KiB-aligned, and their data is one
// contiguous copy: on a reflink file system it is shared, not copied.
func TestAlignment(t *testing.T) {
	files, _ := espFiles(t)
	l, err := Plan(128<<20, files, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range l.files {
		if f.size >= fileAlign && l.clusterOffset(f.cluster)%fileAlign != 0 {
			t.Errorf("%s (%d bytes) starts at %d, not 4 KiB aligned", f.path, f.size, l.clusterOffset(f.cluster))
		}
	}
}

func TestRejects(t *testing.T) {
	one := mem("x")
	for _, c := range []struct {
		name  string
		size  int64
		files []File
		opts  Options
		want  string
	}{
		{"too small", 16 << 20, nil, Options{}, "too small for FAT32"},
		{"odd size", 64<<20 + 1, nil, Options{}, "not a multiple of 512"},
		{"full", 40 << 20, []File{{"big", random(40<<20, 1)}}, Options{}, "the volume of 40 MiB has"},
		{"duplicate", 64 << 20, []File{{"a/b", one}, {"a/b", one}}, Options{}, "given twice"},
		{"file and dir", 64 << 20, []File{{"a", one}, {"a/b", one}}, Options{}, "given twice, or as both"},
		{"case", 64 << 20, []File{{"EFI/x", one}, {"efi/y", one}}, Options{}, "differ only in case"},
		{"empty component", 64 << 20, []File{{"a//b", one}}, Options{}, "empty name"},
		{"dot", 64 << 20, []File{{"a/../b", one}}, Options{}, "reserved"},
		{"colon", 64 << 20, []File{{"a:b", one}}, Options{}, "not allowed"},
		{"backslash", 64 << 20, []File{{`EFI\BOOT`, one}}, Options{}, "not allowed"},
		{"trailing dot", 64 << 20, []File{{"a.", one}}, Options{}, "ends in a dot"},
		{"long name", 64 << 20, []File{{strings.Repeat("n", 256), one}}, Options{}, "longer than 255"},
		{"no blob", 64 << 20, []File{{"a", nil}}, Options{}, "no content"},
		{"label", 64 << 20, nil, Options{Label: "esp"}, "volume label"},
		{"time", 64 << 20, nil, Options{Time: time.Date(1979, 12, 31, 0, 0, 0, 0, time.UTC)}, "1980–2107"},
	} {
		_, err := Plan(c.size, c.files, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line containing %q", c.name, err, c.want)
		}
	}
	l, _ := Plan(64<<20, nil, Options{})
	if _, err := l.Write(blockdev.NewMemory(65 << 20)); err == nil {
		t.Error("Write to a device of another size succeeded")
	}
}

// A blob whose content is not its declared size fails the write.
func TestBlobSizeMismatch(t *testing.T) {
	for name, b := range map[string]blockdev.Blob{"short": liar{mem("abc"), 4}, "long": liar{mem("abcde"), 4}} {
		l, err := Plan(64<<20, []File{{"f", b}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Write(blockdev.NewMemory(64 << 20)); err == nil {
			t.Errorf("%s blob: Write succeeded", name)
		}
	}
}

type liar struct {
	mem
	size int64
}

func (l liar) Size() int64 { return l.size }

// FuzzFAT32 writes volumes of fuzzed names and sizes and has fsck.fat and
// mtools check them.
func FuzzFAT32(f *testing.F) {
	f.Add("EFI/BOOT/BOOTX64.EFI\nloader/loader.conf\nEFI/Linux/a.efi", []byte{200, 3, 17}, uint64(1))
	f.Add("a\nb/c d e f g h i j k l m n o p\nb/C D E F\nÄ/ö/ü ☃", []byte{0, 0, 255, 1}, uint64(2))
	f.Add(strings.Repeat("x/", 20)+"y\nLONGNAME1.TXT\nLongName1.txt.bak", []byte{9, 9, 9}, uint64(3))
	f.Fuzz(func(t *testing.T, names string, sizes []byte, seed uint64) {
		// The oracle, mtools, cannot name a file outside the Basic
		// Multilingual Plane: it stores and extracts such a name as "_"
		// (measured with Debian mtools 4.0.32), while our long names encode it as
		// a UTF-16 surrogate pair and fsck.fat accepts them. Such inputs
		// could only fail on the read-back, so they are not tried.
		if strings.IndexFunc(names, func(r rune) bool { return r > 0xFFFF }) >= 0 {
			t.Skip("name outside the BMP: mtools cannot read it back")
		}
		var files []File
		want := map[string][]byte{}
		for i, p := range strings.Split(names, "\n") {
			if i >= 40 {
				break
			}
			n := 0
			if i < len(sizes) {
				n = int(sizes[i]) * 97 // 0 … 24 KiB, across cluster and 4 KiB boundaries
			}
			b := random(n, seed+uint64(i))
			files = append(files, File{Path: p, Blob: b})
			want[strings.TrimPrefix(p, "/")] = b
		}
		l, err := Plan(40<<20, files, Options{Serial: uint32(seed)})
		if err != nil {
			return
		}
		img := filepath.Join(t.TempDir(), "fuzz.img")
		dev, err := blockdev.Create(img, 40<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if _, err := l.Write(dev); err != nil {
			t.Fatal(err)
		}
		fat32test.Fsck(t, img, 0, 40<<20)
		got := fat32test.Files(t, img, 0)
		for p, b := range want {
			if !bytes.Equal(got[p], b) {
				t.Errorf("%s: read back %d bytes, want %d", p, len(got[p]), len(b))
			}
		}
		if len(got) != len(want) {
			t.Errorf("read back %d files, want %d", len(got), len(want))
		}
	})
}

func TestShortNames(t *testing.T) {
	taken := map[[11]byte]bool{}
	for _, c := range []struct{ long, want string }{
		{"loader", "LOADER     "},
		{"loader.conf", "LOADER~1CON"},
		{"Long File Name 1.txt", "LONGFI~1TXT"},
		{"Long File Name 2.txt", "LONGFI~2TXT"},
		{".hidden", "HIDDEN~1   "},
		{"x.tar.gz", "XTAR~1  GZ "},
		{"☃", "_~1        "},
		{"a+b", "A_B~1      "},
	} {
		s := shortName(c.long, taken)
		taken[s] = true
		if string(s[:]) != c.want {
			t.Errorf("shortName(%q) = %q, want %q", c.long, s, c.want)
		}
	}
	for i := range 12 {
		s := shortName("Long File Name.txt", taken)
		if taken[s] {
			t.Fatalf("shortName returned the taken %q", s)
		}
		taken[s] = true
		if i == 11 && string(s[:]) != "LONGF~14TXT" {
			t.Errorf("the 12th alias is %q, want LONGF~14TXT (~1 and ~2 were taken: ~3 … ~9, then ~10 … ~14)", s)
		}
	}
	if s, ok := exactShort("BOOTX64.EFI"); !ok || string(s[:]) != "BOOTX64 EFI" {
		t.Errorf("exactShort(BOOTX64.EFI) = %q, %v", s, ok)
	}
	for _, n := range []string{"boot", "A.B.C", "TOOLONGNAME", "A.EFIX", ".X", "A B"} {
		if _, ok := exactShort(n); ok {
			t.Errorf("exactShort(%q) accepted a name that needs a long name", n)
		}
	}
	// §7.2's checksum, by hand for "BOOTX64 EFI".
	var sum uint8
	for _, c := range []byte("BOOTX64 EFI") {
		sum = ((sum & 1) << 7) + (sum >> 1) + c
	}
	if got := checksum([11]byte([]byte("BOOTX64 EFI"))); got != sum {
		t.Errorf("checksum = %#x, want %#x", got, sum)
	}
}
