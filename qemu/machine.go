package qemu

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
)

// ErrInvalid is wrapped by the errors of New for a Machine that cannot be
// started as described.
var ErrInvalid = errors.New("invalid machine")

// Machine describes one x86_64 q35 virtual machine. The zero value of every
// optional field is a sensible default; New fills the defaults in and checks
// that every file named exists.
type Machine struct {
	// Name names the machine in QEMU's -name, in logs and in errors: letters,
	// digits, '.', '_' and '-'. Required.
	Name string
	// CPUs is the number of virtual CPUs. Default 1.
	CPUs int
	// MemoryMiB is the guest's RAM in MiB. Default 512.
	MemoryMiB int
	// Accel is the accelerator: AccelAuto (the default), AccelKVM or AccelTCG.
	Accel Accel
	// Firmware boots the machine through UEFI (OVMF). At most one of Firmware
	// and Kernel; with neither, QEMU's built-in BIOS runs (useful only for
	// machines that never run a guest).
	Firmware *Firmware
	// Kernel boots a Linux kernel directly (for tests).
	Kernel *KernelBoot
	// Disks are virtio block devices, in PCI order.
	Disks []Disk
	// NICs are virtio network cards, in PCI order.
	NICs []NIC
	// TPM attaches a TPM 2.0 (TIS interface) served by swtpm. Default none.
	TPM *TPM
	// FwCfg are files handed to the guest through QEMU's fw_cfg device.
	FwCfg []FwCfgFile
	// NoRNG leaves out the virtio-rng device. Default false: the device is
	// there, because a guest under TCG otherwise blocks in getrandom() at boot.
	NoRNG bool
	// Reboot lets a guest reboot inside the same QEMU process (a RESET event).
	// Default false: -no-reboot, QEMU exits when the guest resets, and Wait
	// reports ExitReset; a kernel panic with panic=-1 then ends the process
	// instead of looping.
	Reboot bool
	// QMPSocket, if set, is the path of an extra QMP server socket for people
	// and tools (qmp-shell, socat). The supervisor has its own private QMP
	// channel either way. Default none.
	QMPSocket string
	// Paused leaves the guest stopped after Start (QEMU's "prelaunch" state);
	// VM.QMP().Cont starts it. Default false.
	Paused bool
	// Memory, if set, keeps the guest's RAM in a file (memory-backend-file)
	// instead of anonymous memory, so that a snapshot can leave RAM out of
	// its state stream and clones can map it copy-on-write. Default none.
	Memory *MemoryFile
	// Incoming starts QEMU waiting for a saved state (-incoming defer):
	// Start leaves it paused, VM.LoadState loads the state and Cont runs it.
	// The rest of the Machine must be the one that was saved. Default false.
	Incoming bool
	// ExtraArgs are appended to QEMU's command line as they are.
	ExtraArgs []string
}

// Firmware is a UEFI firmware in two flash devices.
type Firmware struct {
	// Code is the firmware image (OVMF_CODE), mapped read-only. Required.
	Code string
	// Vars is this machine's own copy of the variable store (see PrepareVars),
	// mapped read-write: boot entries and EFI variables persist in it. Required.
	Vars string
	// SMM turns on System Management Mode and secure flash, which the
	// secure-boot builds of OVMF require (OVMF.RequiresSMM). Default off.
	SMM bool
}

// KernelBoot is a direct kernel boot.
type KernelBoot struct {
	Kernel string // path of the kernel (bzImage). Required.
	Initrd string // path of the initramfs. Default none.
	Append string // kernel command line. Default empty.
}

// Disk is a virtio block device backed by a raw image file.
type Disk struct {
	// Path is the raw image. Required. Two machines cannot open one image
	// read-write (QEMU locks it).
	Path string
	// ReadOnly maps the image read-only. Default false.
	ReadOnly bool
	// Cache is QEMU's cache mode: "unsafe" (the default: flushes are ignored,
	// right for throw-away disks), "writeback", "writethrough", "none" or
	// "directsync".
	Cache string
}

