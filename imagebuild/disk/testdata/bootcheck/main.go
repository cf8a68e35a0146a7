// Command bootcheck is the init of imagebuild/disk's boot test. Booted from
// a node disk through OVMF and systemd-boot, it prints what the guest sees
// of that disk, one "disk-bootcheck: " line each, and powers off: the entry
// systemd-boot selected (LoaderEntrySelected), the partition names of vda,
// and the first line of SYSTEM-A.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/testvm/guest"
)

// loaderEntry is systemd-boot's LoaderEntrySelected variable in efivarfs.
const loaderEntry = "/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

func main() {
	guest.Setup()
	if err := unix.Mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", 0, ""); err != nil {
		guest.Fatal(fmt.Errorf("mount efivarfs: %w", err))
	}
	b, err := os.ReadFile(loaderEntry)
	if err != nil {
		guest.Fatal(err)
	}
	// 4 bytes of attributes, then a NUL-terminated UTF-16LE string.
	var u []uint16
	for i := 4; i+1 < len(b); i += 2 {
		if c := binary.LittleEndian.Uint16(b[i:]); c != 0 {
			u = append(u, c)
		} else {
			break
		}
	}
	fmt.Printf("disk-bootcheck: entry=%s\n", string(utf16.Decode(u)))

	var names []string
	for i := 1; ; i++ {
		ev, err := os.ReadFile(fmt.Sprintf("/sys/class/block/vda%d/uevent", i))
		if err != nil {
			break
		}
		for _, line := range strings.Split(string(ev), "\n") {
			if name, ok := strings.CutPrefix(line, "PARTNAME="); ok {
				names = append(names, name)
			}
		}
	}
	fmt.Printf("disk-bootcheck: partitions=%s\n", strings.Join(names, ","))

	f, err := os.Open("/dev/vda2")
	if err != nil {
		guest.Fatal(err)
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		guest.Fatal(fmt.Errorf("read /dev/vda2: %w", err))
	}
	fmt.Printf("disk-bootcheck: system=%s", line)
	guest.PowerOff()
}
