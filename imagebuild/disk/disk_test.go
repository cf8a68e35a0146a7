package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
	"github.com/qcluster/qcluster/imagebuild/disklayout"
	"github.com/qcluster/qcluster/imagebuild/fat32/fat32test"
	"github.com/qcluster/qcluster/imagebuild/gpt"
	"github.com/qcluster/qcluster/internal/needs"
)

// loaderPath is systemd-boot as third_party/fetch.sh unpacks it.
const loaderPath = "../../third_party/cache/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// fileBlob is a Blob over a file.
type fileBlob string

func (f fileBlob) Open() (io.ReadCloser, error) { return os.Open(string(f)) }
func (f fileBlob) Size() int64 {
	fi, err := os.Stat(string(f))
	if err != nil {
		return -1
	}
	return fi.Size()
}

// writeRandom writes n random bytes (no zero blocks) to dir/name.
func writeRandom(t testing.TB, dir, name string, n int, seed byte) string {
	t.Helper()
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testOptions returns options for a small node disk whose payloads are
// files in dir: a real systemd-boot, a 3 MiB "UKI" and a 10 MiB system
// image with an unaligned tail.
func testOptions(t testing.TB, dir string) Options {
	t.Helper()
	needs.File(t, loaderPath, "make fetch")
	loader := filepath.Join(dir, "loader.efi")
	b, err := os.ReadFile(loaderPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loader, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return Options{
		Size:       256 << 20,
		ESPSize:    64 << 20,
		SystemSize: 32 << 20,
		Seed:       "node0",
		Loader:     fileBlob(loader),
		Kernel:     fileBlob(writeRandom(t, dir, "kernel.efi", 3<<20+4096*5+17, 1)),
		System:     fileBlob(writeRandom(t, dir, "system", 10<<20+4096*3+100, 2)),
		ExtraESPFiles: []File{
			{Path: "EFI/qcluster/parameters.json", Blob: blockdev.Bytes(`{"name":"node0"}`)},
			{Path: "Some Long Name.txt", Blob: blockdev.Bytes("long names work\n")},
		},
	}
}

type sfdiskPart struct {
	Start, Size      uint64
	Type, UUID, Name string
}

func sfdisk(t testing.TB, img string) (string, []sfdiskPart) {
	t.Helper()
	needs.Tool(t, "sfdisk", "fdisk")
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var v struct {
		PartitionTable struct {
			Label      string
			ID         string
			Partitions []sfdiskPart
		}
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	return v.PartitionTable.ID, v.PartitionTable.Partitions
}

// dataIn returns the first offset in [off, off+n) of the file holding data
// (SEEK_DATA), or -1 when the range is all hole.
func dataIn(t testing.TB, path string, off, n int64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pos, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) || (err == nil && pos >= off+n) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// TestNodeDisk writes a disk and has independent tools check every part.
func TestNodeDisk(t *testing.T) {
	needs.Tool(t, "sgdisk", "gdisk")
	needs.Tool(t, "blkid", "util-linux")
	dir := t.TempDir()
	opts := testOptions(t, dir)
	img := filepath.Join(dir, "node0.raw")
	plan, err := NewPlan(opts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := plan.Write(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Copied {
		t.Logf("%s %s: %d bytes by %v", c.Partition, c.Path, c.Bytes, c.Method)
	}
	t.Logf("ESP %v, system %v, table %v, total %v", st.ESP, st.System, st.Table, st.Total)

	// The partition table: sgdisk finds no problem, sfdisk and our reader
	// see the planned partitions.
	if out, err := exec.Command("sgdisk", "-v", img).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	id, parts := sfdisk(t, img)
	if id != plan.DiskGUID().String() {
		t.Errorf("sfdisk: disk GUID %s, want %s", id, plan.DiskGUID())
	}
	want := []struct {
		name string
		typ  gpt.GUID
		size int64
	}{
		{disklayout.NameESP, gpt.TypeEFISystem, opts.ESPSize},
		{disklayout.NameSystemA, typeSystem, opts.SystemSize},
		{disklayout.NameSystemB, typeSystem, opts.SystemSize},
		{disklayout.NameData, typeData, 256<<20 - 1<<20 - 64<<20 - 2*32<<20 - 1<<20}, // the last MiB holds the backup table
	}
	if len(parts) != len(want) {
		t.Fatalf("sfdisk sees %d partitions, want %d", len(parts), len(want))
	}
	for i, w := range want {
		p := parts[i]
		if p.Name != w.name || p.Type != w.typ.String() || int64(p.Size)*512 != w.size || p.Start%2048 != 0 || p.UUID != plan.Partitions()[i].GUID.String() {
			t.Errorf("partition %d: sfdisk %+v, want %s %s %d bytes, 1 MiB aligned, %s", i+1, p, w.name, w.typ, w.size, plan.Partitions()[i].GUID)
		}
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := gpt.Read(f, opts.Size)
	if err != nil {
		t.Fatal(err)
	}
	if tab.DiskGUID != plan.DiskGUID() || len(tab.Partitions) != 4 {
		t.Fatalf("gpt.Read: %+v", tab)
	}
	esp, sysA, sysB, data := tab.Partitions[0], tab.Partitions[1], tab.Partitions[2], tab.Partitions[3]

	// blkid probes the partitions' contents at their offsets.
	for _, c := range []struct {
		p    gpt.Partition
		want string
	}{{esp, "TYPE=vfat"}, {sysB, ""}} {
		out, _ := exec.Command("blkid", "-p", "-o", "export", "-O", strconv.FormatInt(c.p.Offset(), 10), "-S", strconv.FormatInt(c.p.Size(), 10), img).Output()
		if c.want != "" && !strings.Contains(string(out), c.want+"\n") || c.want == "" && strings.Contains(string(out), "TYPE=") {
			t.Errorf("blkid -p on %s: %q, want %q", c.p.Name, out, c.want)
		}
	}
	if out, _ := exec.Command("blkid", "-p", "-o", "export", img).Output(); !strings.Contains(string(out), "PTTYPE=gpt\n") {
		t.Errorf("blkid -p on the disk: %q, want PTTYPE=gpt", out)
	}

	// The ESP: fsck.fat clean, mtools reads the files back.
	fat32test.Fsck(t, img, esp.Offset(), esp.Size())
	files := fat32test.Files(t, img, esp.Offset())
	wantFiles := map[string][]byte{
		disklayout.LoaderPath:     blockdevtest.Read(t, opts.Loader),
		disklayout.LoaderConfPath: []byte(disklayout.LoaderConf),
		disklayout.KernelPath:     blockdevtest.Read(t, opts.Kernel),
	}
	for _, e := range opts.ExtraESPFiles {
		wantFiles[e.Path] = blockdevtest.Read(t, e.Blob)
	}
	for p, b := range wantFiles {
		if !bytes.Equal(files[p], b) {
			t.Errorf("ESP %s: %d bytes, want %d (or other content)", p, len(files[p]), len(b))
		}
	}
	if len(files) != len(wantFiles) {
		t.Errorf("ESP holds %d files, want %d", len(files), len(wantFiles))
	}

	// SYSTEM-A is the payload, then zeroes.
	sys := blockdevtest.Read(t, opts.System)
	got := make([]byte, sysA.Size())
	if _, err := f.ReadAt(got, sysA.Offset()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(sys)], sys) {
		t.Error("SYSTEM-A does not start with the system payload")
	}
	if !bytes.Equal(got[len(sys):], make([]byte, len(got)-len(sys))) {
		t.Error("SYSTEM-A is not zero after the payload")
	}

	// SYSTEM-B and DATA are holes; the disk allocates little beyond the payloads.
	for _, p := range []gpt.Partition{sysB, data} {
		if pos := dataIn(t, img, p.Offset(), p.Size()); pos >= 0 {
			t.Errorf("%s holds data at disk offset %d; want it all hole", p.Name, pos)
		}
	}
	payloads := int64(len(sys)) + opts.Loader.Size() + opts.Kernel.Size()
	if a := blockdevtest.Allocated(t, img); a < payloads || a > payloads+1<<20 {
		t.Errorf("the disk allocates %d bytes; want the payloads' %d plus under 1 MiB of metadata", a, payloads)
	} else {
		t.Logf("allocated %d bytes for %d bytes of payloads", a, payloads)
	}
}

func sha(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// Same inputs and seed: same bytes. Another seed: other GUIDs and serial.
func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir)
	opts.Size = 136 << 20 // hashing is the slow part
	var sums [3][32]byte
	for i, seed := range []string{"node0", "node0", "node1"} {
		opts.Seed = seed
		img := filepath.Join(dir, "disk"+strconv.Itoa(i))
		if _, err := Write(context.Background(), img, opts); err != nil {
			t.Fatal(err)
		}
		sums[i] = sha(t, img)
	}
	if sums[0] != sums[1] {
		t.Error("two disks with the same seed differ")
	}
	if sums[0] == sums[2] {
		t.Error("disks with different seeds are identical")
	}
	a, _ := NewPlan(Options{Seed: "node0", Loader: blockdev.Bytes("l"), Kernel: blockdev.Bytes("k"), System: blockdev.Bytes("s")})
	b, _ := NewPlan(Options{Seed: "node1", Loader: blockdev.Bytes("l"), Kernel: blockdev.Bytes("k"), System: blockdev.Bytes("s")})
	seen := map[gpt.GUID]bool{}
	for _, p := range []*Plan{a, b} {
		for _, g := range append([]gpt.GUID{p.DiskGUID()}, guids(p)...) {
			if seen[g] {
				t.Errorf("GUID %s appears twice across two seeds' plans", g)
			}
			if g[6]>>4 != 4 || g[8]>>6 != 2 {
				t.Errorf("GUID %s is not shaped as version 4", g)
			}
			seen[g] = true
		}
	}
}

func guids(p *Plan) []gpt.GUID {
	var gs []gpt.GUID
	for _, pt := range p.Partitions() {
		gs = append(gs, pt.GUID)
	}
	return gs
}

// On XFS with reflink=1 the payloads are shared with their sources, not copied.
func TestReflinkXFS(t *testing.T) {
	mnt := blockdevtest.XFS(t)
	opts := testOptions(t, mnt)
	img := filepath.Join(mnt, "node0.raw")
	st, err := Write(context.Background(), img, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Copied {
		t.Logf("%s %s: %d bytes by %v", c.Partition, c.Path, c.Bytes, c.Method)
		if c.Bytes >= 4096 && c.Method != blockdev.MethodReflink {
			t.Errorf("%s %s (%d bytes) took %v, want %v", c.Partition, c.Path, c.Bytes, c.Method, blockdev.MethodReflink)
		}
	}
	for _, p := range []string{img, string(opts.System.(fileBlob)), string(opts.Kernel.(fileBlob))} {
		if n := blockdevtest.SharedExtents(t, p); n == 0 {
			t.Errorf("filefrag -v shows no shared extent in %s", p)
		}
	}
	// Shared blocks are not allocated twice, but st_blocks counts them in
	// each file; what matters is that the bytes are right.
	f, _ := os.Open(img)
	defer f.Close()
	sys := blockdevtest.Read(t, opts.System)
	got := make([]byte, len(sys))
	f.ReadAt(got, 1<<20+opts.ESPSize)
	if !bytes.Equal(got, sys) {
		t.Error("SYSTEM-A differs from the payload after a reflink copy")
	}
	t.Logf("XFS: ESP %v, system %v, table %v, total %v", st.ESP, st.System, st.Table, st.Total)
}

// failingBlob fails to open.
type failingBlob struct{}

func (failingBlob) Open() (io.ReadCloser, error) { return nil, errors.New("payload vanished") }
func (failingBlob) Size() int64                  { return 100 }

// shortBlob declares more bytes than it has.
type shortBlob struct{ blockdev.Bytes }

func (s shortBlob) Size() int64 { return int64(len(s.Bytes)) + 1 }

// Every bad input is a one-line error naming the problem, and leaves nothing.
func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	base := testOptions(t, dir)
	out := t.TempDir()
	for _, c := range []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"system too big", func(o *Options) { o.SystemSize = 8 << 20 }, "system payload is 10.01 MiB, partition SYSTEM-A is 8 MiB"},
		{"disk too small", func(o *Options) { o.Size = 128 << 20 }, "disk size 128 MiB is smaller than the plan's 130.02 MiB"},
		{"default disk too small", func(o *Options) { o.Size, o.ESPSize, o.SystemSize = 2<<30, 0, 0 }, "disk size 2 GiB is smaller than the plan's 2.13 GiB"},
		{"no kernel", func(o *Options) { o.Kernel = nil }, "no kernel given"},
		{"no system", func(o *Options) { o.System = nil }, "no system given"},
		{"no loader", func(o *Options) { o.Loader = nil }, "no loader given"},
		{"missing kernel file", func(o *Options) { o.Kernel = fileBlob(filepath.Join(dir, "nope")) }, "is -1 bytes"},
		{"kernel vanishes", func(o *Options) { o.Kernel = failingBlob{} }, "payload vanished"},
		{"system short", func(o *Options) { o.System = shortBlob{blockdev.Bytes("abc")} }, "source ended after 3 bytes"},
		{"ESP full", func(o *Options) { o.ESPSize = 34 << 20; o.Kernel = blockdev.Bytes(make([]byte, 40<<20)) }, "the volume of 34 MiB has"},
		{"ESP clash", func(o *Options) { o.ExtraESPFiles = []File{{Path: "efi/boot/x", Blob: blockdev.Bytes("x")}} }, "differ only in case"},
		{"odd size", func(o *Options) { o.Size++ }, "not a positive multiple of 512"},
		{"odd ESP", func(o *Options) { o.ESPSize += 512 }, "ESP size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := base
			c.mutate(&opts)
			img := filepath.Join(out, "disk.raw")
			_, err := Write(context.Background(), img, opts)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v; want one line containing %q", err, c.want)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
	// A cancelled context stops the write and leaves nothing either.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Write(ctx, filepath.Join(out, "disk.raw"), base); !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a cancelled context: %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
