package disk

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
	qemu := needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	const code, vars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	needs.File(t, code, "apt-get install ovmf")
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
	opts.System = memBlob(append([]byte(marker), make([]byte, 4096-len(marker))...))
	img := filepath.Join(dir, "disk.raw")
	if _, err := Write(context.Background(), img, opts); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	varsCopy := filepath.Join(dir, "vars.fd")
	if err := os.WriteFile(varsCopy, b, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	q := exec.CommandContext(ctx, qemu,
		"-machine", "q35", "-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy,
		"-drive", "if=virtio,format=raw,file="+img,
		"-serial", "stdio")
	q.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	q.Cancel = func() error { return syscall.Kill(-q.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	q.Stderr = &stderr
	out, err := q.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	var console []string
	got := map[string]string{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		console = append(console, line)
		if kv, ok := strings.CutPrefix(line, "disk-bootcheck: "); ok {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
		}
	}
	werr := q.Wait()
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
		t.Fatalf("qemu: %v, ctx: %v\nstderr: %s\nlast console lines:\n%s", werr, ctx.Err(), stderr.String(),
			strings.Join(console[max(0, len(console)-30):], "\n"))
	}
	t.Logf("OVMF → systemd-boot → UKI → init → power-off in %v", time.Since(start))
}
