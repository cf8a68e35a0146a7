package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/internal/needs"
)

// TestBadInput gives the cluster command and cluster.Launch bad input. Each
// case must fail with one line that says what is wrong, exit ≠ 0 (the
// command), and leave nothing behind: no state or socket directory, no
// process. None boots a VM, so it runs in -short mode too.
func TestBadInput(t *testing.T) {
	t.Run("Command", testBadCommand)
	t.Run("API", testBadAPI)
}

// badCommand is one bad invocation of the cluster command.
type badCommand struct {
	name string
	// args after the defaults (--accel tcg --nodes 1 --exit-when-ready
	// --timeout 2m); a later flag wins.
	args []string
	// setup makes fixtures in fix (a directory the command sees) and
	// returns extra arguments and environment.
	setup func(t *testing.T, fix string) (args, env []string)
	want  string // in the error line
}

func testBadCommand(t *testing.T) {
	needsHost(t)
	cases := []badCommand{
		{name: "NodesZero", args: []string{"--nodes", "0"}, want: "--nodes 0: want 1 to 64"},
		{name: "NodesNegative", args: []string{"--nodes", "-3"}, want: "--nodes -3"},
		{name: "NodesAbsurd", args: []string{"--nodes", "1000"}, want: "--nodes 1000: want 1 to 64"},
		{name: "NodesNotANumber", args: []string{"--nodes", "three"}, want: `"three"`},
		{name: "MemoryTiny", args: []string{"--memory", "64"}, want: "--memory 64: want 128 to 65536"},
		{name: "MemoryAbsurd", args: []string{"--memory", "10000000"}, want: "--memory 10000000: want 128 to 65536"},
		{name: "CPUsZero", args: []string{"--cpus", "0"}, want: "--cpus 0"},
		{name: "CPUsAbsurd", args: []string{"--cpus", "1000"}, want: "--cpus 1000: want 1 to 64"},
		{name: "DiskSmallerThanImageNeeds", args: []string{"--disk", "512MiB"}, want: "smaller than the plan's"},
		{name: "DiskNotASize", args: []string{"--disk", "lots"}, want: `size "lots"`},
		{name: "TimeoutNegative", args: []string{"--timeout", "-5s"}, want: `--timeout "-5s"`},
		{name: "TimeoutNotADuration", args: []string{"--timeout", "soon"}, want: `--timeout "soon"`},
		{name: "ReadyUnknown", args: []string{"--ready", "http:80"}, want: `--ready: "http:80"`},
		{name: "ReadyBadPort", args: []string{"--ready", "tcp:70000"}, want: "want a port from 1 to 65535"},
		{name: "ReadyBadRegexp", args: []string{"--ready", "console:("}, want: "want a regular expression"},
		{name: "AccelUnknown", args: []string{"--accel", "xen"}, want: `accelerator "xen"`},
		{name: "LogLevelUnknown", args: []string{"--log-level", "loud"}, want: `--log-level "loud"`},
		{name: "UnexpectedArgument", args: []string{"now"}, want: `unexpected argument "now"`},
		{name: "UnknownFlag", args: []string{"--nodez", "3"}, want: "nodez"},
		{name: "ImageMissing", args: []string{"--image", "/nonexistent/image"}, want: "/nonexistent/image"},
		{name: "ImageNotALayout", setup: func(t *testing.T, fix string) ([]string, []string) {
			dir := filepath.Join(fix, "empty")
			mkdir(t, dir)
			return []string{"--image", dir}, nil
		}, want: "oci-layout"},
		{name: "ImageIsAFile", setup: func(t *testing.T, fix string) ([]string, []string) {
			return []string{"--image", writeFile(t, filepath.Join(fix, "image.tar"), "not a layout")}, nil
		}, want: "image.tar"},
		{name: "ImageCorruptBlob", setup: func(t *testing.T, fix string) ([]string, []string) {
			return []string{"--image", corruptBlobImage(t, fix)}, nil
		}, want: "system"},
		{name: "ImageWrongArchitecture", setup: func(t *testing.T, fix string) ([]string, []string) {
			b := base(t)
			info := b.Info
			info.Architecture = "aarch64"
			return []string{"--image", writeImage(t, fix, info, b.Kernel, b.System, "")}, nil
		}, want: `"aarch64"`},
		{name: "QEMUFlagPointsNowhere", args: []string{"--qemu", "/nonexistent/qemu-system-x86_64"}, want: "/nonexistent/qemu-system-x86_64"},
		{name: "SwtpmFlagPointsNowhere", args: []string{"--swtpm", "/nonexistent/swtpm"}, want: "/nonexistent/swtpm"},
		{name: "OVMFFlagPointsNowhere", args: []string{"--ovmf-code", "/nonexistent/OVMF_CODE.fd", "--ovmf-vars", "/usr/share/OVMF/OVMF_VARS_4M.fd"}, want: "/nonexistent/OVMF_CODE.fd"},
		{name: "OVMFCodeWithoutVars", args: []string{"--ovmf-code", "/usr/share/OVMF/OVMF_CODE_4M.fd"}, want: "give both or neither"},
		{name: "QEMUNotOnPath", setup: func(t *testing.T, fix string) ([]string, []string) {
			empty := filepath.Join(fix, "bin")
			mkdir(t, empty)
			return nil, []string{"PATH=" + empty, "QCLUSTER_QEMU="}
		}, want: "qemu-system-x86_64"},
		{name: "SwtpmNotOnPath", setup: func(t *testing.T, fix string) ([]string, []string) {
			// QEMU is there, swtpm is not.
			bin := filepath.Join(fix, "bin")
			mkdir(t, bin)
			q, err := exec.LookPath("qemu-system-x86_64")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(q, filepath.Join(bin, "qemu-system-x86_64")); err != nil {
				t.Fatal(err)
			}
			return nil, []string{"PATH=" + bin, "QCLUSTER_QEMU=", "QCLUSTER_SWTPM=", "QCLUSTER_SWTPM_SETUP="}
		}, want: "swtpm"},
		{name: "StateDirUnwritable", setup: func(t *testing.T, fix string) ([]string, []string) {
			return []string{"--state-dir", immutableDir(t, fix)}, nil
		}, want: "immutable"},
		{name: "StateDirBelowUnwritable", setup: func(t *testing.T, fix string) ([]string, []string) {
			return []string{"--state-dir", filepath.Join(immutableDir(t, fix), "state")}, nil
		}, want: "immutable/state"},
		{name: "StateDirInUse", setup: func(t *testing.T, fix string) ([]string, []string) {
			dir := filepath.Join(fix, "state")
			mkdir(t, dir)
			// What a running cluster holds: the state directory's lock.
			f, err := os.OpenFile(filepath.Join(dir, ".qcluster.lock"), os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				t.Fatal(err)
			}
			return []string{"--state-dir", dir}, nil
		}, want: "in use by another cluster"},
		{name: "StateDirNotEmpty", setup: func(t *testing.T, fix string) ([]string, []string) {
			dir := filepath.Join(fix, "state")
			mkdir(t, dir)
			writeFile(t, filepath.Join(dir, "precious"), "keep me")
			return []string{"--state-dir", dir}, nil
		}, want: "not empty"},
		{name: "StateDirIsAFile", setup: func(t *testing.T, fix string) ([]string, []string) {
			return []string{"--state-dir", writeFile(t, filepath.Join(fix, "state"), "a file")}, nil
		}, want: "state"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fix := fixtureDir(t)
			args := []string{"--accel", "tcg", "--nodes", "1", "--exit-when-ready", "--timeout", "2m"}
			args = append(args, tc.args...)
			var env []string
			if tc.setup != nil {
				a, e := tc.setup(t, fix)
				args, env = append(args, a...), e
			}
			before := snapshot(t, fix)
			cmd := newCommand(t, args...)
			cmd.Env = append(cmd.Env, env...)
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit: %v, want a non-zero status; stderr:\n%s", err, cmd.Stderr)
			}
			line := errorLine(t, cmd.Stderr.String())
			if !strings.Contains(line, tc.want) {
				t.Errorf("error %q does not say %q", line, tc.want)
			}
			t.Logf("exit %d after %s: %s", exit.ExitCode(), took.Round(time.Millisecond), line)
			if left := cmd.leftovers(); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
			if after := snapshot(t, fix); after != before {
				t.Errorf("fixtures changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// errorLine returns the command's one error line ("cluster: ..." or
// "ERROR: ..."), failing t unless there is exactly one and every other
// stderr line is a progress line.
func errorLine(t *testing.T, stderr string) string {
	t.Helper()
	var errs, other []string
	for _, l := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "cluster: "), strings.HasPrefix(l, "ERROR: "):
			errs = append(errs, l)
		case strings.HasPrefix(l, "Creating cluster"), strings.HasPrefix(trimmed, "•"),
			strings.HasPrefix(trimmed, "✓"), strings.HasPrefix(trimmed, "✗"):
		default:
			other = append(other, l)
		}
	}
	if len(errs) != 1 || len(other) > 0 {
		t.Errorf("want exactly one error line and progress lines; got %d error line(s) and %d other line(s):\n%s", len(errs), len(other), stderr)
	}
	if len(errs) == 0 {
		return ""
	}
	return errs[0]
}

// snapshot lists the files below dir with their sizes and modes.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		size := fi.Size()
		if fi.IsDir() {
			size = 0
		}
		fmt.Fprintf(&b, "%s %s %d\n", rel, fi.Mode(), size)
		return nil
	})
	return b.String()
}

