package boot

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// EarlyMounts mounts the kernel file systems PID 1 needs: /proc, /sys, /dev
// (devtmpfs), /run and /tmp. Those already mounted (by stage 1) are kept.
func EarlyMounts() error {
	for _, m := range []struct {
		src, dir, fstype string
		magic            int64
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.PROC_SUPER_MAGIC, unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.SYSFS_MAGIC, unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.TMPFS_MAGIC, unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.TMPFS_MAGIC, unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.TMPFS_MAGIC, unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
		if mounted(m.dir, m.magic) {
			continue
		}
		if err := unix.Mount(m.src, m.dir, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	return nil
}

// mounted reports whether dir is a mount point of a file system with magic
// (the initramfs root is ramfs or tmpfs itself, so /dev must also differ
// from / by device).
func mounted(dir string, magic int64) bool {
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) != nil || fs.Type != magic {
		return false
	}
	var d, root unix.Stat_t
	if unix.Stat(dir, &d) != nil || unix.Stat("/", &root) != nil {
		return false
	}
	return d.Dev != root.Dev
}

// MountEFIVars mounts efivarfs read-only when the machine booted through
// UEFI (the efivarfs module must be loaded). Without it Slot says A.
func MountEFIVars() error {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		return nil
	}
	if mounted(EFIVarsDir, unix.EFIVARFS_MAGIC) {
		return nil
	}
	if err := unix.Mount("efivarfs", EFIVarsDir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount efivarfs on %s: %w", EFIVarsDir, err)
	}
	return nil
}

// Fatal prints "qcluster-agent: fatal: <err>" on the console and powers off.
func Fatal(err error) {
	fmt.Fprintf(os.Stdout, "%s%v\n", FatalPrefix, err)
	PowerOff(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// PowerOff syncs, unmounts DATA and reboots or powers off (cmd is a
// LINUX_REBOOT_CMD_*). It does not return.
func PowerOff(cmd int) {
	unix.Sync()
	_ = unix.Unmount(DataMount, 0)
	unix.Sync()
	_ = unix.Reboot(cmd)
	// Reboot(2) only fails without CAP_SYS_BOOT; PID 1 exiting panics the
	// kernel, which with panic=-1 restarts the machine: better than hanging.
	os.Exit(1)
}
