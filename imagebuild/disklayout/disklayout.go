// Package disklayout is the contract between the node disk qcluster
// synthesizes (imagebuild/disk) and the guest that boots from it
// (testos/internal/boot): partition names and type GUIDs, the ESP's paths
// and the boot entries of the two system slots.
//
// The guest links it, so it stays a list of constants with no imports.
package disklayout

// Partition names, in table order.
const (
	NameESP     = "ESP"
	NameSystemA = "SYSTEM-A"
	NameSystemB = "SYSTEM-B"
	NameData    = "DATA"
)

// SystemName is the partition name of system slot "A" or "B".
func SystemName(slot string) string { return "SYSTEM-" + slot }

// Type GUIDs of qcluster's own partitions, upper case and dashed as sgdisk
// prints them (the ESP has the UEFI type, imagebuild/gpt.TypeEFISystem).
const (
	// TypeSystem marks the system partitions (A and B).
	TypeSystem = "1A69CDF2-156F-41D0-B76D-DC7AC56AF881"
	// TypeData marks the data partition.
	TypeData = "D1044D20-8E0E-4ABF-8522-0C9D469098A3"
)

// Boot entries: the unified kernel images of the slots, as systemd-boot
// names them (type 2 entries in EFI/Linux) and reports the one it booted
// in LoaderEntrySelected.
const (
	EntryA = "qcluster-a.efi"
	EntryB = "qcluster-b.efi"
)

// ESP contents.
const (
	// LoaderPath is where the loader goes: the removable-media default path
	// OVMF boots with a fresh variable store.
	LoaderPath = "EFI/BOOT/BOOTX64.EFI"
	// LoaderConfPath is systemd-boot's configuration.
	LoaderConfPath = "loader/loader.conf"
	// KernelPath is slot A's unified kernel image.
	KernelPath = "EFI/Linux/" + EntryA
	// LoaderConf boots slot A at once and locks the editor.
	LoaderConf = "timeout 0\ndefault " + EntryA + "\neditor no\n"
)