// NIC is a virtio network card. Exactly one of Stream, FD and User is set.
type NIC struct {
	// MAC is the card's address. Default: derived from the machine's name and
	// the card's index under QEMU's prefix 52:54:00 (see DefaultMAC).
	MAC net.HardwareAddr
	// Stream is the path of a UNIX stream socket to connect to (a switch
	// port), in QEMU's length-prefixed framing.
	Stream string
	// FD is a connected stream socket (e.g. one end of a socketpair) in QEMU's
	// length-prefixed framing, inherited by QEMU. The caller keeps it and may
	// close its copy once Start has returned.
	FD *os.File
	// User is QEMU's user-mode (SLIRP) network, for tests.
	User *UserNet
	// Pcap, if set, is a file that records the card's traffic (filter-dump).
	Pcap string
}

// UserNet is QEMU's user-mode network stack.
type UserNet struct {
	// Restrict isolates the guest: it reaches nothing but the host forwards.
	// Default false.
	Restrict bool
	// HostForwards forward host ports to the guest.
	HostForwards []HostForward
}

// HostForward forwards connections to a host address to a guest port.
type HostForward struct {
	// UDP forwards UDP instead of TCP. Default false (TCP).
	UDP bool
	// Host is the host address to listen on: a loopback address with an
	// explicit port. Required.
	Host netip.AddrPort
	// GuestPort is the port in the guest. Required.
	GuestPort uint16
}

// TPM is a TPM 2.0 served by swtpm on a control socket.
type TPM struct {
	// CtrlSocket is swtpm's control socket (swtpm socket --ctrl
	// type=unixio,path=...). Required; swtpm must be listening when Start runs.
	CtrlSocket string
}

// MemoryFile is guest RAM backed by a file.
type MemoryFile struct {
	// Path of the file, created by QEMU if missing and sized to MemoryMiB.
	// Required.
	Path string
	// Shared maps the file shared (share=on): the guest's writes go to the
	// file, which is what a snapshot keeps. Default false: a private
	// copy-on-write mapping (share=off), for clones of a snapshot's RAM,
	// which leaves the file as it was. QEMU 7.2 opens the file read-write
	// either way.
	Shared bool
}

// FwCfgFile is a file the guest reads from /sys/firmware/qemu_fw_cfg/by_name/NAME/raw.
type FwCfgFile struct {
	// Name is the fw_cfg name; it must start with "opt/" and be at most 55 bytes.
	Name string
	// File is the host file. Required.
	File string
}

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	caches  = []string{"unsafe", "writeback", "writethrough", "none", "directsync"}
	qemuMAC = [3]byte{0x52, 0x54, 0x00}
)

// DefaultMAC is the address New gives a NIC without one: QEMU's prefix
// 52:54:00 followed by three bytes of SHA-256(name/index).
func DefaultMAC(name string, index int) net.HardwareAddr {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", name, index))
	return net.HardwareAddr{qemuMAC[0], qemuMAC[1], qemuMAC[2], h[0], h[1], h[2]}
}

