package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/qcluster/qcluster/imagebuild/cpio"
	"github.com/qcluster/qcluster/imagebuild/erofs"
	"github.com/qcluster/qcluster/imagebuild/kmod"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/imagebuild/uki"
	"github.com/qcluster/qcluster/imagebuild/verity"
	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/resolve"
)

// Product identity of the image.
const (
	productID      = "testos"
	productName    = "qcluster test OS"
	productVersion = "0.1.0"
	architecture   = "x86_64"
	// recipeVersion changes the input hash when the recipe changes in a way
	// the builder's own binary would not show (it is part of the hash too).
	recipeVersion = "testos-recipe-2"
)

// modules are the kernel modules the agent loads, in this order (with their
// dependencies first): virtio-rng before anything that may want randomness.
var modules = []string{
	"virtio_rng", "virtio_pci", "virtio_blk", "virtio_net",
	"dm_verity", "erofs", "efivarfs", "qemu_fw_cfg",
}

// systemExecutables are the programs of the system partition; their shared
// libraries (DT_NEEDED, recursively) come along.
var systemExecutables = []string{"sbin/mke2fs"}

// Paths below the cache's unpacked root.
const (
	stubPath   = "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	loaderPath = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	libDir     = "lib/x86_64-linux-gnu"
	dynLoader  = "lib64/ld-linux-x86-64.so.2"
)

// cmdlineBase is the kernel command line before qcluster.verity=: serial
// console, quiet, reboot at once on a panic.
const cmdlineBase = "console=ttyS0 quiet panic=-1"

type options struct {
	out     string // output directory
	cache   string // third_party/fetch.sh's cache; default: the repository's
	agent   string // prebuilt agent; default: built from ./testos/agent
	init    string // prebuilt stage 1; default: built from ./testos/init
	force   bool
	verbose bool
}

type result struct {
	upToDate            bool
	image, loader       string
	inputs              string // hex SHA-256 of the inputs
	ukiSize, initrdSize int64
	systemSize          int64
	took                time.Duration
}

// inputs are the files the image is made of, read once and hashed.
type inputs struct {
	abi      string            // kernel ABI, e.g. 6.1.0-56-cloud-amd64
	versions map[string]string // Debian package → version
	agent    []byte            // the agent, /sbin/qcluster-agent of the system
	init     []byte            // stage 1, /init of the initramfs
	vmlinuz  []byte
	stub     []byte
	loader   string // path
	mods     []kmod.Module
	system   map[string]string // path in the system fs → host file
	hash     string
}

