package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/qcluster/qcluster/testos/api"
)

// loaderEntryVar is systemd-boot's LoaderEntrySelected EFI variable
// (vendor GUID 4a67b082-0a4c-41cf-b6c7-440b29bb8c4f): the entry it booted.
const loaderEntryVar = efiVarsDir + "/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// storageState is what the storage step found; read-only after bring.
type storageState struct {
	disk       string // e.g. "/dev/vda"
	parts      []*api.Partition
	slot       string // "A" or "B"
	slotSource string // "efivar" or "default"
	entry      string // raw LoaderEntrySelected
	verity     *api.Verity
	data       *api.DataPartition
	nodeID     string
	bootCount  uint64

	mu sync.Mutex // serialises DATA file writes
}

// bring finds the disk, opens and verifies the booted slot, mounts it, then
// formats (first boot) and mounts DATA and counts the boot. A verity failure
// is returned as an error (fatal: the node powers off).
func (s *storageState) bring(ctx context.Context, log *slog.Logger, cfg *config) error {
	disk, parts, err := findDisk(ctx)
	if err != nil {
		return err
	}
	s.disk = disk
	for _, p := range parts {
		s.parts = append(s.parts, &api.Partition{Number: uint32(p.number), Name: p.name, TypeGuid: p.typeGUID,
			PartGuid: p.partGUID, FirstLba: p.firstLBA, SizeBytes: p.sizeBytes(512), Device: partDevice(disk, p.number)})
	}
	s.entry, s.slot, s.slotSource = bootedSlot(log)
	sys, err := findPart(parts, typeSystem, "SYSTEM-"+s.slot)
	if err != nil {
		return fmt.Errorf("slot %s: %w", s.slot, err)
	}
	dataPart, err := findPart(parts, typeData, "DATA")
	if err != nil {
		return err
	}

	// dm-verity over the slot, every block read back, then mounted.
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read kernel command line: %w", err)
	}
	sysDev := partDevice(disk, sys.number)
	s.verity = &api.Verity{DataDevice: sysDev, State: api.Verity_STATE_ERROR}
	mapped, err := openVerity(string(cmdline), sysDev, s.verity)
	if err != nil {
		return fmt.Errorf("verity: slot %s (%s): %w", s.slot, sysDev, err)
	}
	if err := os.MkdirAll(systemMount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(mapped, systemMount, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("verity: mount %s (erofs) on %s: %w", mapped, systemMount, err)
	}
	// The full read proves every block against the root hash; it runs
	// while DATA is prepared.
	verified := make(chan error, 1)
	go func() { verified <- readAll(mapped) }()

	dataErr := s.bringData(log, partDevice(disk, dataPart.number))
	if err := <-verified; err != nil {
		s.verity.Error = err.Error()
		return fmt.Errorf("verity: slot %s (%s through %s, root hash %s): %w", s.slot, sysDev, mapped, s.verity.RootHash, err)
	}
	s.verity.State = api.Verity_STATE_OK
	return dataErr
}

