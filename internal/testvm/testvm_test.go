package testvm

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/qcluster/qcluster/internal/needs"
)

// TestBoot boots a guest with plain QEMU: the package's own proof that the
// kernel, the initramfs and the module loading work together.
func TestBoot(t *testing.T) {
	needs.Short(t, "boots a VM")
	qemu := needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	g := Build(t, Options{Main: "./testdata/hello", Modules: []string{"virtio_pci", "virtio-rng"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "q35", "-accel", "tcg", "-m", "256", "-nodefaults",
		"-display", "none", "-serial", "stdio", "-no-reboot", "-device", "virtio-rng-pci",
		"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", g.Append)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "testvm-hello: hw_random=true") {
		t.Fatalf("guest did not report virtio-rng:\n%s", out)
	}
}
