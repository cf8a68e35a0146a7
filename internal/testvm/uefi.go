package testvm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qcluster/qcluster/internal/needs"
)

// OVMF firmware as Debian's ovmf package installs it.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// BootUEFI boots disk (a raw image) under OVMF with plain QEMU — q35, TCG,
// 512 MiB, a fresh variable store, serial on stdout, -no-reboot — and
// returns the console's lines once QEMU exits (the guest powers off) or
// timeout passes. The error carries QEMU's stderr.
func BootUEFI(t testing.TB, disk string, timeout time.Duration) ([]string, error) {
	t.Helper()
	needs.Short(t, "boots a VM under TCG")
	qemu := needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	needs.File(t, ovmfCode, "apt-get install ovmf")
	vars, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	varsCopy := filepath.Join(t.TempDir(), "vars.fd")
	if err := os.WriteFile(varsCopy, vars, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	q := exec.CommandContext(ctx, qemu,
		"-machine", "q35", "-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy,
		"-drive", "if=virtio,format=raw,file="+disk,
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
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		console = append(console, strings.TrimRight(sc.Text(), "\r"))
	}
	if err := q.Wait(); err != nil {
		return console, fmt.Errorf("qemu: %w (context: %v): %s", err, ctx.Err(), strings.TrimSpace(stderr.String()))
	}
	return console, nil
}

// Tail returns the last n lines of console, joined, for error messages.
func Tail(console []string, n int) string {
	return strings.Join(console[max(0, len(console)-n):], "\n")
}
