package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := Write(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	if b, _ := os.ReadFile(p); string(b) != "secret" {
		t.Fatalf("content %q", b)
	}
}

func TestWriteLeavesNothingOnError(t *testing.T) {
	dir := t.TempDir()
	// The target is a directory: the rename fails after the temp file exists.
	target := filepath.Join(dir, "d")
	if err := os.MkdirAll(filepath.Join(target, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("x"), 0o644); err == nil {
		t.Fatal("write over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestWriteDurable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "count")
	for _, s := range []string{"1\n", "2\n"} {
		if err := WriteDurable(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != s {
			t.Fatalf("content %q, want %q", b, s)
		}
	}
}

// TestCreate streams a file: the target keeps its old content until
// Commit, Abort leaves it as it was, and neither leaves a temporary file.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(p, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("new"), 1); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("target %q before Commit", b)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort() // a deferred Abort after Commit does nothing
	if b, _ := os.ReadFile(p); string(b) != "\x00new" {
		t.Fatalf("target %q after Commit", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode())
	}
	if err := f.Commit(); err == nil {
		t.Error("second Commit succeeded")
	}

	f, err = Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("discarded"))
	f.Abort()
	if b, _ := os.ReadFile(p); string(b) != "\x00new" {
		t.Fatalf("target %q after Abort", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}
