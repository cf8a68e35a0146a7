// Package boot is what both stages of the testos guest need to find and open
// their system: the node disk's GPT, the booted slot, the slot's dm-verity
// device, the early mounts, and a loud power-off on fatal errors.
//
// Stage 1 (testos/init, /init of the initramfs) loads the kernel modules,
// opens and mounts the system partition and executes the agent from it; the
// agent (testos/agent) then finds what stage 1 did and reports it. It runs in
// the guest, as PID 1, and imports nothing of the host side (nor testos/api,
// so that stage 1 stays small).
//
// Limits: x86-64 Linux only (the DM ioctl layout is little-endian amd64's);
// 512-byte logical sectors.
package boot

// Paths and names in the guest.
const (
	// ModulesDir holds the initramfs's kernel modules and load.order.
	ModulesDir = "/lib/modules"
	// SystemMount is where the booted slot's file system is mounted.
	SystemMount = "/system"
	// DataMount is where the DATA partition is mounted.
	DataMount = "/data"
	// MappedName is the device-mapper name of the verified slot:
	// /dev/mapper/system.
	MappedName = "system"
	// AgentPath is the agent's path in the system file system.
	AgentPath = SystemMount + "/sbin/qcluster-agent"
	// Stage1Marker exists once stage 1 has opened, mounted and read back
	// the system; it holds "<file bytes verified> <milliseconds taken>".
	Stage1Marker = "/run/qcluster/stage1-done"
	// FatalPrefix starts the console line of a fatal error (testos/api's
	// FatalPrefix says the same).
	FatalPrefix = "qcluster-agent: fatal: "
)
