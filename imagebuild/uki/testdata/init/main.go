// Command init is the /init of the boot test's initramfs: it prints a marker
// on the console and powers the machine off.
package main

import (
	"os"
	"syscall"
)

func main() {
	os.Mkdir("/proc", 0o555)
	syscall.Mount("proc", "/proc", "proc", 0, "")
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err == nil {
		con.WriteString("\nqcluster-uki-test: init reached, cmdline: ")
		if b, err := os.ReadFile("/proc/cmdline"); err == nil {
			con.Write(b)
		} else {
			con.WriteString("(no /proc: " + err.Error() + ")\n")
		}
		con.Sync()
	}
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}
