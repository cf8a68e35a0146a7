// Package resolve finds the external files qcluster runs or reads — QEMU,
// swtpm, OVMF, the loader, the kernel, the OS image — the same way under
// `bazel run`/`bazel test` and under `go run`/`go test`.
//
// A Spec is tried in this order, and the first hit wins:
//
//  1. Explicit: a path the caller was given (a flag, an option). It must exist:
//     a wrong flag is an error, not a reason to look elsewhere.
//  2. Runfiles: the Bazel runfile (rules_go's runfiles library, through
//     RUNFILES_DIR or RUNFILES_MANIFEST_FILE). Outside Bazel there are none.
//  3. Environment: the variable named in the Spec (QCLUSTER_QEMU, …). A
//     relative value is first taken as a runfile path, as Bazel's
//     $(rlocationpath …) writes it, then from the working directory.
//  4. Commands on PATH, then host paths (glob patterns allowed); relative
//     paths are taken from the repository root (the directory holding
//     qcluster's go.mod), so `go test` in any package finds out/ and
//     third_party/cache/.
//
// A path that was given (explicitly or in the variable) and does not exist is
// an error wrapping ErrGivenMissing, never a reason to look further: a pinned
// file asked for must not quietly become the host's.
//
// Under Bazel (TEST_SRCDIR or a runfiles variable set, or a runfiles tree
// beside the executable) RepoRoot does not look for the source checkout: the
// checkout can be reached through Bazel's execroot, but what a test or `bazel
// run` uses must come from its runfiles.
//
// An explicit choice comes before runfiles, unlike the runfiles-first rule of
// thumb, because a user who passes --qemu means it even under `bazel run`.
// This package is the one place outside launch/ that reads the environment.
package resolve

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bazelbuild/rules_go/go/runfiles"
)

// ErrNotFound is wrapped by Find's error when nothing matched.
var ErrNotFound = errors.New("not found")

// ErrGivenMissing is wrapped, with ErrNotFound, by Find's error when a path
// given explicitly or in the Spec's variable does not exist.
var ErrGivenMissing = errors.New("given path does not exist")

// ErrUnderBazel is wrapped by RepoRoot's error under Bazel, where the source
// checkout is not used (set QCLUSTER_ROOT to use one anyway).
var ErrUnderBazel = errors.New("running under Bazel: the source checkout is not used")

// Spec says where one external file may be.
type Spec struct {
	// What names the file in errors, e.g. "QEMU (qemu-system-x86_64)".
	What string
	// Explicit is a path given by the caller; empty means none.
	Explicit string
	// Runfile is the runfiles path under Bazel, e.g. "qcluster/testos/image".
	// A directory is named by a file in it and RunfileDir (a runfiles
	// manifest lists files only).
	Runfile string
	// RunfileDir takes the directory of the Runfile as the result.
	RunfileDir bool
	// RunfileABI, if set, is the runfile of a file holding a kernel ABI; its
	// first line replaces "{abi}" in Runfile.
	RunfileABI string
	// Env is an environment variable that may hold the path.
	Env string
	// Commands are looked up on PATH, in order.
	Commands []string
	// Paths are host paths or glob patterns; relative ones are taken from the
	// repository root. With several glob matches the greatest in version
	// order wins (vmlinuz-6.1.0-56 over vmlinuz-6.1.0-9).
	Paths []string
	// Hint says how to get the file, e.g. "apt-get install qemu-system-x86, or make deps".
	Hint string
}

