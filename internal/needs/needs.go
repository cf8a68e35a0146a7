// Package needs lets tests state what they need from the host: a command, root,
// loop devices. What is missing skips the test locally and fails it in CI
// (CI=true), so a green CI run never hides a test that did not run.
package needs

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/qcluster/qcluster/resolve"
)

// inCI reports whether missing prerequisites are failures rather than skips.
func inCI() bool { return os.Getenv("CI") == "true" }

// missing skips or fails t with the reason.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf("prerequisite missing in CI: "+format, args...)
	}
	t.Skipf("skipped, prerequisite missing: "+format, args...)
}

// Tool returns the path of the named command, skipping (or, in CI, failing)
// the test when it is not on PATH. The message names the Debian package.
func Tool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, "%s not on PATH (apt-get install --no-install-recommends %s, or make deps)", name, debianPackage)
	}
	return p
}

// File skips (or fails) the test when path does not exist; hint says how to get it.
func File(t testing.TB, path, hint string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(t, "%s: %v (%s)", path, err, hint)
	}
}

// Root skips (or fails) the test unless it runs as root.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root")
	}
}

// Loop skips (or fails) the test unless loop devices can be set up.
func Loop(t testing.TB) {
	t.Helper()
	Root(t)
	Tool(t, "losetup", "mount")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing(t, "no /dev/loop-control: %v", err)
	}
}

// Short skips the test under -short; for tests that boot VMs.
func Short(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped in -short mode: %s", why)
	}
}

// Checkout returns the source checkout's top directory (resolve.RepoRoot),
// for tests that need what is only there: make's outputs (out/,
// third_party/cache), scripts, go.mod for `go build`. Under Bazel the
// checkout is not used, so the test is skipped, also in CI: Bazel's own
// targets and runfiles cover what it would check. Elsewhere a missing
// checkout skips the test locally and fails it in CI.
func Checkout(t testing.TB) string {
	t.Helper()
	root, err := resolve.RepoRoot()
	if errors.Is(err, resolve.ErrUnderBazel) {
		t.Skipf("skipped under Bazel: needs the source checkout and make's outputs, not runfiles (%v)", err)
	}
	if err != nil {
		missing(t, "the source checkout: %v", err)
	}
	return root
}