// withDefaults returns a copy of m with defaults filled in, or an error
// wrapping ErrInvalid for the first thing wrong with it.
func (m Machine) withDefaults() (Machine, error) {
	bad := func(format string, args ...any) (Machine, error) {
		return Machine{}, fmt.Errorf("machine %q: %s: %w", m.Name, fmt.Sprintf(format, args...), ErrInvalid)
	}
	if !nameRE.MatchString(m.Name) {
		return bad("name must be letters, digits, '.', '_' or '-'")
	}
	if m.CPUs == 0 {
		m.CPUs = 1
	}
	if m.CPUs < 1 || m.CPUs > 255 {
		return bad("cpus %d: want 1 to 255", m.CPUs)
	}
	if m.MemoryMiB == 0 {
		m.MemoryMiB = 512
	}
	if m.MemoryMiB < 16 {
		return bad("memory %d MiB: want at least 16", m.MemoryMiB)
	}
	switch m.Accel {
	case "":
		m.Accel = AccelAuto
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return bad("accelerator %q: want auto, kvm or tcg", m.Accel)
	}
	exists := func(what, path string) error {
		if path == "" {
			return fmt.Errorf("%s: no path given", what)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if fi.IsDir() {
			return fmt.Errorf("%s: %s is a directory", what, path)
		}
		return nil
	}
	if m.Firmware != nil && m.Kernel != nil {
		return bad("both firmware and a kernel given: choose one")
	}
	if f := m.Firmware; f != nil {
		if err := exists("firmware code", f.Code); err != nil {
			return bad("%v", err)
		}
		if err := exists("firmware vars", f.Vars); err != nil {
			return bad("%v (create it with PrepareVars)", err)
		}
	}
	if k := m.Kernel; k != nil {
		if err := exists("kernel", k.Kernel); err != nil {
			return bad("%v", err)
		}
		if k.Initrd != "" {
			if err := exists("initrd", k.Initrd); err != nil {
				return bad("%v", err)
			}
		}
	}
	m.Disks = slices.Clone(m.Disks)
	for i := range m.Disks {
		d := &m.Disks[i]
		if err := exists(fmt.Sprintf("disk %d", i), d.Path); err != nil {
			return bad("%v", err)
		}
		if d.Cache == "" {
			d.Cache = "unsafe"
		}
		if !slices.Contains(caches, d.Cache) {
			return bad("disk %d: cache %q: want one of %s", i, d.Cache, strings.Join(caches, ", "))
		}
	}
	m.NICs = slices.Clone(m.NICs)
	seen := map[string]int{}
	for i := range m.NICs {
		n := &m.NICs[i]
		backends := 0
		for _, set := range []bool{n.Stream != "", n.FD != nil, n.User != nil} {
			if set {
				backends++
			}
		}
		if backends != 1 {
			return bad("nic %d: want exactly one of a stream socket, an fd and user networking, have %d", i, backends)
		}
		if n.MAC == nil {
			n.MAC = DefaultMAC(m.Name, i)
		}
		if len(n.MAC) != 6 || n.MAC[0]&1 != 0 {
			return bad("nic %d: mac %s: want a 6-byte unicast address", i, n.MAC)
		}
		if j, dup := seen[n.MAC.String()]; dup {
			return bad("nic %d: mac %s already used by nic %d", i, n.MAC, j)
		}
		seen[n.MAC.String()] = i
		if u := n.User; u != nil {
			for _, f := range u.HostForwards {
				if !f.Host.Addr().IsLoopback() || f.Host.Port() == 0 || f.GuestPort == 0 {
					return bad("nic %d: host forward %s to guest port %d: want a loopback address, a host port and a guest port", i, f.Host, f.GuestPort)
				}
			}
		}
	}
	if m.TPM != nil && m.TPM.CtrlSocket == "" {
		return bad("tpm: no control socket given")
	}
	m.FwCfg = slices.Clone(m.FwCfg)
	names := map[string]bool{}
	for _, f := range m.FwCfg {
		// QEMU reserves names outside opt/; the fw_cfg directory holds 56 bytes with the NUL.
		if !strings.HasPrefix(f.Name, "opt/") || len(f.Name) > 55 || strings.ContainsAny(f.Name, ",\x00") {
			return bad("fw_cfg name %q: want opt/..., at most 55 bytes, no commas", f.Name)
		}
		if names[f.Name] {
			return bad("fw_cfg name %q given twice", f.Name)
		}
		names[f.Name] = true
		if err := exists("fw_cfg "+f.Name, f.File); err != nil {
			return bad("%v", err)
		}
	}
	if m.Memory != nil {
		mem := *m.Memory
		if mem.Path == "" || strings.Contains(mem.Path, ",") {
			return bad("memory file %q: want a path without commas", mem.Path)
		}
		m.Memory = &mem
	}
	if m.Incoming {
		m.Paused = true
	}
	m.ExtraArgs = slices.Clone(m.ExtraArgs)
	return m, nil
}
