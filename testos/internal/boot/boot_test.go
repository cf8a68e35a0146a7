package boot

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/qcluster/qcluster/imagebuild/disklayout"
	"github.com/qcluster/qcluster/imagebuild/gpt"
	"github.com/qcluster/qcluster/internal/needs"
)

func TestParseVerity(t *testing.T) {
	root := strings.Repeat("ab", 32)
	cmdline := "console=ttyS0 quiet qcluster.verity=1,4096,4096,812,813,sha256," + root + ",- panic=-1\n"
	v, ok := CmdlineValue(cmdline, VerityArg)
	if !ok {
		t.Fatal("qcluster.verity not found")
	}
	tab, err := ParseVerity(v)
	if err != nil {
		t.Fatal(err)
	}
	want := "1 /dev/vda2 /dev/vda2 4096 4096 812 813 sha256 " + root + " -"
	if got := tab.Params("/dev/vda2"); got != want {
		t.Errorf("params = %q, want %q", got, want)
	}
	if tab.Sectors() != 812*8 {
		t.Errorf("sectors = %d", tab.Sectors())
	}
	tab, err = ParseVerity("1,4096,4096,8,9,sha256," + root + ",0011,ignore_zero_blocks")
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.Params("d"); !strings.HasSuffix(got, " 0011 1 ignore_zero_blocks") {
		t.Errorf("params = %q", got)
	}
	for _, bad := range []string{"", "1,4096,4096,8,9,sha256," + root, "2,4096,4096,8,9,sha256," + root + ",-",
		"1,4000,4096,8,9,sha256," + root + ",-", "1,4096,4096,0,9,sha256," + root + ",-", "1,4096,4096,8,9,sha256,zz,-",
		"1,4096,4096,8,9,sha256," + root + ",xy", "1,4096,4096,8,9,sha256," + root + ",-,"} {
		if _, err := ParseVerity(bad); err == nil {
			t.Errorf("ParseVerity(%q) accepted", bad)
		}
	}
}

// TestDMStructLayout pins the DM ioctl structures to dm-ioctl.h's layout.
func TestDMStructLayout(t *testing.T) {
	if got := binary.Size(dmIoctl{}); got != dmIoctlSize {
		t.Errorf("binary.Size(dmIoctl) = %d, want %d", got, dmIoctlSize)
	}
	if got := unsafe.Sizeof(dmIoctl{}); got != dmIoctlSize {
		t.Errorf("unsafe.Sizeof(dmIoctl) = %d, want %d", got, dmIoctlSize)
	}
	if got := unsafe.Offsetof(dmIoctl{}.Dev); got != 40 {
		t.Errorf("offset of dev = %d, want 40", got)
	}
	if got := unsafe.Offsetof(dmIoctl{}.Name); got != 48 {
		t.Errorf("offset of name = %d, want 48", got)
	}
	if got := unsafe.Offsetof(dmIoctl{}.Data); got != 305 {
		t.Errorf("offset of data = %d, want 305", got)
	}
	if got := binary.Size(dmTargetSpec{}); got != dmSpecSize {
		t.Errorf("binary.Size(dmTargetSpec) = %d, want %d", got, dmSpecSize)
	}
	// DM_DEV_CREATE = _IOWR(0xfd, 3, struct dm_ioctl), as strace shows it.
	if got := dmRequest(dmDevCreateCmd); got != 0xc138fd03 {
		t.Errorf("DM_DEV_CREATE = %#x, want 0xc138fd03", got)
	}
	io, err := newDMIoctl("system", dmReadonlyFlag)
	if err != nil {
		t.Fatal(err)
	}
	b, err := marshalDM(io, []DMTarget{{0, 16, "verity", "1 a b"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%8 != 0 || binary.LittleEndian.Uint32(b[12:]) != uint32(len(b)) || binary.LittleEndian.Uint32(b[16:]) != dmIoctlSize ||
		binary.LittleEndian.Uint32(b[20:]) != 1 {
		t.Errorf("header of %d bytes: data_size %d, data_start %d, target_count %d", len(b),
			binary.LittleEndian.Uint32(b[12:]), binary.LittleEndian.Uint32(b[16:]), binary.LittleEndian.Uint32(b[20:]))
	}
	spec := b[dmIoctlSize:]
	if got := string(spec[24:30]); got != "verity" {
		t.Errorf("target type %q", got)
	}
	if got := string(spec[dmSpecSize : dmSpecSize+6]); got != "1 a b\x00" {
		t.Errorf("params %q", got)
	}
	if next := binary.LittleEndian.Uint32(spec[20:]); int(next) != len(spec) {
		t.Errorf("next = %d, want %d", next, len(spec))
	}
	if _, err := newDMIoctl(strings.Repeat("x", 128), 0); err == nil {
		t.Error("128-byte name accepted")
	}
}

// TestReadGPT reads a disk laid out like a node disk by sgdisk.
func TestReadGPT(t *testing.T) {
	sgdisk := needs.Tool(t, "sgdisk", "gdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sgdisk,
		"-n", "1:2048:+8M", "-t", "1:"+gpt.TypeEFISystem.String(), "-c", "1:ESP",
		"-n", "2:0:+16M", "-t", "2:"+disklayout.TypeSystem, "-c", "2:SYSTEM-A",
		"-n", "3:0:+16M", "-t", "3:"+disklayout.TypeSystem, "-c", "3:SYSTEM-B",
		"-n", "4:0:0", "-t", "4:"+disklayout.TypeData, "-c", "4:DATA",
		"-u", "2:11111111-2222-3333-4444-555555555555", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := ReadGPT(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 4 {
		t.Fatalf("%d partitions: %+v", len(parts), parts)
	}
	a, err := FindPart(parts, disklayout.TypeSystem, "SYSTEM-A")
	if err != nil {
		t.Fatal(err)
	}
	if a.Number != 2 || a.FirstLBA != 2048+16384 || a.SizeBytes(512) != 16<<20 || a.PartGUID != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("SYSTEM-A = %+v", a)
	}
	d, err := FindPart(parts, disklayout.TypeData, "DATA")
	if err != nil {
		t.Fatal(err)
	}
	if d.Number != 4 {
		t.Errorf("DATA = %+v", d)
	}
	if _, err := FindPart(parts, disklayout.TypeData, "SYSTEM-A"); err == nil {
		t.Error("found SYSTEM-A with the data type")
	}

	// A flipped byte in the partition array fails the CRC check.
	b, _ := os.ReadFile(img)
	b[1024+56] ^= 1
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := os.Open(img)
	defer g.Close()
	if _, err := ReadGPT(g, 512); err == nil || !strings.Contains(err.Error(), "CRC32") {
		t.Errorf("corrupt array: err = %v", err)
	}
}

func TestEFIString(t *testing.T) {
	b := []byte{7, 0, 0, 0}
	for _, r := range "qcluster-b.efi" {
		b = append(b, byte(r), 0)
	}
	b = append(b, 0, 0)
	if got := efiString(b); got != "qcluster-b.efi" {
		t.Errorf("efiString = %q", got)
	}
}
