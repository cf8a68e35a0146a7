package cpio

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/internal/needs"
)

func sample(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, 0)
	for _, err := range []error{
		w.CharDev("/dev/console", 0o600, 5, 1),
		w.File("/init", 0o755, []byte("#!/bin/true\n")),
		w.File("lib/modules/a.ko", 0o644, bytes.Repeat([]byte{7}, 4097)),
		w.Symlink("/bin/sh", "/init"),
		w.Dir("/empty", 0o700),
		w.File("odd", 0o644, []byte("abc")),
		w.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	entries, err := ReadAll(bytes.NewReader(sample(t)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]Entry{}
	for _, e := range entries {
		names = append(names, e.Name)
		byName[e.Name] = e
	}
	// Parents come before their children, once each.
	want := "dev dev/console init lib lib/modules lib/modules/a.ko bin bin/sh empty odd"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("entries:\n got %s\nwant %s", got, want)
	}
	if e := byName["dev/console"]; e.Mode != typeChar|0o600 || e.Major != 5 || e.Minor != 1 {
		t.Errorf("dev/console = %+v", e)
	}
	if e := byName["lib/modules/a.ko"]; e.Size != 4097 || !bytes.Equal(e.Data, bytes.Repeat([]byte{7}, 4097)) {
		t.Errorf("a.ko size %d", e.Size)
	}
	if e := byName["bin/sh"]; string(e.Data) != "/init" || e.Mode&0o170000 != typeSymlink {
		t.Errorf("bin/sh = %+v", e)
	}
	if !byName["empty"].IsDir() {
		t.Errorf("empty is not a directory")
	}
}

func TestDeterministic(t *testing.T) {
	a, b := sha256.Sum256(sample(t)), sha256.Sum256(sample(t))
	if a != b {
		t.Fatal("same input gave different archives")
	}
}

// TestGNUCpio checks the archive with an independent reader: GNU cpio lists
// and extracts it as the kernel would see it.
func TestGNUCpio(t *testing.T) {
	bin := needs.Tool(t, "cpio", "cpio")
	dir := t.TempDir()
	cmd := exec.Command(bin, "-i", "-d", "--no-absolute-filenames", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(sample(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		// Extracting a device node needs root; the listing is the check then.
		if !strings.Contains(string(out), "dev/console") {
			t.Fatalf("cpio -i: %v: %s", err, out)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "lib/modules/a.ko"))
	if err != nil || len(got) != 4097 {
		t.Fatalf("extracted a.ko: %d bytes, %v", len(got), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "/init" {
		t.Fatalf("bin/sh -> %q, %v", target, err)
	}
	list := exec.Command(bin, "-t", "-v", "--quiet")
	list.Stdin = bytes.NewReader(sample(t))
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	if !strings.Contains(string(out), "crw-------") || !strings.Contains(string(out), "dev/console") {
		t.Fatalf("cpio -tv does not show the console device:\n%s", out)
	}
}

func TestBadNames(t *testing.T) {
	for _, n := range []string{"", "/", "TRAILER!!!", strings.Repeat("x", 5000)} {
		w := NewWriter(&bytes.Buffer{}, 0)
		if err := w.File(n, 0o644, nil); err == nil {
			t.Errorf("File(%q) accepted", n)
		}
	}
}

func FuzzReadAll(f *testing.F) {
	f.Add(sample(f))
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ReadAll(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever parses must survive a rewrite.
		var buf bytes.Buffer
		w := NewWriter(&buf, 0)
		for _, e := range entries {
			if _, err := clean(e.Name); err != nil {
				continue
			}
			if e.Mode&0o170000 == typeRegular {
				_ = w.File(e.Name, 0o644, e.Data)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadAll(&buf); err != nil {
			t.Fatalf("rewritten archive unreadable: %v", err)
		}
	})
}
