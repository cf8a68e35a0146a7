package main

import (
	"bytes"
	"debug/pe"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
	"github.com/qcluster/qcluster/imagebuild/cpio"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/needs"
)

// TestBuild builds the image from the fetched Debian artifacts and checks
// every part with an independent reader or tool; a second build is a no-op.
func TestBuild(t *testing.T) {
	root := needs.Checkout(t)
	needs.File(t, filepath.Join(root, "third_party", "cache", "kernel"), "run make fetch")
	veritysetup := needs.Tool(t, "veritysetup", "cryptsetup-bin")
	fsckErofs := needs.Tool(t, "fsck.erofs", "erofs-utils")
	out := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	res, err := build(t.Context(), log, options{out: out})
	if err != nil {
		t.Fatal(err)
	}
	if res.upToDate {
		t.Fatal("first build reported up to date")
	}
	img, err := osimage.Open(res.image)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.RequireOSPayloads(); err != nil {
		t.Fatal(err)
	}
	if err := img.RequireArchitecture("x86_64"); err != nil {
		t.Fatal(err)
	}
	info := img.Config().ProductInfo
	if info.ID != productID || !strings.HasPrefix(info.Components["kernel"], "6.") || info.Components["loader"] == "" {
		t.Errorf("product info %+v", info)
	}

	// The UKI: sections read back with debug/pe.
	uki := payload(t, img, "kernel.efi")
	f, err := pe.NewFile(bytes.NewReader(uki))
	if err != nil {
		t.Fatal(err)
	}
	section := func(name string) []byte {
		s := f.Section(name)
		if s == nil {
			t.Fatalf("UKI has no %s section", name)
		}
		b, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		return bytes.TrimRight(b[:min(int(s.VirtualSize), len(b))], "\x00")
	}
	cmdline := string(section(".cmdline"))
	if !strings.HasPrefix(cmdline, cmdlineBase+" qcluster.verity=1,4096,4096,") {
		t.Errorf(".cmdline %q", cmdline)
	}
	if osrel := string(section(".osrel")); !strings.Contains(osrel, "VERSION_ID=") || !strings.Contains(osrel, "NAME=") {
		t.Errorf(".osrel %q", osrel)
	}

	// The initramfs: /init, /dev/console, modules in load order with
	// virtio-rng's first.
	zr, err := zstd.NewReader(bytes.NewReader(section(".initrd")))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	entries, err := cpio.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]cpio.Entry{}
	for _, e := range entries {
		files[strings.TrimPrefix(e.Name, "/")] = e
	}
	if c, ok := files["dev/console"]; !ok || c.Major != 5 || c.Minor != 1 {
		t.Errorf("dev/console: %+v", c)
	}
	if e, ok := files["init"]; !ok || e.Mode&0o111 == 0 || !bytes.HasPrefix(e.Data, []byte("\x7fELF")) {
		t.Errorf("init missing or not an executable ELF file")
	}
	order := strings.Fields(string(files["lib/modules/load.order"].Data))
	if len(order) == 0 || !strings.Contains(strings.Join(order, " "), "virtio_rng.ko") {
		t.Fatalf("load.order %q", order)
	}
	for i, m := range order {
		if m == "virtio_rng.ko" {
			// Only virtio_rng's own dependencies may come before it.
			for _, dep := range order[:i] {
				if dep != "virtio.ko" && dep != "virtio_ring.ko" {
					t.Errorf("%s loads before virtio_rng.ko", dep)
				}
			}
		}
		if _, ok := files["lib/modules/"+m]; !ok {
			t.Errorf("load.order names %s, which the archive lacks", m)
		}
	}

	// The system payload: veritysetup verifies it with the command line's
	// table, and fsck.erofs checks its file system.
	sys := filepath.Join(t.TempDir(), "system")
	if err := os.WriteFile(sys, payload(t, img, "system"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, ok := cmdlineValue(cmdline, "qcluster.verity")
	if !ok {
		t.Fatal("no qcluster.verity on the command line")
	}
	fields := strings.Split(v, ",")
	blocks, hashStart, rootHex, salt := fields[3], fields[4], fields[6], fields[7]
	run(t, veritysetup, "verify", "--no-superblock", "--data-blocks="+blocks, "--hash-offset="+mul4096(t, hashStart),
		"--salt="+salt, sys, sys, rootHex)
	fsImg := filepath.Join(t.TempDir(), "fs")
	if err := os.WriteFile(fsImg, payload(t, img, "system")[:atoi(t, blocks)*4096], 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, fsckErofs, fsImg)

	// Unchanged inputs: nothing to do.
	res2, err := build(t.Context(), log, options{out: out})
	if err != nil {
		t.Fatal(err)
	}
	if !res2.upToDate || res2.inputs != res.inputs {
		t.Errorf("second build: up to date %v, inputs %s then %s", res2.upToDate, res.inputs, res2.inputs)
	}
}

func payload(t *testing.T, img *osimage.Image, name string) []byte {
	t.Helper()
	p, err := img.Payload(name)
	if err != nil {
		t.Fatal(err)
	}
	return blockdevtest.Read(t, p)
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mul4096 turns a block number into a byte offset.
func mul4096(t *testing.T, blocks string) string {
	t.Helper()
	return strconv.Itoa(atoi(t, blocks) * 4096)
}

// cmdlineValue returns the value of key=value on a kernel command line.
func cmdlineValue(cmdline, key string) (string, bool) {
	for _, f := range strings.Fields(cmdline) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
