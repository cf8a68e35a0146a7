package blockdev

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileBlob(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("content"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := NewFileBlob(p)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := b.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Open returned %T, want *os.File (for the fast copy paths)", rc)
	}
	if got, _ := io.ReadAll(rc); string(got) != "content" || b.Size() != 7 {
		t.Errorf("read %q, size %d; want %q, 7", got, b.Size(), "content")
	}
	if _, err := NewFileBlob(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
	if _, err := NewFileBlob(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestBytes(t *testing.T) {
	var b Blob = Bytes("abc")
	rc, err := b.Open()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(rc); string(got) != "abc" || b.Size() != 3 {
		t.Errorf("read %q, size %d", got, b.Size())
	}
}
