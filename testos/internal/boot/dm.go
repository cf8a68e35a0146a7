package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device-mapper's control interface, from the kernel's
// include/uapi/linux/dm-ioctl.h (interface version 4). Only what a read-only
// single-target device needs: create, load a table, resume.

// dmIoctl is struct dm_ioctl: 312 bytes on every architecture (the struct is
// explicitly padded); fields are host-endian (little-endian here).
type dmIoctl struct {
	Version     [3]uint32 // in: the interface version the caller speaks; out: the kernel's
	DataSize    uint32    // bytes passed in, this struct included
	DataStart   uint32    // offset of the payload from the start of this struct
	TargetCount uint32    // in/out
	OpenCount   int32     // out
	Flags       uint32    // in/out: dm*Flag
	EventNr     uint32    // in/out
	Padding     uint32
	Dev         uint64 // out: huge_encode_dev() of the mapped device
	Name        [dmNameLen]byte
	UUID        [dmUUIDLen]byte
	Data        [7]byte // padding or the start of the payload
}

// dmTargetSpec is struct dm_target_spec (40 bytes); the NUL-terminated
// parameter string follows it.
type dmTargetSpec struct {
	SectorStart uint64 // first 512-byte sector the target maps
	Length      uint64 // sectors mapped
	Status      int32  // out only
	Next        uint32 // offset of the next spec from the start of this one
	TargetType  [dmMaxTypeName]byte
}

const (
	dmNameLen     = 128
	dmUUIDLen     = 129
	dmMaxTypeName = 16
	dmIoctlSize   = 312
	dmSpecSize    = 40

	dmVersionMajor = 4

	dmReadonlyFlag = 1 << 0 // DM_READONLY_FLAG
	dmSuspendFlag  = 1 << 1 // DM_SUSPEND_FLAG

	// Command numbers (enum in dm-ioctl.h).
	dmDevCreateCmd  = 3
	dmDevRemoveCmd  = 4
	dmDevSuspendCmd = 6
	dmTableLoadCmd  = 9
)

// dmRequest is _IOWR(DM_IOCTL = 0xfd, nr, struct dm_ioctl).
func dmRequest(nr uintptr) uintptr {
	const iocWrite, iocRead = 1, 2
	return (iocWrite|iocRead)<<30 | dmIoctlSize<<16 | 0xfd<<8 | nr
}

// DMTarget is one line of a device-mapper table.
type DMTarget struct {
	Start, Length uint64 // 512-byte sectors
	Type          string // e.g. "verity"
	Params        string
}

// newDMIoctl fills the header fields every command needs.
func newDMIoctl(name string, flags uint32) (dmIoctl, error) {
	var io dmIoctl
	if len(name) == 0 || len(name) >= dmNameLen {
		return io, fmt.Errorf("device-mapper name %q: want 1 to %d bytes", name, dmNameLen-1)
	}
	io.Version = [3]uint32{dmVersionMajor, 0, 0}
	io.DataSize = dmIoctlSize
	io.DataStart = dmIoctlSize
	io.Flags = flags
	copy(io.Name[:], name)
	return io, nil
}

// marshalDM lays out header and targets as the kernel reads them: the
// header, then each spec followed by its parameters, NUL-terminated and
// padded to 8 bytes.
func marshalDM(io dmIoctl, targets []DMTarget) ([]byte, error) {
	var payload bytes.Buffer
	for _, t := range targets {
		if len(t.Type) == 0 || len(t.Type) >= dmMaxTypeName {
			return nil, fmt.Errorf("device-mapper target type %q: want 1 to %d bytes", t.Type, dmMaxTypeName-1)
		}
		p := append([]byte(t.Params), 0)
		for (dmSpecSize+len(p))%8 != 0 {
			p = append(p, 0)
		}
		spec := dmTargetSpec{SectorStart: t.Start, Length: t.Length, Next: uint32(dmSpecSize + len(p))}
		copy(spec.TargetType[:], t.Type)
		if err := binary.Write(&payload, binary.LittleEndian, spec); err != nil {
			return nil, err
		}
		payload.Write(p)
	}
	io.TargetCount = uint32(len(targets))
	io.DataSize = uint32(dmIoctlSize + payload.Len())
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, io); err != nil {
		return nil, err
	}
	b.Write(payload.Bytes())
	return b.Bytes(), nil
}

// dmCall issues one DM ioctl on the control device and returns the header
// the kernel wrote back.
func dmCall(ctl *os.File, nr uintptr, io dmIoctl, targets []DMTarget) (dmIoctl, error) {
	buf, err := marshalDM(io, targets)
	if err != nil {
		return dmIoctl{}, err
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), dmRequest(nr), uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return dmIoctl{}, e
	}
	var out dmIoctl
	if err := binary.Read(bytes.NewReader(buf[:dmIoctlSize]), binary.LittleEndian, &out); err != nil {
		return dmIoctl{}, err
	}
	return out, nil
}

// DMCreate creates a read-only device-mapper device name with the given
// table, resumes it and makes /dev/mapper/<name>. It returns that path.
func DMCreate(name, uuid string, targets []DMTarget) (string, error) {
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("device-mapper %s: %w", name, err)
	}
	defer ctl.Close()

	io, err := newDMIoctl(name, 0)
	if err != nil {
		return "", err
	}
	if len(uuid) >= dmUUIDLen {
		return "", fmt.Errorf("device-mapper uuid %q: longer than %d bytes", uuid, dmUUIDLen-1)
	}
	copy(io.UUID[:], uuid)
	created, err := dmCall(ctl, dmDevCreateCmd, io, nil)
	if err != nil {
		return "", fmt.Errorf("device-mapper %s: DM_DEV_CREATE: %w", name, err)
	}
	undo := func() {
		rm, _ := newDMIoctl(name, 0)
		_, _ = dmCall(ctl, dmDevRemoveCmd, rm, nil)
	}

	load, _ := newDMIoctl(name, dmReadonlyFlag)
	if _, err := dmCall(ctl, dmTableLoadCmd, load, targets); err != nil {
		undo()
		return "", fmt.Errorf("device-mapper %s: DM_TABLE_LOAD %v: %w (the kernel log says why)", name, targets, err)
	}
	resume, _ := newDMIoctl(name, 0) // DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes
	if _, err := dmCall(ctl, dmDevSuspendCmd, resume, nil); err != nil {
		undo()
		return "", fmt.Errorf("device-mapper %s: resume: %w", name, err)
	}

	dev := created.Dev
	path := "/dev/mapper/" + name
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(unix.Major(dev), unix.Minor(dev)))); err != nil && err != unix.EEXIST {
		return "", fmt.Errorf("device-mapper %s: mknod %s (%d:%d): %w", name, path, unix.Major(dev), unix.Minor(dev), err)
	}
	return path, nil
}
