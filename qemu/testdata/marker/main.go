// Command marker is the test guest of package qemu: it prints a marker line
// once it listens for the ACPI power button, powers off when the button is
// pressed (QMP system_powerdown), and reboots when "reboot" is typed on its
// console.
//
// Under Linux the power button needs the guest's cooperation: the ACPI
// button driver (module "button" in Debian's cloud kernel) turns the fixed
// power-button event into a KEY_POWER key press on an input device, and
// userspace (here: this init, reading /dev/input/event* through the evdev
// module) decides to power off. A guest with neither ignores
// system_powerdown.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/testvm/guest"
)

const (
	evKey    = 1   // EV_KEY
	keyPower = 116 // KEY_POWER
)

func main() {
	guest.Setup()
	pressed := make(chan string, 1)
	names, _ := filepath.Glob("/sys/class/input/event*/device/name")
	listening := 0
	for _, n := range names {
		name, err := os.ReadFile(n)
		if err != nil || !strings.Contains(string(name), "Power Button") {
			continue
		}
		dev := "/dev/input/" + filepath.Base(filepath.Dir(filepath.Dir(n)))
		f, err := os.Open(dev)
		if err != nil {
			guest.Fatal(err)
		}
		listening++
		go watch(f, pressed)
	}
	if listening == 0 {
		guest.Fatal(fmt.Errorf("no power button input device among %v", names))
	}
	go func() {
		s := bufio.NewScanner(os.Stdin)
		for s.Scan() {
			if strings.TrimSpace(s.Text()) == "reboot" {
				fmt.Println("qemu-marker: rebooting")
				drain()
				unix.Sync()
				_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
			}
		}
	}()
	fmt.Printf("qemu-marker: ready, watching %d power button(s)\n", listening)
	fmt.Printf("qemu-marker: %s pressed, powering off\n", <-pressed)
	drain()
	guest.PowerOff()
}

// drain waits until the console has sent what was written to it (tcdrain),
// so that the last line is not lost to the power-off.
func drain() { _ = unix.IoctlSetInt(int(os.Stdout.Fd()), unix.TCSBRK, 1) }

// watch reads struct input_event (amd64: 16-byte time, u16 type, u16 code,
// s32 value) from f until a power key press.
func watch(f *os.File, pressed chan<- string) {
	var ev [24]byte
	for {
		if _, err := f.Read(ev[:]); err != nil {
			guest.Fatal(fmt.Errorf("read %s: %w", f.Name(), err))
		}
		typ, code := binary.LittleEndian.Uint16(ev[16:]), binary.LittleEndian.Uint16(ev[18:])
		value := int32(binary.LittleEndian.Uint32(ev[20:]))
		if typ == evKey && code == keyPower && value == 1 {
			select {
			case pressed <- f.Name():
			default:
			}
		}
	}
}
