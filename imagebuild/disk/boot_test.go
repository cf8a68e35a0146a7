package disk

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/uki"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/internal/testvm"
)

// TestBootOVMF boots a node disk the way a node boots: OVMF finds
// EFI/BOOT/BOOTX64.EFI (systemd-boot) on the FAT32 ESP, systemd-boot starts
// the default entry qcluster-a.efi (a UKI around a tiny init), and the init
// reports what it sees: the selected entry, the partition names and the
// start of SYSTEM-A.
func TestBootOVMF(t *testing.T) {
	needs.Short(t, "boots a VM under TCG")
	const stubPath = "../../third_party/cache/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	needs.File(t, stubPath, "make fetch")
	stub, err := os.ReadFile(stubPath)
	if err != nil {
		t.Fatal(err)
	}
	g := testvm.Build(t, testvm.Options{Main: "./testdata/bootcheck", Modules: []string{"virtio_pci", "virtio_blk", "efivarfs"}})

	dir := t.TempDir()
	ukiPath := filepath.Join(dir, "uki.efi")
	f, err := os.Create(ukiPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := uki.Build(f, uki.Options{Stub: stub, OSRelease: "ID=qcluster\nNAME=\"disk boot test\"\nVERSION_ID=1\n",
		Cmdline: g.Append, Linux: fileBlob(g.Kernel), Initrd: fileBlob(g.Initrd)}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	const marker = "qcluster disk boot test: SYSTEM-A\n"
	opts := testOptions(t, dir)
	opts.Kernel = fileBlob(ukiPath)
	opts.System = blockdev.Bytes(append([]byte(marker), make([]byte, 4096-len(marker))...))
	img := filepath.Join(dir, "disk.raw")
	if _, err := Write(context.Background(), img, opts); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	console, werr := testvm.BootUEFI(t, img, 3*time.Minute)
	got := map[string]string{}
	for _, line := range console {
		if kv, ok := strings.CutPrefix(line, "disk-bootcheck: "); ok {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
		}
	}
	want := map[string]string{
		"entry":      "qcluster-a.efi",
		"partitions": "ESP,SYSTEM-A,SYSTEM-B,DATA",
		"system":     strings.TrimSuffix(marker, "\n"),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("guest reports %s=%q, want %q", k, got[k], v)
		}
	}
	if t.Failed() || werr != nil {
		t.Fatalf("%v\nlast console lines:\n%s", werr, testvm.Tail(console, 30))
	}
	t.Logf("OVMF → systemd-boot → UKI → init → power-off in %v", time.Since(start))
}
