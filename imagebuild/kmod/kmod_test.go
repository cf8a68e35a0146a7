package kmod

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/cpio"
	"github.com/qcluster/qcluster/internal/needs"
)

// moduleDir is the kernel fetched by third_party/fetch.sh.
func moduleDir(t *testing.T) string {
	t.Helper()
	root := "../../third_party/cache"
	abi, err := os.ReadFile(filepath.Join(root, "kernel"))
	if err != nil {
		needs.File(t, filepath.Join(root, "kernel"), "run make fetch")
	}
	return filepath.Join(root, "root/lib/modules", strings.TrimSpace(string(abi)))
}

func TestResolveOrdersDependenciesFirst(t *testing.T) {
	s, err := Open(moduleDir(t))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := s.Resolve("virtio_net", "dm-verity", "virtio-rng")
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		if _, dup := pos[m.Name]; dup {
			t.Fatalf("%s listed twice", m.Name)
		}
		pos[m.Name] = i
	}
	for _, m := range mods {
		for _, d := range m.Depends {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s comes before its dependency %s", m.Name, d)
			}
		}
	}
	// The facts measured for this kernel: virtio_net needs net_failover,
	// dm-verity needs dm-bufio and dm-mod.
	for _, want := range []string{"virtio_net", "net_failover", "failover", "dm_verity", "dm_bufio", "dm_mod", "virtio_rng"} {
		if _, ok := pos[want]; !ok {
			t.Errorf("%s missing from %v", want, names(mods))
		}
	}
}

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestResolveUnknown(t *testing.T) {
	s, err := Open(moduleDir(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Resolve("no_such_module")
	if err == nil || !strings.Contains(err.Error(), "no_such_module not found") {
		t.Fatalf("got %v", err)
	}
}

func TestOpenEmpty(t *testing.T) {
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no .ko files") {
		t.Fatalf("got %v", err)
	}
}

func TestAddToArchive(t *testing.T) {
	s, err := Open(moduleDir(t))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := s.Resolve("virtio_blk")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf, 0)
	if err := AddToArchive(w, mods); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := cpio.ReadAll(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	files := map[string]bool{}
	for _, e := range entries {
		if e.Name == LoadOrderFile {
			order = strings.Fields(string(e.Data))
		}
		files[e.Name] = true
	}
	if !slices.Equal(order, func() []string {
		var o []string
		for _, m := range mods {
			o = append(o, m.Name+".ko")
		}
		return o
	}()) {
		t.Fatalf("load.order = %v, modules %v", order, names(mods))
	}
	for _, o := range order {
		if !files["lib/modules/"+o] {
			t.Errorf("%s in load.order but not in the archive", o)
		}
	}
}
