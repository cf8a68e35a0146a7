// Command dmguest is the guest of verity's VM test: for each table in
// /verity/*.table it creates a read-only dm-verity device through
// /dev/mapper/control ioctls (the way the node agent does), mounts the EROFS
// file system on it and prints the SHA-256 of /payload, or the error.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/testvm/guest"
)

func main() {
	guest.Setup()
	tables, _ := filepath.Glob("/verity/*.table")
	for _, p := range tables {
		name := strings.TrimSuffix(filepath.Base(p), ".table")
		sum, err := check(name, p)
		if err != nil {
			fmt.Printf("dmguest %s: error: %v\n", name, err)
		} else {
			fmt.Printf("dmguest %s: sha256=%x\n", name, sum)
		}
	}
	guest.PowerOff()
}

func check(name, tablePath string) ([]byte, error) {
	line, err := os.ReadFile(tablePath)
	if err != nil {
		return nil, err
	}
	dev, err := createVerity(name, strings.TrimSpace(string(line)))
	if err != nil {
		return nil, err
	}
	node := "/dev/" + name
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return nil, fmt.Errorf("mknod %s: %w", node, err)
	}
	mnt := "/mnt/" + name
	os.MkdirAll(mnt, 0o755)
	if err := unix.Mount(node, mnt, "erofs", unix.MS_RDONLY, ""); err != nil {
		return nil, fmt.Errorf("mount erofs: %w", err)
	}
	b, err := os.ReadFile(mnt + "/payload")
	if err != nil {
		return nil, err
	}
	s := sha256.Sum256(b)
	return s[:], nil
}

// createVerity creates device name with the one-line table
// "<start> <length> verity <params>" and returns its device number.
func createVerity(name, table string) (uint64, error) {
	f := strings.SplitN(table, " ", 4)
	if len(f) != 4 || f[2] != "verity" {
		return 0, fmt.Errorf("bad table %q", table)
	}
	start, err1 := strconv.ParseUint(f[0], 10, 64)
	length, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad table %q", table)
	}
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer ctl.Close()
	if _, err := dmIoctl(ctl, unix.DM_DEV_CREATE, name, 0, nil); err != nil {
		return 0, fmt.Errorf("DM_DEV_CREATE: %w", err)
	}
	var spec bytes.Buffer
	params := append([]byte(f[3]), 0)
	next := (40 + len(params) + 7) &^ 7
	binary.Write(&spec, binary.LittleEndian, unix.DmTargetSpec{Sector_start: start, Length: length,
		Next: uint32(next), Target_type: [16]byte{'v', 'e', 'r', 'i', 't', 'y'}})
	spec.Write(params)
	spec.Write(make([]byte, next-spec.Len()))
	if _, err := dmIoctl(ctl, unix.DM_TABLE_LOAD, name, unix.DM_READONLY_FLAG, spec.Bytes()); err != nil {
		return 0, fmt.Errorf("DM_TABLE_LOAD: %w", err)
	}
	out, err := dmIoctl(ctl, unix.DM_DEV_SUSPEND, name, 0, nil) // without DM_SUSPEND_FLAG: resume
	if err != nil {
		return 0, fmt.Errorf("DM_DEV_SUSPEND (resume): %w", err)
	}
	return out.Dev, nil
}

func dmIoctl(ctl *os.File, req uint, name string, flags uint32, data []byte) (unix.DmIoctl, error) {
	const hdr = int(unsafe.Sizeof(unix.DmIoctl{}))
	io := unix.DmIoctl{Version: [3]uint32{4, 0, 0}, Data_size: uint32(hdr + len(data)), Data_start: uint32(hdr), Flags: flags}
	if len(data) > 0 {
		io.Target_count = 1
	}
	copy(io.Name[:], name)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, &io)
	b.Write(data)
	buf := b.Bytes()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), uintptr(req), uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return io, e
	}
	binary.Read(bytes.NewReader(buf), binary.LittleEndian, &io)
	return io, nil
}
