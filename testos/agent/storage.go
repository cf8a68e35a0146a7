package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/qcluster/qcluster/imagebuild/disklayout"
	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/testos/api"
	"github.com/qcluster/qcluster/testos/internal/boot"
)

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

// bring finds the disk and the booted slot, opens and mounts the slot unless
// stage 1 did, reads it all back through dm-verity while it formats (first
// boot) and mounts DATA and counts the boot. A verity failure is returned as
// an error (fatal: the node powers off).
func (s *storageState) bring(ctx context.Context, log *slog.Logger, stage1 bool) error {
	disk, parts, err := boot.FindDisk(ctx)
	if err != nil {
		return err
	}
	s.disk = disk
	for _, p := range parts {
		s.parts = append(s.parts, &api.Partition{Number: uint32(p.Number), Name: p.Name, TypeGuid: p.TypeGUID,
			PartGuid: p.PartGUID, FirstLba: p.FirstLBA, SizeBytes: p.SizeBytes(512), Device: boot.PartDevice(disk, p.Number)})
	}
	s.entry, s.slot, s.slotSource = boot.Slot()
	if s.slotSource == "default" {
		log.Info("no qcluster entry in LoaderEntrySelected: slot A", "entry", s.entry)
	}
	sys, err := boot.FindPart(parts, disklayout.TypeSystem, disklayout.SystemName(s.slot))
	if err != nil {
		return fmt.Errorf("slot %s: %w", s.slot, err)
	}
	dataPart, err := boot.FindPart(parts, disklayout.TypeData, disklayout.NameData)
	if err != nil {
		return err
	}

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read kernel command line: %w", err)
	}
	sysDev := boot.PartDevice(disk, sys.Number)
	s.verity = &api.Verity{DataDevice: sysDev, State: api.Verity_STATE_ERROR}
	t, err := boot.VerityFromCmdline(string(cmdline))
	if err != nil {
		return fmt.Errorf("verity: %w", err)
	}
	s.verity.RootHash, s.verity.DataBlocks, s.verity.DataBlockSize = t.RootHex, t.DataBlocks, t.DataBlockSize
	s.verity.MappedDevice = "/dev/mapper/" + boot.MappedName
	// Stage 1 opened the slot and read every file back before starting
	// the agent from it. Without stage 1 the agent does both, reading back
	// while DATA is prepared.
	verified := make(chan error, 1)
	if stage1 {
		verified <- nil
	} else {
		if _, _, err := boot.OpenSystem(ctx); err != nil {
			return err
		}
		go func() {
			start := time.Now()
			n, err := boot.ReadBack(systemMount)
			log.Info("verity read-back", "dir", systemMount, "bytes", n, "took", time.Since(start).Round(time.Millisecond), "err", err)
			verified <- err
		}()
	}

	dataErr := s.bringData(log, boot.PartDevice(disk, dataPart.Number))
	if err := <-verified; err != nil {
		s.verity.Error = err.Error()
		return fmt.Errorf("verity: slot %s (%s, root hash %s): %w", s.slot, sysDev, s.verity.RootHash, err)
	}
	s.verity.State = api.Verity_STATE_OK
	return dataErr
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
		argv := append(append([]string(nil), mke2fsArgv...), "-t", "ext4", "-F", "-q", "-L", disklayout.NameData, "-U", id,
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
	return id, atomicfile.WriteDurable(path, []byte(id+"\n"), 0o600)
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
	return n, atomicfile.WriteDurable(path, []byte(strconv.FormatUint(n, 10)+"\n"), 0o600)
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
