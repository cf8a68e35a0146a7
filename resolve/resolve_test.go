package resolve

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/internal/testerr"
)

func touch(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOrder(t *testing.T) {
	dir := t.TempDir()
	rf := filepath.Join(dir, "runfiles")
	explicit := touch(t, filepath.Join(dir, "explicit/qemu"))
	runfile := touch(t, filepath.Join(rf, "tools/qemu"))
	env := touch(t, filepath.Join(dir, "env/qemu"))
	onPath := touch(t, filepath.Join(dir, "path/qemu-system-x86_64"))
	t.Setenv("PATH", filepath.Dir(onPath))
	t.Setenv("RUNFILES_DIR", rf)
	t.Setenv("RUNFILES_MANIFEST_FILE", "")
	t.Setenv("QCLUSTER_QEMU", env)

	spec := func(explicit string) Spec {
		s := QEMU(explicit)
		s.Runfile = "tools/qemu"
		return s
	}
	for _, c := range []struct {
		name  string
		setup func()
		spec  Spec
		want  string
	}{
		{"explicit wins over runfiles", func() {}, spec(explicit), explicit},
		{"runfiles before environment", func() {}, spec(""), runfile},
		{"environment before PATH", func() { t.Setenv("RUNFILES_DIR", filepath.Join(dir, "none")) }, spec(""), env},
		{"PATH last", func() { t.Setenv("QCLUSTER_QEMU", "") }, spec(""), onPath},
	} {
		c.setup()
		got, err := Find(c.spec)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

func TestExplicitMissingIsAnError(t *testing.T) {
	_, err := Find(QEMU("/nonexistent/qemu"))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "/nonexistent/qemu given explicitly") {
		t.Fatalf("got %v", err)
	}
}

func TestNotFoundSaysWhatWasTried(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("RUNFILES_DIR", "")
	t.Setenv("QCLUSTER_SWTPM", "")
	_, err := Find(Swtpm(""))
	testerr.Want(t, err, ErrNotFound, "swtpm on PATH", "$QCLUSTER_SWTPM", "apt-get install")
}

func TestRepoRelativeGlobTakesTheNewest(t *testing.T) {
	root := t.TempDir()
	t.Setenv("QCLUSTER_ROOT", root)
	touch(t, filepath.Join(root, "k/vmlinuz-6.1.0-9-cloud-amd64"))
	want := touch(t, filepath.Join(root, "k/vmlinuz-6.1.0-56-cloud-amd64"))
	got, err := Find(Spec{What: "kernel", Paths: []string{"k/vmlinuz-*"}})
	if err != nil || got != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

func TestRepoRoot(t *testing.T) {
	t.Setenv("QCLUSTER_ROOT", "")
	root, err := RepoRoot()
	if errors.Is(err, ErrUnderBazel) {
		t.Skipf("skipped under Bazel, where the checkout is not used: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "resolve/resolve.go")); err != nil {
		t.Fatalf("root %s does not hold this package: %v", root, err)
	}
}

// TestVariableValues: a relative value is a runfile path first, then a path
// from the working directory; a value naming nothing is ErrGivenMissing.
func TestVariableValues(t *testing.T) {
	dir := t.TempDir()
	rf := filepath.Join(dir, "runfiles")
	inRunfiles := touch(t, filepath.Join(rf, "+debian+debian_ovmf/OVMF.fd"))
	t.Chdir(dir)
	inCwd := touch(t, filepath.Join(dir, "local/OVMF.fd"))
	t.Setenv("RUNFILES_MANIFEST_FILE", "")
	t.Setenv("RUNFILES_DIR", rf)
	spec := Spec{What: "firmware", Env: "QCLUSTER_TEST_FW"}
	for _, c := range []struct{ value, want string }{
		{"+debian+debian_ovmf/OVMF.fd", inRunfiles},
		{"local/OVMF.fd", inCwd},
		{inCwd, inCwd},
	} {
		t.Setenv("QCLUSTER_TEST_FW", c.value)
		if got, err := Find(spec); err != nil || got != c.want {
			t.Errorf("$QCLUSTER_TEST_FW=%s: got %q, %v; want %q", c.value, got, err, c.want)
		}
	}
	t.Setenv("QCLUSTER_TEST_FW", "+debian+debian_ovmf/NONE.fd")
	if _, err := Find(spec); !errors.Is(err, ErrGivenMissing) || !errors.Is(err, ErrNotFound) {
		t.Errorf("a value naming nothing: %v; want ErrGivenMissing and ErrNotFound", err)
	}
}