// findDisk returns the first disk whose GPT has a DATA partition, and its
// partitions. Modules are loaded synchronously, but a disk may still be
// probing; it waits up to 10 s.
func findDisk(ctx context.Context) (string, []gptPart, error) {
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
				if p.typeGUID == typeData {
					return dev, parts, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("find the node disk: no disk with a GPT DATA partition (type %s) among %v", typeData, seen)
		}
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readDiskGPT reads the GPT of a block device.
func readDiskGPT(dev string) ([]gptPart, error) {
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
	return readGPT(f, ss)
}

// partDevice returns the device node of partition number n of disk, from
// sysfs (so nvme0n1p2 works as well as vda2); "" when the kernel made none.
func partDevice(disk string, n int) string {
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

// bootedSlot reads LoaderEntrySelected: "qcluster-b.efi" means B; anything
// else, or no variable, means A.
func bootedSlot(log *slog.Logger) (entry, slot, source string) {
	b, err := os.ReadFile(loaderEntryVar)
	if err != nil {
		log.Info("no LoaderEntrySelected: slot A", "err", err)
		return "", "A", "default"
	}
	entry = efiString(b)
	switch strings.ToLower(entry) {
	case "qcluster-b.efi":
		return entry, "B", "efivar"
	case "qcluster-a.efi":
		return entry, "A", "efivar"
	}
	log.Warn("LoaderEntrySelected names no qcluster slot: slot A", "entry", entry)
	return entry, "A", "default"
}

// efiString decodes an efivarfs file holding a UTF-16LE string: 4 bytes of
// attributes, then the NUL-terminated string.
func efiString(b []byte) string {
	if len(b) < 4 {
		return ""
	}
	b = b[4:]
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// openVerity maps dev through dm-verity with the table from the command line
// and returns the mapped device.
func openVerity(cmdline, dev string, v *api.Verity) (string, error) {
	arg, ok := cmdlineValue(cmdline, verityArg)
	if !ok {
		return "", fmt.Errorf("no %s= on the kernel command line", verityArg)
	}
	t, err := parseVerity(arg)
	if err != nil {
		return "", err
	}
	v.RootHash = t.rootHex
	v.DataBlocks = t.dataBlocks
	v.DataBlockSize = t.dataBlockSize
	if dev == "" {
		return "", errors.New("the slot's partition has no device node")
	}
	mapped, err := dmCreate("system", "qcluster-system", []dmTarget{{start: 0, length: t.sectors(), typ: "verity", params: t.params(dev)}})
	if err != nil {
		return "", err
	}
	v.MappedDevice = mapped
	return mapped, nil
}

// readAll reads a device to its end; with dm-verity underneath, any block
// that does not match the hash tree fails with EIO.
func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := f.Read(buf)
		off += int64(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read back near byte %d: %w", off, err)
		}
	}
}

// Files the agent keeps on DATA.
const (
	stateDir      = dataMount + "/qcluster"
	bootCountFile = stateDir + "/boot-count"
	nodeIDFile    = stateDir + "/node-id"
)

// mke2fs as shipped in the system partition, run through the system's
// dynamic loader (the initramfs has no libc).
var mke2fsArgv = []string{
	systemMount + "/lib64/ld-linux-x86-64.so.2",
	"--library-path", systemMount + "/lib/x86_64-linux-gnu",
	systemMount + "/sbin/mke2fs",
}

// bringData formats dev on first boot (no ext4 superblock), mounts it and
// counts the boot.
func (s *storageState) bringData(log *slog.Logger, dev string) error {
	s.data = &api.DataPartition{Device: dev, MountPoint: dataMount, Filesystem: "ext4"}
	if dev == "" {
		return errors.New("data: the DATA partition has no device node")
	}
	formatted, err := hasExt4(dev)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if !formatted {
		id, err := newUUID()
		if err != nil {
			return fmt.Errorf("data: %w", err)
		}
		t := time.Now()
		argv := append(append([]string(nil), mke2fsArgv...), "-t", "ext4", "-F", "-q", "-L", "DATA", "-U", id,
			"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,hash_seed="+id, dev)
		if err := runCommand([]string{"MKE2FS_CONFIG=" + systemMount + "/etc/mke2fs.conf"}, argv...); err != nil {
			return fmt.Errorf("data: format %s: %w", dev, err)
		}
		log.Info("formatted DATA", "device", dev, "took", time.Since(t).Round(time.Millisecond))
		s.data.FormattedThisBoot = true
	}
	if err := os.MkdirAll(dataMount, 0o755); err != nil {
		return err
	}
	// noinit_itable: the inode tables of a sparse disk read as zeroes
	// already; do not have the kernel write them in the background.
	if err := unix.Mount(dev, dataMount, "ext4", unix.MS_NODEV|unix.MS_NOSUID, "noinit_itable"); err != nil {
		return fmt.Errorf("data: mount %s (ext4) on %s: %w", dev, dataMount, err)
	}
	s.data.Mounted = true
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if s.nodeID, err = loadOrCreateID(nodeIDFile); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if s.bootCount, err = countBoot(bootCountFile); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}

// hasExt4 reports whether dev starts with an ext2/3/4 superblock (magic
// 0xEF53 at byte 1024+56).
func hasExt4(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, 1024+56); err != nil {
		return false, fmt.Errorf("read superblock of %s: %w", dev, err)
	}
	return binary.LittleEndian.Uint16(b) == 0xEF53, nil
}

// newUUID returns a random version 4 UUID.
func newUUID() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", err
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}

// loadOrCreateID returns the node ID stored in path, making one first.
func loadOrCreateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) == 36 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read node id: %w", err)
	}
	id, err := newUUID()
	if err != nil {
		return "", err
	}
	return id, writeFileAtomic(path, []byte(id+"\n"), 0o600)
}

// countBoot increments the boot counter in path and returns the new value.
func countBoot(path string) (uint64, error) {
	var n uint64
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		n, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("boot counter %s holds %q: %w", path, b, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return 0, fmt.Errorf("read boot counter: %w", err)
	}
	n++
	return n, writeFileAtomic(path, []byte(strconv.FormatUint(n, 10)+"\n"), 0o600)
}

// writeFileAtomic writes a file through a synced temp file and a rename.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// dataPath resolves a client's path below the DATA mount point, refusing
// anything that is not a clean relative path staying below it.
func dataPath(root, p string) (string, error) {
	if p == "" || filepath.IsAbs(p) || filepath.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("path %q: want a clean relative path below the data partition", p)
	}
	return filepath.Join(root, p), nil
}

// dataStats fills size and free bytes of the mounted DATA file system.
func (s *storageState) dataStats() *api.DataPartition {
	if s.data == nil {
		return nil
	}
	d := proto.Clone(s.data).(*api.DataPartition)
	var st unix.Statfs_t
	if d.Mounted && unix.Statfs(dataMount, &st) == nil {
		d.SizeBytes = st.Blocks * uint64(st.Bsize)
		d.FreeBytes = st.Bavail * uint64(st.Bsize)
	}
	return d
}
