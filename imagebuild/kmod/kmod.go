// Package kmod picks Linux kernel modules for an initramfs: it resolves the
// modules a guest asks for, with everything they depend on, from a tree of
// .ko files, and writes them into a cpio archive in an order that loads.
//
// Dependencies come from each module's .modinfo ELF section ("depends="), not
// from modules.dep: Debian's kernel packages ship no modules.dep (depmod runs
// at install time), and this way nothing of the host's kmod is needed.
//
// In the archive, modules go to /lib/modules/<name>.ko and their load order to
// /lib/modules/load.order, one file name a line, dependencies first; the guest
// side is internal/kmodload. Limits: uncompressed .ko files only (Debian's 6.1
// kernels ship them so); module parameters are not supported.
package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/qcluster/qcluster/imagebuild/cpio"
)

// Module is one kernel module file and its direct dependencies.
type Module struct {
	Name    string   // canonical name: "-" folded to "_", as the kernel does
	Path    string   // file on the host
	Depends []string // canonical names
}

// Set indexes every module below a kernel's module directory.
type Set struct {
	dir   string
	paths map[string]string // canonical name → path
}

// Open indexes the .ko files below dir, e.g. /lib/modules/6.1.0-56-cloud-amd64.
func Open(dir string) (*Set, error) {
	s := &Set{dir: dir, paths: map[string]string{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			s.paths[canonical(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index kernel modules in %s: %w", dir, err)
	}
	if len(s.paths) == 0 {
		return nil, fmt.Errorf("index kernel modules in %s: no .ko files (is the kernel package unpacked? run make fetch)", dir)
	}
	return s, nil
}

func canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Resolve returns the named modules and everything they depend on, ordered so
// that each module comes after its dependencies; among independent modules the
// order asked for is kept. Names may use "-" or "_".
func (s *Set) Resolve(names ...string) ([]Module, error) {
	var out []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("kernel module dependency cycle: %s", strings.Join(append(chain, name), " → "))
		}
		p, ok := s.paths[name]
		if !ok {
			if len(chain) > 0 {
				return fmt.Errorf("kernel module %s (needed by %s) not found in %s", name, chain[len(chain)-1], s.dir)
			}
			return fmt.Errorf("kernel module %s not found in %s (built in, or misspelt?)", name, s.dir)
		}
		state[name] = 1
		deps, err := depends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, Path: p, Depends: deps})
		return nil
	}
	for _, n := range names {
		if err := visit(canonical(n), nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// depends reads the "depends=" entry of a module's .modinfo section.
func depends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read kernel module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read kernel module %s: .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, canonical(d))
				}
			}
			slices.Sort(deps) // the kernel's order is arbitrary; ours is stable
			return deps, nil
		}
	}
	return nil, nil
}

// LoadOrderFile is where the load order goes in the archive.
const LoadOrderFile = "lib/modules/load.order"

// AddToArchive writes the modules to /lib/modules and their load order to
// /lib/modules/load.order.
func AddToArchive(w *cpio.Writer, mods []Module) error {
	var order strings.Builder
	for _, m := range mods {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("add kernel module %s: %w", m.Name, err)
		}
		file := m.Name + ".ko"
		if err := w.File("lib/modules/"+file, 0o644, data); err != nil {
			return fmt.Errorf("add kernel module %s: %w", m.Name, err)
		}
		order.WriteString(file + "\n")
	}
	if err := w.File(LoadOrderFile, 0o644, []byte(order.String())); err != nil {
		return fmt.Errorf("add kernel module load order: %w", err)
	}
	return nil
}
