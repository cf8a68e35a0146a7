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
//  3. Environment: the variable named in the Spec (QCLUSTER_QEMU, …).
//  4. Commands on PATH, then host paths (glob patterns allowed); relative
//     paths are taken from the repository root (the directory holding
//     qcluster's go.mod), so `go test` in any package finds out/ and
//     third_party/cache/.
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

// Spec says where one external file may be.
type Spec struct {
	// What names the file in errors, e.g. "QEMU (qemu-system-x86_64)".
	What string
	// Explicit is a path given by the caller; empty means none.
	Explicit string
	// Runfile is the runfiles path under Bazel, e.g. "qcluster/testos/image".
	Runfile string
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
			return "", fmt.Errorf("%s: %s given explicitly does not exist: %w", s.What, s.Explicit, ErrNotFound)
		}
		return abs(s.Explicit), nil
	}
	var tried []string
	if s.Runfile != "" {
		// New, not the package-level Rlocation: that one caches the
		// environment of its first call.
		if r, err := runfiles.New(); err == nil {
			if p, err := r.Rlocation(s.Runfile); err == nil {
				if _, err := os.Stat(p); err == nil {
					return abs(p), nil
				}
			}
		}
		tried = append(tried, "runfile "+s.Runfile)
	}
	if s.Env != "" {
		if v := os.Getenv(s.Env); v != "" {
			if _, err := os.Stat(v); err != nil {
				return "", fmt.Errorf("%s: $%s=%s does not exist: %w", s.What, s.Env, v, ErrNotFound)
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
// overrides both.
func RepoRoot() (string, error) {
	if r := os.Getenv("QCLUSTER_ROOT"); r != "" {
		return r, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
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