// immutableDir makes fix/immutable with chattr +i (undone at cleanup):
// root may write anywhere, but not into an immutable directory.
func immutableDir(t *testing.T, fix string) string {
	t.Helper()
	needs.Tool(t, "chattr", "e2fsprogs")
	dir := filepath.Join(fix, "immutable")
	mkdir(t, dir)
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("chattr +i %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", dir).Run() })
	return dir
}

func mkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, p, content string) string {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testBadAPI gives cluster.Launch options it must refuse before booting.
func testBadAPI(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, o *cluster.Options)
		want   string
	}{
		{"NodesAbsurd", func(t *testing.T, o *cluster.Options) { o.Nodes = 65 }, "65 nodes: want 1 to 64"},
		{"NodesNegative", func(t *testing.T, o *cluster.Options) { o.Nodes = -1 }, "-1 nodes"},
		{"MemoryTiny", func(t *testing.T, o *cluster.Options) { o.Node.MemoryMiB = 100 }, "memory 100 MiB"},
		{"MemoryAbsurdForOneNode", func(t *testing.T, o *cluster.Options) {
			o.Nodes = 2
			o.PerNode = map[int]cluster.NodeOptions{1: {MemoryMiB: 1 << 20}}
		}, "node1: memory 1048576 MiB"},
		{"CPUsNegative", func(t *testing.T, o *cluster.Options) { o.Node.CPUs = -2 }, "-2 CPUs"},
		{"OverrideForMissingNode", func(t *testing.T, o *cluster.Options) {
			o.PerNode = map[int]cluster.NodeOptions{5: {CPUs: 2}}
		}, "override for node 5"},
		{"NoProfile", func(t *testing.T, o *cluster.Options) { o.Profile = nil }, "no OS profile"},
		{"BadName", func(t *testing.T, o *cluster.Options) { o.Name = "Bad_Name" }, `cluster name "Bad_Name"`},
		{"SubnetIPv6", func(t *testing.T, o *cluster.Options) { o.Subnet = netip.MustParsePrefix("fd00::/64") }, "subnet fd00::/64"},
		{"SubnetTooSmall", func(t *testing.T, o *cluster.Options) { o.Subnet = netip.MustParsePrefix("10.9.0.0/29") }, "subnet 10.9.0.0/29"},
		{"StateDirNotEmpty", func(t *testing.T, o *cluster.Options) {
			o.StateDir = t.TempDir()
			writeFile(t, filepath.Join(o.StateDir, "precious"), "keep me")
		}, "not empty"},
		{"TimeoutNegative", func(t *testing.T, o *cluster.Options) { o.Timeout = -time.Second }, "timeout -1s"},
		{"AccelUnknown", func(t *testing.T, o *cluster.Options) { o.Accel = "hvf" }, `accelerator "hvf"`},
		{"FirmwareVarsOnly", func(t *testing.T, o *cluster.Options) { o.FirmwareVars = "/usr/share/OVMF/OVMF_VARS_4M.fd" }, "give both or neither"},
		{"LoaderMissing", func(t *testing.T, o *cluster.Options) { o.Loader = "/nonexistent/loader.efi" }, "/nonexistent/loader.efi"},
		{"DiskNotSectorMultiple", func(t *testing.T, o *cluster.Options) { o.Node.DiskSize = 3<<30 + 1 }, "multiple of 512"},
		{"DiskNegative", func(t *testing.T, o *cluster.Options) { o.Node.DiskSize = -1 }, "disk size -1"},
		{"ImageWrongArchitecture", func(t *testing.T, o *cluster.Options) {
			b := base(t)
			info := b.Info
			info.Architecture = "riscv64"
			o.Image = writeImage(t, t.TempDir(), info, b.Kernel, b.System, "")
		}, `"riscv64"`},
	}
	needsHost(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := options(1, false)
			o.StateDir = filepath.Join(t.TempDir(), "state")
			tc.change(t, &o)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := cluster.Launch(ctx, o)
			if err == nil {
				c.Close()
				t.Fatal("launched")
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line saying %q", msg, tc.want)
			}
			t.Logf("%v", err)
			if tc.name == "StateDirNotEmpty" {
				if _, err := os.Stat(filepath.Join(o.StateDir, "precious")); err != nil {
					t.Errorf("the refused state directory's content: %v", err)
				}
			} else if _, err := os.Stat(o.StateDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state directory %s left behind: %v", o.StateDir, err)
			}
			waitGone(t, "after the refused launch", 2*time.Second, mentioning(o.StateDir))
		})
	}
}