// Find returns the path of the file a Spec describes.
func Find(s Spec) (string, error) {
	if s.Explicit != "" {
		if _, err := os.Stat(s.Explicit); err != nil {
			return "", fmt.Errorf("%s: %s given explicitly does not exist: %w: %w", s.What, s.Explicit, ErrGivenMissing, ErrNotFound)
		}
		return abs(s.Explicit), nil
	}
	var tried []string
	// New, not the package-level Rlocation: that one caches the environment
	// of its first call.
	rf, rfErr := runfiles.New()
	if s.Runfile != "" {
		if rfErr == nil {
			if p, ok := runfile(rf, s); ok {
				return p, nil
			}
		}
		tried = append(tried, "runfile "+s.Runfile)
	}
	if s.Env != "" {
		if v := os.Getenv(s.Env); v != "" {
			if !filepath.IsAbs(v) && rfErr == nil {
				if p, err := rf.Rlocation(v); err == nil && exists(p) {
					return abs(p), nil
				}
			}
			if !exists(v) {
				return "", fmt.Errorf("%s: $%s=%s does not exist (as a path or a runfile): %w: %w", s.What, s.Env, v, ErrGivenMissing, ErrNotFound)
			}
			return abs(v), nil
		}
		tried = append(tried, "$"+s.Env)
	}
	for _, c := range s.Commands {
		if p, err := exec.LookPath(c); err == nil {
			return abs(p), nil
		}
		tried = append(tried, c+" on PATH")
	}
	root, rootErr := RepoRoot()
	for _, p := range s.Paths {
		if !filepath.IsAbs(p) {
			if rootErr != nil {
				tried = append(tried, p+" (no repository root)")
				continue
			}
			p = filepath.Join(root, p)
		}
		matches, _ := filepath.Glob(p)
		slices.SortFunc(matches, versionCompare)
		if len(matches) > 0 {
			return matches[len(matches)-1], nil
		}
		tried = append(tried, p)
	}
	msg := fmt.Sprintf("%s %v (tried %s)", s.What, ErrNotFound, strings.Join(tried, ", "))
	if s.Hint != "" {
		msg += ": " + s.Hint
	}
	return "", fmt.Errorf("%s: %w", msg, ErrNotFound)
}

// runfile looks s.Runfile up in rf.
func runfile(rf *runfiles.Runfiles, s Spec) (string, bool) {
	name := s.Runfile
	if s.RunfileABI != "" {
		p, err := rf.Rlocation(s.RunfileABI)
		if err != nil {
			return "", false
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", false
		}
		abi, _, _ := strings.Cut(string(b), "\n")
		if abi = strings.TrimSpace(abi); abi == "" || strings.Contains(abi, "/") {
			return "", false
		}
		name = strings.ReplaceAll(name, "{abi}", abi)
	}
	p, err := rf.Rlocation(name)
	if err != nil || !exists(p) {
		return "", false
	}
	if s.RunfileDir {
		p = filepath.Dir(p)
	}
	return abs(p), true
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

const module = "github.com/qcluster/qcluster"

// RepoRoot returns the directory of qcluster's go.mod, found upwards from
// the working directory, else from the running executable (so that
// out/bin/cluster finds out/testos wherever it is started); $QCLUSTER_ROOT
// overrides both. Under Bazel it returns an error wrapping ErrUnderBazel
// unless $QCLUSTER_ROOT is set.
func RepoRoot() (string, error) {
	if r := os.Getenv("QCLUSTER_ROOT"); r != "" {
		return r, nil
	}
	exe, exeErr := os.Executable()
	if why := underBazel(exe, exeErr); why != "" {
		return "", fmt.Errorf("find the go.mod of %s: %s: %w", module, why, ErrUnderBazel)
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exeErr == nil {
		if exe, err := filepath.EvalSymlinks(exe); err == nil {
			starts = append(starts, filepath.Dir(exe))
		}
	}
	for _, dir := range starts {
		for {
			if isRoot(filepath.Join(dir, "go.mod")) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("no go.mod of %s above the working directory or the executable", module)
}

// underBazel says why the process runs under Bazel, or "" if it does not.
// Above a test's runfiles and its executable lies execroot/_main, where
// Bazel links every top-level entry of the checkout: walking up would find
// the checkout, and with it files Bazel never declared.
func underBazel(exe string, exeErr error) string {
	for _, v := range []string{"TEST_SRCDIR", "RUNFILES_DIR", "RUNFILES_MANIFEST_FILE"} {
		if os.Getenv(v) != "" {
			return "$" + v + " is set"
		}
	}
	// `bazel run` sets none of them: its runfiles lie beside the executable.
	if exeErr == nil {
		for _, suffix := range []string{".runfiles", ".runfiles_manifest"} {
			if exists(exe + suffix) {
				return "the executable has " + filepath.Base(exe) + suffix
			}
		}
	}
	return ""
}

func isRoot(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == module
		}
	}
	return false
}

// versionCompare orders strings with runs of digits compared as numbers.
func versionCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}
