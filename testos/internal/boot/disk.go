package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/imagebuild/disklayout"
)

// FindDisk returns the first disk whose GPT has a DATA partition, and its
// partitions. Modules load synchronously, but a disk may still be probing;
// it waits up to 10 s.
func FindDisk(ctx context.Context) (string, []Part, error) {
	deadline := time.Now().Add(10 * time.Second)
	var seen []string
	for {
		seen = seen[:0]
		ents, _ := os.ReadDir("/sys/block")
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "dm-") || strings.HasPrefix(name, "sr") {
				continue
			}
			dev := "/dev/" + name
			seen = append(seen, dev)
			parts, err := readDiskGPT(dev)
			if err != nil {
				continue
			}
			for _, p := range parts {
				if p.TypeGUID == disklayout.TypeData {
					return dev, parts, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("find the node disk: no disk with a GPT %s partition (type %s) among %v", disklayout.NameData, disklayout.TypeData, seen)
		}
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readDiskGPT reads the GPT of a block device.
func readDiskGPT(dev string) ([]Part, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return nil, fmt.Errorf("%s: BLKSSZGET: %w", dev, err)
	}
	if ss != 512 {
		return nil, fmt.Errorf("%s: %d-byte sectors, want 512", dev, ss)
	}
	return ReadGPT(f, ss)
}

// PartDevice returns the device node of partition number n of disk, from
// sysfs (so nvme0n1p2 works as well as vda2); "" when the kernel made none.
func PartDevice(disk string, n int) string {
	name := filepath.Base(disk)
	ents, _ := os.ReadDir("/sys/block/" + name)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", name, e.Name(), "partition"))
		if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(n) {
			return "/dev/" + e.Name()
		}
	}
	return ""
}

// EFIVarsDir is where efivarfs is mounted.
const EFIVarsDir = "/sys/firmware/efi/efivars"

// loaderEntryVar is systemd-boot's LoaderEntrySelected EFI variable
// (vendor GUID 4a67b082-0a4c-41cf-b6c7-440b29bb8c4f): the entry it booted.
const loaderEntryVar = EFIVarsDir + "/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// Slot reads LoaderEntrySelected: "qcluster-b.efi" means B, "qcluster-a.efi"
// A (source "efivar"); anything else or no variable means A (source
// "default"). entry is the variable's value, "" if there is none.
func Slot() (entry, slot, source string) {
	b, err := os.ReadFile(loaderEntryVar)
	if err != nil {
		return "", "A", "default"
	}
	entry = efiString(b)
	switch strings.ToLower(entry) {
	case disklayout.EntryB:
		return entry, "B", "efivar"
	case disklayout.EntryA:
		return entry, "A", "efivar"
	}
	return entry, "A", "default"
}

// efiString decodes an efivarfs file holding a UTF-16LE string: 4 bytes of
// attributes, then the NUL-terminated string.
func efiString(b []byte) string {
	if len(b) < 4 {
		return ""
	}
	return utf16String(b[4:])
}

// OpenVerity maps dev through dm-verity (device-mapper name MappedName) with
// the table from the kernel command line and returns the mapped device.
func OpenVerity(cmdline, dev string) (string, VerityTable, error) {
	t, err := VerityFromCmdline(cmdline)
	if err != nil {
		return "", t, err
	}
	if dev == "" {
		return "", t, errors.New("the slot's partition has no device node")
	}
	mapped, err := DMCreate(MappedName, "qcluster-"+MappedName, []DMTarget{{Start: 0, Length: t.Sectors(), Type: "verity", Params: t.Params(dev)}})
	return mapped, t, err
}

// VerityFromCmdline parses the qcluster.verity argument of a command line.
func VerityFromCmdline(cmdline string) (VerityTable, error) {
	arg, ok := CmdlineValue(cmdline, VerityArg)
	if !ok {
		return VerityTable{}, fmt.Errorf("no %s= on the kernel command line", VerityArg)
	}
	return ParseVerity(arg)
}

// OpenSystem finds the node disk, picks the booted slot, opens it through
// dm-verity and mounts it read-only (EROFS) on SystemMount. It returns the
// slot's partition device and the mapped device.
func OpenSystem(ctx context.Context) (slotDev, mapped string, err error) {
	disk, parts, err := FindDisk(ctx)
	if err != nil {
		return "", "", err
	}
	_, slot, _ := Slot()
	sys, err := FindPart(parts, disklayout.TypeSystem, disklayout.SystemName(slot))
	if err != nil {
		return "", "", fmt.Errorf("slot %s: %w", slot, err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", "", fmt.Errorf("read kernel command line: %w", err)
	}
	slotDev = PartDevice(disk, sys.Number)
	mapped, t, err := OpenVerity(string(cmdline), slotDev)
	if err != nil {
		return slotDev, "", fmt.Errorf("verity: slot %s (%s): %w", slot, slotDev, err)
	}
	if err := os.MkdirAll(SystemMount, 0o755); err != nil {
		return slotDev, mapped, err
	}
	if err := unix.Mount(mapped, SystemMount, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return slotDev, mapped, fmt.Errorf("verity: mount %s (erofs, slot %s, root hash %s) on %s: %w", mapped, slot, t.RootHex, SystemMount, err)
	}
	return slotDev, mapped, nil
}

// ReadBack reads every file, directory and symlink below root (a file system
// on dm-verity) and returns the bytes of file data read. Every block read is
// checked against the hash tree, so one that does not match fails with EIO.
// Reading through the file system rather than the block device leaves the
// files' pages cached: the programs then started from root do not read and
// verify their blocks a second time.
func ReadBack(root string) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			_, err = os.Readlink(p)
			return err
		case !d.Type().IsRegular():
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		for {
			n, err := f.Read(buf)
			total += int64(n)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
	if err != nil {
		return total, fmt.Errorf("read back %s: %w", root, err)
	}
	return total, nil
}
