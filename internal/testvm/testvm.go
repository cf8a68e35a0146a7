// Package testvm builds tiny guests for tests that need a real VM: a Go main
// package becomes /init of an initramfs, beside the kernel modules it asks
// for, to be booted by direct kernel boot with the Debian cloud kernel that
// third_party/fetch.sh unpacks. The guest side helpers are in testvm/guest.
//
// It builds with the host's go command (CGO_ENABLED=0) into the test's temp
// directory; the kernel and modules are found through package resolve, and
// their absence skips the test locally and fails it in CI (package needs).
package testvm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/cpio"
	"github.com/qcluster/qcluster/imagebuild/kmod"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/resolve"
)

// Options describe a test guest.
type Options struct {
	// Main is the Go main package that becomes /init, as a path relative to
	// the test's working directory ("./testdata/marker") or an import path.
	Main string
	// Modules are kernel modules to load at boot (with their dependencies),
	// by testvm/guest.Setup. Default: none.
	Modules []string
	// Files are extra files for the initramfs, by absolute path in the guest.
	Files map[string][]byte
}

// Guest is what QEMU needs for a direct kernel boot.
type Guest struct {
	Kernel string // path of vmlinuz
	Initrd string // path of the initramfs (uncompressed newc)
	// Append is a kernel command line that suits the guest: serial console,
	// quiet, power off instead of reboot on panic.
	Append string
}

// Build builds the guest described by opts in t's temp directory.
func Build(t testing.TB, opts Options) Guest {
	t.Helper()
	// go build needs the module's go.mod, which Bazel's runfiles lack.
	needs.Checkout(t)
	kernel, err := resolve.Find(resolve.Kernel(""))
	if err != nil {
		needs.File(t, "third_party/cache/root/boot/vmlinuz-*", err.Error())
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, opts.Main)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("testvm: go build %s: %v\n%s", opts.Main, err, out)
	}
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf, 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("testvm: initramfs: %v", err)
		}
	}
	must(w.CharDev("/dev/console", 0o600, 5, 1))
	must(w.Dir("/proc", 0o755))
	must(w.Dir("/sys", 0o755))
	must(w.Dir("/tmp", 0o1777))
	initData, err := os.ReadFile(initBin)
	must(err)
	must(w.File("/init", 0o755, initData))
	if len(opts.Modules) > 0 {
		modDir, err := resolve.Find(resolve.Modules(""))
		must(err)
		set, err := kmod.Open(modDir)
		must(err)
		mods, err := set.Resolve(opts.Modules...)
		must(err)
		must(kmod.AddToArchive(w, mods))
	}
	for name, data := range opts.Files {
		must(w.File(name, 0o644, data))
	}
	must(w.Close())
	initrd := filepath.Join(dir, "initrd.cpio")
	must(os.WriteFile(initrd, buf.Bytes(), 0o644))
	return Guest{
		Kernel: kernel,
		Initrd: initrd,
		Append: "console=ttyS0 quiet panic=-1 random.trust_cpu=on",
	}
}