func build(ctx context.Context, log *slog.Logger, o options) (*result, error) {
	start := time.Now()
	var root string
	if o.cache == "" || o.agent == "" || o.init == "" {
		r, err := resolve.RepoRoot()
		if err != nil {
			return nil, fmt.Errorf("find the repository (for the agent's source and the cache): %w", err)
		}
		root = r
	}
	if o.cache == "" {
		o.cache = filepath.Join(root, "third_party", "cache")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.out, ".testos-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	in, err := gatherInputs(ctx, log, root, o, work)
	if err != nil {
		return nil, err
	}
	res := &result{image: filepath.Join(o.out, "testos"), loader: filepath.Join(o.out, "loader.efi"), inputs: in.hash}
	stamp := filepath.Join(o.out, "testos.stamp")
	if !o.force {
		if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == in.hash && exists(res.image) && exists(res.loader) {
			if _, err := osimage.Open(res.image); err == nil {
				res.upToDate = true
				return res, nil
			}
		}
	}
	// Whatever happens next, the old stamp no longer describes out/.
	if err := os.Remove(stamp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	info := productInfo(in)

	t := time.Now()
	initrd, err := buildInitramfs(in, info)
	if err != nil {
		return nil, err
	}
	res.initrdSize = int64(len(initrd))
	log.Debug("initramfs", "bytes", len(initrd), "took", time.Since(t))

	t = time.Now()
	systemPath := filepath.Join(work, "system")
	table, fsSize, err := buildSystem(in, info, systemPath)
	if err != nil {
		return nil, err
	}
	st, _ := os.Stat(systemPath)
	res.systemSize = st.Size()
	log.Debug("system", "fs_bytes", fsSize, "bytes", st.Size(), "root", table.RootHex(), "took", time.Since(t))

	t = time.Now()
	ukiPath := filepath.Join(work, "kernel.efi")
	cmdline := cmdlineBase + " " + verityCmdline(table)
	if res.ukiSize, err = buildUKI(in, info, cmdline, initrd, ukiPath); err != nil {
		return nil, err
	}
	log.Debug("uki", "bytes", res.ukiSize, "cmdline", cmdline, "took", time.Since(t))

	t = time.Now()
	if err := osimage.Write(res.image, osimage.ProductInfo(info), []osimage.PayloadSource{
		{Name: "kernel.efi", Path: ukiPath},
		{Name: "system", Path: systemPath},
	}); err != nil {
		return nil, fmt.Errorf("write OS image %s: %w", res.image, err)
	}
	loader, err := os.ReadFile(in.loader)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(res.loader, loader, 0o644); err != nil {
		return nil, fmt.Errorf("write loader: %w", err)
	}
	if err := atomicfile.Write(stamp, []byte(in.hash+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write stamp: %w", err)
	}
	log.Debug("oci layout", "dir", res.image, "took", time.Since(t))
	res.took = time.Since(start)
	return res, nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// gatherInputs builds the agent and reads every input, hashing them all.
func gatherInputs(ctx context.Context, log *slog.Logger, root string, o options, work string) (*inputs, error) {
	cache := o.cache
	in := &inputs{system: map[string]string{}}
	h := sha256.New()
	add := func(name string, b []byte) {
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	add("recipe", []byte(recipeVersion))
	if self, err := os.Executable(); err == nil {
		b, err := os.ReadFile(self)
		if err != nil {
			return nil, fmt.Errorf("hash the builder itself: %w", err)
		}
		add("builder", b)
	}

	abi, err := os.ReadFile(filepath.Join(cache, "kernel"))
	if err != nil {
		return nil, fmt.Errorf("read the kernel ABI (run make fetch): %w", err)
	}
	in.abi = strings.TrimSpace(string(abi))
	vb, err := os.ReadFile(filepath.Join(cache, "versions.txt"))
	if err != nil {
		return nil, fmt.Errorf("read package versions (run make fetch): %w", err)
	}
	add("versions", vb)
	in.versions = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(vb)), "\n") {
		if p, v, ok := strings.Cut(line, " "); ok {
			in.versions[p] = v
		}
	}

	for _, b := range []struct {
		name, pkg, prebuilt string
		dst                 *[]byte
	}{
		{"agent", "./testos/agent", o.agent, &in.agent},
		{"init", "./testos/init", o.init, &in.init},
	} {
		p := b.prebuilt
		if p == "" {
			t := time.Now()
			p = filepath.Join(work, b.name)
			// grpcnotrace drops golang.org/x/net/trace (and with it
			// html/template): 2 MB less agent.
			cmd := exec.CommandContext(ctx, "go", "build", "-tags=grpcnotrace", "-trimpath", "-ldflags=-s -w", "-o", p, b.pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("build the %s: go build %s: %w\n%s", b.name, b.pkg, err, out)
			}
			log.Debug("go build", "package", b.pkg, "took", time.Since(t))
		}
		if err := checkStatic(p); err != nil {
			return nil, err
		}
		if *b.dst, err = os.ReadFile(p); err != nil {
			return nil, fmt.Errorf("read the %s: %w", b.name, err)
		}
		add(b.name, *b.dst)
	}

	croot := filepath.Join(cache, "root")
	if in.vmlinuz, err = os.ReadFile(filepath.Join(croot, "boot", "vmlinuz-"+in.abi)); err != nil {
		return nil, fmt.Errorf("read the kernel (run make fetch): %w", err)
	}
	add("vmlinuz", in.vmlinuz)
	if in.stub, err = os.ReadFile(filepath.Join(croot, stubPath)); err != nil {
		return nil, fmt.Errorf("read the EFI stub (run make fetch): %w", err)
	}
	add("stub", in.stub)
	in.loader = filepath.Join(croot, loaderPath)
	lb, err := os.ReadFile(in.loader)
	if err != nil {
		return nil, fmt.Errorf("read the loader (run make fetch): %w", err)
	}
	add("loader", lb)

	set, err := kmod.Open(filepath.Join(croot, "lib", "modules", in.abi))
	if err != nil {
		return nil, err
	}
	if in.mods, err = set.Resolve(modules...); err != nil {
		return nil, err
	}
	for _, m := range in.mods {
		b, err := os.ReadFile(m.Path)
		if err != nil {
			return nil, err
		}
		add("module "+m.Name+" "+strings.Join(m.Depends, ","), b)
	}

	if err := systemFiles(croot, in.system); err != nil {
		return nil, err
	}
	for _, p := range sortedKeys(in.system) {
		b, err := os.ReadFile(in.system[p])
		if err != nil {
			return nil, err
		}
		add("system "+p, b)
	}
	in.hash = hex.EncodeToString(h.Sum(nil))
	return in, nil
}

// systemFiles lists the system partition's files from the cache: the
// executables, their libraries (found through DT_NEEDED), the dynamic loader
// and mke2fs.conf. Symlinks in the cache are followed inside it.
func systemFiles(croot string, files map[string]string) error {
	hostPath := func(p string) (string, error) {
		// A package's own symlinks (lib64/ld-linux-x86-64.so.2 →
		// /lib/x86_64-linux-gnu/...) are resolved inside croot, never
		// against the host's /. Other links (Bazel's sandbox links every
		// input) are followed as they are.
		for range 16 {
			full := filepath.Join(croot, p)
			fi, err := os.Lstat(full)
			if err != nil {
				return "", fmt.Errorf("system file %s: %w (run make fetch)", p, err)
			}
			if fi.Mode()&fs.ModeSymlink == 0 {
				return full, nil
			}
			target, err := os.Readlink(full)
			if err != nil {
				return "", err
			}
			next := path.Join(path.Dir(p), target)
			if path.IsAbs(target) {
				next = strings.TrimPrefix(target, "/")
			}
			if _, err := os.Lstat(filepath.Join(croot, next)); err != nil {
				if _, err := os.Stat(full); err != nil {
					return "", fmt.Errorf("system file %s: %w", p, err)
				}
				return full, nil // a link out of the tree (Bazel): read through it
			}
			p = next
		}
		return "", fmt.Errorf("system file %s: too many symlinks", p)
	}
	// Libraries may sit in lib/ or usr/lib/ in the cache; in the system
	// file system they all go to lib/x86_64-linux-gnu.
	type item struct{ dst, candidates []string }
	var queue []item
	for _, e := range systemExecutables {
		queue = append(queue, item{[]string{e}, []string{e}})
	}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		dst := it.dst[0]
		if _, ok := files[dst]; ok {
			continue
		}
		var hp string
		var err error
		for _, c := range it.candidates {
			if hp, err = hostPath(c); err == nil {
				break
			}
		}
		if err != nil {
			return err
		}
		files[dst] = hp
		needed, err := elfNeeded(hp)
		if err != nil {
			return fmt.Errorf("system file %s: %w", dst, err)
		}
		for _, lib := range needed {
			queue = append(queue, item{[]string{path.Join(libDir, lib)}, []string{path.Join(libDir, lib), path.Join("usr", libDir, lib)}})
		}
	}
	for _, p := range []string{dynLoader, "etc/mke2fs.conf"} {
		hp, err := hostPath(p)
		if err != nil {
			return err
		}
		files[p] = hp
	}
	return nil
}

// checkStatic refuses a program that cannot be PID 1 of an x86-64 guest
// without a libc: not ELF, not x86-64, or dynamically linked.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("guest program %s: %w", p, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("guest program %s: built for %v, want x86-64", p, f.Machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("guest program %s: dynamically linked (build it with CGO_ENABLED=0)", p)
		}
	}
	return nil
}

