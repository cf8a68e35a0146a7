// Package qemu runs one virtual machine in QEMU: a description of the
// machine becomes a command line, the process is supervised, its serial
// console captured and its QMP monitor spoken to. It knows nothing of
// clusters, switches or TPM emulators beyond the sockets they offer.
//
// # Describing a machine
//
// A Machine names CPUs, memory, the accelerator, the firmware (OVMF code plus
// the machine's own variable store, or a direct kernel boot for tests), virtio
// disks, virtio NICs (a switch port on a UNIX stream socket, an inherited
// socketpair, or user-mode networking for tests), a TPM (swtpm's control
// socket), fw_cfg files, a virtio RNG (on by default), an extra QMP socket and
// extra arguments. New checks it (every file named must exist) and fills in
// the defaults. The command line is built from ordered slices with device IDs
// handed out in order, so the same Machine always gives the same argv
// (testdata/*.golden pin it; go test ./qemu -run TestArgvGolden -update
// rewrites them). Each group of arguments says in a comment why it is there.
//
// # Accelerator
//
// DetectAccel chooses KVM only when /dev/kvm opens read-write and the CPU has
// the vmx or svm flag; otherwise TCG, with a one-line notice that says why.
// The flag check matters: a paravirtual /dev/kvm (e.g. inside Firecracker)
// accepts VM creation but hangs a stock guest kernel. An explicit AccelKVM
// where KVM is unusable fails (ErrNoKVM); AccelTCG is always honoured.
//
// # Firmware
//
// FindOVMF finds a UEFI firmware: explicit paths, the environment, QEMU's
// firmware descriptors, then distributions' usual paths; Secure Boot builds
// only when asked. PrepareVars makes a machine's own variable store from the
// template once; it persists across restarts.
//
// # Supervision
//
//	v, err := qemu.New(machine, qemu.Options{Dir: nodeDir})
//	err = v.Start(ctx)                      // ctx bounds start-up only
//	line, err := v.Console().WaitFor(ctx, readyRE) // returns early if QEMU exits
//	err = v.QMP().SystemPowerdown(ctx)      // ask the guest
//	exit, err := v.Wait()                   // how it ended; same answer for every caller
//	err = v.Close()                         // quit, SIGTERM, SIGKILL; waits for everything
//
// QEMU runs in its own process group and is killed when its parent dies
// (Pdeathsig, from a thread that lives exactly as long as QEMU: see Start).
// The supervisor talks to it over two inherited socketpairs, the serial port
// and a private QMP monitor (package qemu/qmp); QEMU starts with -S and runs the guest only after
// the QMP handshake, so no event is missed. Options.Dir receives console.log
// (the serial output, sanitized, line by line, appended across restarts) and
// qemu.sh (a copy-pasteable command line with the serial console on the
// terminal instead of the supervisor's sockets).
//
// # How a machine ends
//
// Wait classifies the exit from the exit status and the reason of QEMU's last
// SHUTDOWN event: ExitPoweredOff (guest-shutdown), ExitReset (a reset under
// -no-reboot), ExitQuit (QMP quit, Close), ExitKilled (a signal) and
// ExitCrashed (a non-zero status or no SHUTDOWN event). By default machines
// run with -no-reboot, so a guest's reboot (and a kernel panic with panic=-1)
// ends QEMU with ExitReset, reason "guest-reset", and the caller starts the
// machine again; with Machine.Reboot the guest reboots inside the same
// process, which shows as a RESET event (QMP.Subscribe) with the same reason.
// A guest that reboots and one that powers off are told apart by that reason,
// never by the exit status, which is 0 for both.
//
// SystemPowerdown presses the ACPI power button; the guest must handle it. In
// Linux that takes the ACPI button driver (CONFIG_ACPI_BUTTON; a module,
// "button", in Debian's cloud kernel) and userspace that acts on its KEY_POWER
// input event (testdata/marker reads /dev/input/event* through evdev).
//
// # Limits
//
// x86_64 guests on the q35 machine only; raw disk images only; firmware
// descriptors with split flash of raw images only; the per-user descriptor
// directory is not read. One VM value runs QEMU once: restarting a machine
// takes a new VM.
package qemu
