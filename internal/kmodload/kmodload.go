//go:build linux

// Package kmodload loads the kernel modules that imagebuild/kmod put into an
// initramfs: every file named in <dir>/load.order, in that order, with
// finit_module(2). It runs in the guest, as part of PID 1.
package kmodload

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Load loads every module listed in dir/load.order. A module that is already
// loaded (or built in) is not an error. It stops at the first failure and
// names the module.
func Load(dir string) error {
	f, err := os.Open(filepath.Join(dir, "load.order"))
	if err != nil {
		return fmt.Errorf("load kernel modules: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		name := strings.TrimSpace(s.Text())
		if name == "" {
			continue
		}
		if err := loadOne(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("load kernel modules: read load.order: %w", err)
	}
	return nil
}

func loadOne(path string) error {
	m, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load kernel module %s: %w", filepath.Base(path), err)
	}
	defer m.Close()
	if err := unix.FinitModule(int(m.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load kernel module %s: finit_module: %w", filepath.Base(path), err)
	}
	return nil
}