// elfNeeded returns an ELF file's DT_NEEDED libraries.
func elfNeeded(p string) ([]string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("read DT_NEEDED of %s: %w", p, err)
	}
	return libs, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// productInfoJSON is what the agent reads from the initramfs.
type productInfoJSON osimage.ProductInfo

// productInfo names the image and its components' versions.
func productInfo(in *inputs) productInfoJSON {
	c := map[string]string{"go": runtime.Version(), "agent": productVersion}
	for p, v := range in.versions {
		switch {
		case strings.HasPrefix(p, "linux-image-"):
			c["kernel"] = strings.TrimPrefix(p, "linux-image-") + " " + v
		case p == "systemd-boot-efi":
			c["loader"] = "systemd-boot " + v
			c["stub"] = "systemd-stub " + v
		case p == "e2fsprogs" || p == "libc6":
			c[p] = v
		}
	}
	return productInfoJSON{ID: productID, Name: productName, Version: productVersion, Architecture: architecture,
		BuildInfo: "inputs sha256:" + in.hash[:16], Components: c}
}

// osRelease is the image's os-release(5) text (the UKI's .osrel, and
// /etc/os-release in the guest).
func osRelease(info productInfoJSON) string {
	return fmt.Sprintf("NAME=%q\nID=qcluster-%s\nVERSION_ID=%s\nPRETTY_NAME=%q\nBUILD_ID=%q\n",
		info.Name, info.ID, info.Version, info.Name+" "+info.Version, info.BuildInfo)
}

