//go:build linux

// Package guest is the inside of a testvm guest: the few things every tiny
// test init does before its real work, and a clean power-off afterwards.
package guest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/kmodload"
)

// Setup mounts /proc, /sys and /dev and loads the modules the initramfs
// carries. Failures are fatal: it prints them and powers off, so that a test
// sees the reason on the console instead of a hang.
func Setup() {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && err != unix.EBUSY {
			Fatal(fmt.Errorf("mount %s: %w", m.dst, err))
		}
	}
	if _, err := os.Stat("/lib/modules/load.order"); err == nil {
		if err := kmodload.Load("/lib/modules"); err != nil {
			Fatal(err)
		}
	}
}

// Fatal prints err to the console and powers the machine off.
func Fatal(err error) {
	fmt.Printf("testvm-guest: fatal: %v\n", err)
	PowerOff()
}

// PowerOff syncs and powers the machine off; QEMU then exits.
func PowerOff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {} // PID 1 must not exit: that would panic the kernel.
}
