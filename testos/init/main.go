// Command init is stage 1 of the testos guest, /init of the initramfs: it
// mounts the kernel file systems, loads the initramfs's kernel modules
// (virtio-rng first), opens the booted slot through dm-verity, mounts it on
// /system, reads every file back (verifying every block in use) and executes
// the agent from there (/system/sbin/qcluster-agent),
// which stays PID 1. It keeps the initramfs small (the UKI that holds it is
// hashed several times by a measured boot) and puts the agent under
// dm-verity. On any error it prints "qcluster-agent: fatal: <reason>" and
// powers off.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/kmodload"
	"github.com/qcluster/qcluster/testos/internal/boot"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: not PID 1; this is stage 1 of a testos guest")
		os.Exit(2)
	}
	if err := run(context.Background()); err != nil {
		boot.Fatal(err)
	}
}

func run(ctx context.Context) error {
	if err := boot.EarlyMounts(); err != nil {
		return err
	}
	if err := kmodload.Load(boot.ModulesDir); err != nil {
		return err
	}
	if err := boot.MountEFIVars(); err != nil {
		fmt.Fprintf(os.Stderr, "init: %v (the slot defaults to A)\n", err)
	}
	slotDev, mapped, err := boot.OpenSystem(ctx)
	if err != nil {
		return err
	}
	// Every file is read (and so verified) before anything of the system
	// runs: a corrupted block fails here, with a message, instead of
	// crashing the agent at a random page fault.
	t := time.Now()
	n, err := boot.ReadBack(boot.SystemMount)
	if err != nil {
		return fmt.Errorf("verity: system slot %s (%s): %w", slotDev, mapped, err)
	}
	if err := os.MkdirAll(filepath.Dir(boot.Stage1Marker), 0o755); err != nil {
		return err
	}
	// The marker tells the agent what was verified: "<bytes> <milliseconds>".
	if err := os.WriteFile(boot.Stage1Marker, fmt.Appendf(nil, "%d %d\n", n, time.Since(t).Milliseconds()), 0o644); err != nil {
		return err
	}
	err = unix.Exec(boot.AgentPath, []string{boot.AgentPath}, os.Environ())
	if errors.Is(err, unix.EIO) {
		return fmt.Errorf("verity: execute %s: %w (a block of the system partition does not match its hash tree)", boot.AgentPath, err)
	}
	return fmt.Errorf("execute %s: %w", boot.AgentPath, err)
}