// buildInitramfs writes the initramfs: /init (stage 1), /dev/console, the
// directories the agent mounts on, os-release and the modules, compressed
// with zstd. The agent itself lives in the system partition: the initramfs
// is part of the UKI, which a measured boot hashes several times.
func buildInitramfs(in *inputs, info productInfoJSON) ([]byte, error) {
	var raw bytes.Buffer
	w := cpio.NewWriter(&raw, 0)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "system", "data", "lib", "lib/modules"} {
		if err := w.Dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	steps := []error{
		w.CharDev("dev/console", 0o600, 5, 1),
		w.CharDev("dev/null", 0o666, 1, 3),
		w.File("init", 0o755, in.init),
		w.File("etc/os-release", 0o644, []byte(osRelease(info))),
		w.Symlink("etc/mtab", "/proc/self/mounts"),
		kmod.AddToArchive(w, in.mods),
		w.Close(),
	}
	if err := errors.Join(steps...); err != nil {
		return nil, fmt.Errorf("write initramfs: %w", err)
	}
	var z bytes.Buffer
	enc, err := zstd.NewWriter(&z, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	if _, err := enc.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return z.Bytes(), nil
}

// buildSystem writes the system file system (EROFS) with its dm-verity tree
// appended to path and returns the table and the file system's size.
func buildSystem(in *inputs, info productInfoJSON, p string) (verity.Table, int64, error) {
	pi, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return verity.Table{}, 0, err
	}
	entries := []erofs.Entry{
		{Path: "etc/os-release", Mode: 0o644, Data: erofs.Bytes(osRelease(info))},
		{Path: "etc/qcluster/version", Mode: 0o644, Data: erofs.Bytes(info.Version + "\n")},
		{Path: "etc/qcluster/product-info.json", Mode: 0o644, Data: erofs.Bytes(append(pi, '\n'))},
		{Path: "sbin/qcluster-agent", Mode: 0o755, Data: erofs.Bytes(in.agent)},
	}
	for _, sp := range sortedKeys(in.system) {
		b, err := os.ReadFile(in.system[sp])
		if err != nil {
			return verity.Table{}, 0, err
		}
		mode := fs.FileMode(0o644)
		if strings.HasPrefix(sp, "sbin/") || sp == dynLoader || strings.Contains(sp, ".so") {
			mode = 0o755
		}
		entries = append(entries, erofs.Entry{Path: sp, Mode: mode, Data: erofs.Bytes(b)})
	}
	var img bytes.Buffer
	size, err := erofs.Write(&img, entries, erofs.Options{Label: "qcluster-system"})
	if err != nil {
		return verity.Table{}, 0, fmt.Errorf("write system file system: %w", err)
	}
	// A salt that follows from the content keeps the build reproducible.
	salt := sha256.Sum256(img.Bytes())
	var tab verity.Table
	err = writeBuffered(p, func(w io.Writer) error {
		if _, err := w.Write(img.Bytes()); err != nil {
			return err
		}
		var err error
		tab, err = verity.Build(bytes.NewReader(img.Bytes()), size, w, verity.Params{Salt: salt[:]})
		return err
	})
	if err != nil {
		return verity.Table{}, 0, fmt.Errorf("write system payload: %w", err)
	}
	return tab, size, nil
}

// verityCmdline is the qcluster.verity= argument the agent reads: the verity
// table fields without the devices, comma-separated.
func verityCmdline(t verity.Table) string {
	return fmt.Sprintf("qcluster.verity=%d,%d,%d,%d,%d,%s,%s,%s", verity.Version, verity.BlockSize, verity.BlockSize,
		t.DataBlocks, t.HashStartBlock, verity.Algorithm, t.RootHex(), t.SaltHex())
}

// writeBuffered creates p (in the build's work directory) and has fill
// write it through a large buffer.
func writeBuffered(p string, fill func(io.Writer) error) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// buildUKI writes the unified kernel image to p and returns its size.
func buildUKI(in *inputs, info productInfoJSON, cmdline string, initrd []byte, p string) (int64, error) {
	o := uki.Options{Stub: in.stub, OSRelease: osRelease(info), Cmdline: cmdline, Uname: in.abi,
		Linux: uki.Bytes(in.vmlinuz), Initrd: uki.Bytes(initrd)}
	if err := writeBuffered(p, func(w io.Writer) error { return uki.Build(w, o) }); err != nil {
		return 0, fmt.Errorf("write UKI: %w", err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
