package qemu

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The file descriptors QEMU inherits from the supervisor (exec.Cmd.ExtraFiles
// start at 3): the serial port's socket, the private QMP socket, then the
// NICs' inherited sockets in NIC order.
const (
	serialFD = 3
	qmpFD    = 4
	firstFD  = 5
)

// wiring says how the supervisor's own channels appear on the command line.
type wiring struct {
	// human is the copy-pasteable variant: the serial port and a monitor on
	// the terminal, no private QMP, no -S, inherited sockets left out.
	human bool
}

// ids hands out device IDs per prefix, in order: disk0, disk1, net0, …
type ids map[string]int

func (d ids) next(prefix string) string {
	n := d[prefix]
	d[prefix] = n + 1
	return prefix + strconv.Itoa(n)
}

// opt joins key=value pairs into one QEMU option string, escaping commas
// in the values as QEMU's option parser wants (",,").
func opt(head string, kv ...string) string {
	var b strings.Builder
	b.WriteString(head)
	for i := 0; i+1 < len(kv); i += 2 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteByte('=')
		b.WriteString(strings.ReplaceAll(kv[i+1], ",", ",,"))
	}
	return b.String()
}

// argv builds QEMU's arguments (without the binary) for m, which has its
// defaults filled in, under the accelerator decided (kvm or tcg). It returns
// the NICs' inherited files in fd order from firstFD, and notes for the
// human variant about what it left out.
func (m *Machine) argv(accel Accel, w wiring) (args []string, files []*os.File, notes []string) {
	add := func(a ...string) { args = append(args, a...) }
	id := ids{}

	// Identity: the name shows in ps, in QMP's query-name and in QEMU's own messages.
	add("-name", opt("", "guest", m.Name))

	// Machine and CPU: q35 (PCIe, the chipset OVMF and the TPM TIS driver
	// expect) with the accelerator the probe decided; -cpu host passes the
	// host's CPU through and exists only under KVM. SMM for secure-boot OVMF.
	machine := opt("q35", "accel", string(accel))
	if m.Firmware != nil && m.Firmware.SMM {
		machine += ",smm=on"
	}
	if m.Memory != nil {
		machine += ",memory-backend=ram0"
	}
	add("-machine", machine)
	if accel == AccelKVM {
		add("-cpu", "host")
	}
	add("-smp", strconv.Itoa(m.CPUs), "-m", strconv.Itoa(m.MemoryMiB)+"M")
	// RAM in a file: a snapshot leaves it out of the state stream
	// (x-ignore-shared) and clones map it copy-on-write.
	if mem := m.Memory; mem != nil {
		share := "off"
		if mem.Shared {
			share = "on"
		}
		add("-object", opt("memory-backend-file", "id", "ram0", "size", strconv.Itoa(m.MemoryMiB)+"M",
			"mem-path", mem.Path, "share", share))
	}

	// Nothing implicit: no default NIC, no DVD drive for OVMF to try first,
	// no VGA, no host configuration file; every device below is asked for.
	add("-nodefaults", "-no-user-config", "-display", "none")

	// A guest reset ends the process unless the machine may reboot in place
	// (see Machine.Reboot).
	if !m.Reboot {
		add("-no-reboot")
	}

	// Firmware: OVMF's code read-only, the machine's own variable store
	// writable; or a direct kernel boot.
	if f := m.Firmware; f != nil {
		if f.SMM {
			add("-global", "driver=cfi.pflash01,property=secure,value=on")
		}
		add("-drive", opt("", "if", "pflash", "unit", "0", "format", "raw", "readonly", "on", "file", f.Code),
			"-drive", opt("", "if", "pflash", "unit", "1", "format", "raw", "file", f.Vars))
	}
	if k := m.Kernel; k != nil {
		add("-kernel", k.Kernel)
		if k.Initrd != "" {
			add("-initrd", k.Initrd)
		}
		if k.Append != "" {
			add("-append", k.Append)
		}
	}

	// Disks: raw images on virtio-blk. Guest discards punch holes, so a
	// sparse disk stays sparse.
	for _, d := range m.Disks {
		kv := []string{"if", "virtio", "id", id.next("disk"), "format", "raw", "cache", d.Cache}
		if d.ReadOnly {
			kv = append(kv, "readonly", "on")
		} else {
			kv = append(kv, "discard", "unmap")
		}
		add("-drive", opt("", append(kv, "file", d.Path)...))
	}

	// Network: one netdev (the host side) and one virtio-net card per NIC;
	// filter-dump records the netdev's frames to a pcap file.
	fd := firstFD
	for i, n := range m.NICs {
		nd := id.next("net")
		switch {
		case n.Stream != "":
			add("-netdev", opt("stream", "id", nd, "server", "off", "addr.type", "unix", "addr.path", n.Stream))
		case n.FD != nil && w.human:
			notes = append(notes, fmt.Sprintf("nic %d (%s, an inherited socket) is left out", i, n.MAC))
			continue
		case n.FD != nil:
			add("-netdev", opt("socket", "id", nd, "fd", strconv.Itoa(fd)))
			files = append(files, n.FD)
			fd++
		case n.User != nil:
			kv := []string{"id", nd}
			if n.User.Restrict {
				kv = append(kv, "restrict", "on")
			}
			for _, f := range n.User.HostForwards {
				proto := "tcp"
				if f.UDP {
					proto = "udp"
				}
				host := f.Host.Addr().String()
				if f.Host.Addr().Is6() {
					host = "[" + host + "]"
				}
				kv = append(kv, "hostfwd", fmt.Sprintf("%s:%s:%d-:%d", proto, host, f.Host.Port(), f.GuestPort))
			}
			add("-netdev", opt("user", kv...))
		}
		add("-device", opt("virtio-net-pci", "id", id.next("nic"), "netdev", nd, "mac", n.MAC.String()))
		if n.Pcap != "" {
			add("-object", opt("filter-dump", "id", id.next("dump"), "netdev", nd, "file", n.Pcap))
		}
	}

	// TPM: swtpm's control socket, QEMU's emulator backend, a TIS device.
	if t := m.TPM; t != nil {
		chr, tpm := id.next("chr"), id.next("tpm")
		add("-chardev", opt("socket", "id", chr, "path", t.CtrlSocket),
			"-tpmdev", opt("emulator", "id", tpm, "chardev", chr),
			"-device", opt("tpm-tis", "tpmdev", tpm))
	}

	// Entropy: without it a guest under TCG blocks in getrandom() at boot.
	if !m.NoRNG {
		add("-device", opt("virtio-rng-pci", "id", id.next("rng")))
	}

	// fw_cfg: files the guest reads from /sys/firmware/qemu_fw_cfg.
	for _, f := range m.FwCfg {
		add("-fw_cfg", opt("", "name", f.Name, "file", f.File))
	}

	// Serial (ttyS0): an inherited socket read by the supervisor, which logs
	// it and can fan it out; in the human variant the terminal, multiplexed
	// with a monitor (Ctrl-a c switches, Ctrl-a x quits).
	ser := id.next("chr")
	if w.human {
		add("-chardev", opt("stdio", "id", ser, "mux", "on", "signal", "off"),
			"-serial", "chardev:"+ser, "-mon", opt("", "chardev", ser, "mode", "readline"))
	} else {
		add("-chardev", opt("socket", "id", ser, "fd", strconv.Itoa(serialFD)), "-serial", "chardev:"+ser)
	}

	// QMP: the supervisor's private channel on an inherited socket, so that
	// it is connected before the guest runs and sees every event; -S holds
	// the guest until the supervisor has shaken hands (then it sends cont).
	if !w.human {
		qmp := id.next("chr")
		add("-chardev", opt("socket", "id", qmp, "fd", strconv.Itoa(qmpFD)),
			"-mon", opt("", "chardev", qmp, "mode", "control"), "-S")
	}
	// An extra QMP server for people and tools.
	if m.QMPSocket != "" {
		qmp := id.next("chr")
		add("-chardev", opt("socket", "id", qmp, "path", m.QMPSocket, "server", "on", "wait", "off"),
			"-mon", opt("", "chardev", qmp, "mode", "control"))
	}

	// A restore: QEMU waits for the saved state, which VM.LoadState feeds it.
	if m.Incoming {
		if w.human {
			notes = append(notes, "-incoming defer is left out: the machine was restored from a snapshot, and this command boots it afresh")
		} else {
			add("-incoming", "defer")
		}
	}

	// The caller's own arguments come last, so they can add to all of the above.
	add(m.ExtraArgs...)
	return args, files, notes
}
