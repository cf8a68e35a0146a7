package resolve_test

// TestUnderSimulatedBazel checks, without Bazel, what `bazel test` does to
// package resolve and to the tests that need make's outputs. It lays out what
// Bazel 8 and rules_go 0.65.0 give a go_test:
//
//   - an execroot whose _main links every top-level entry of the checkout
//     (go.mod, out/, third_party/ ...), as Bazel's execroot does;
//   - the test binary copied to _main/bazel-out/k8-fastbuild/bin/PKG/NAME_/NAME,
//     with its runfiles beside it: NAME.runfiles/, holding a MANIFEST
//     ("runfile-path absolute-path" per line), a _repo_mapping ("source
//     canonical repo,apparent name,target directory" per line; the main
//     repository is "" as a source and _main as a directory; a root module's
//     extension repositories are +EXTENSION+NAME) and the tree itself;
//   - the files Bazel declares (image, loader, OVMF, kernel, cluster command)
//     as stand-ins in the output base, not in the checkout;
//   - TEST_SRCDIR, TEST_WORKSPACE, RUNFILES_MANIFEST_FILE or RUNFILES_DIR,
//     the $(rlocationpath …) variables of third_party/defs.bzl and
//     e2e/BUILD.bazel, CI=true (.bazelrc passes it through), and the working
//     directory in the package's runfiles directory, where rules_go's test
//     main changes to.
//
// There, this test's own binary (re-run as a child, with the manifest, with
// the directory, and as `bazel run` runs a binary: no variables, the runfiles
// beside it) must find every file from the runfiles alone, and RepoRoot must
// not find the checkout; the test
// binaries of internal/protogen and internal/testvm (go test -c) must skip
// what needs the checkout, with a reason, and fail nothing.

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/resolve"
)

const (
	simEnv = "QCLUSTER_BAZEL_SIMULATION" // set in the child: the runfiles directory
	abi    = "6.1.0-99-cloud-amd64"
)

// bazelTree is a fake Bazel output base for one go_test.
type bazelTree struct {
	execroot string // OUTPUT_BASE/execroot/_main
	external string // OUTPUT_BASE/external
	manifest []string
}

// The runfiles of an e2e_test (third_party/defs.bzl E2E_DATA, //launch:cluster)
// plus the kernel, by runfile path; the value is the file under the output base.
func (b *bazelTree) declare(t *testing.T) map[string]string {
	t.Helper()
	bin := filepath.Join(b.execroot, "bazel-out/k8-fastbuild/bin")
	files := map[string]string{
		// A tree artifact: one entry for the directory (rules_go's runfiles
		// library: "only the directory is listed in the manifest").
		"_main/testos/image":                                     filepath.Join(bin, "testos/image"),
		"_main/testos/loader.efi":                                filepath.Join(bin, "testos/loader.efi"),
		"_main/launch/cluster_/cluster":                          filepath.Join(bin, "launch/cluster_/cluster"),
		"_main/nanoswitch/cmd/nanoswitch/nanoswitch_/nanoswitch": filepath.Join(bin, "nanoswitch/cmd/nanoswitch/nanoswitch_/nanoswitch"),
	}
	for _, f := range []string{"OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"} {
		files["+debian+debian_ovmf/usr/share/OVMF/"+f] = filepath.Join(b.external, "+debian+debian_ovmf/usr/share/OVMF", f)
	}
	files["+debian+debian_systemd_boot/usr/lib/systemd/boot/efi/linuxx64.efi.stub"] =
		filepath.Join(b.external, "+debian+debian_systemd_boot/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
	for _, f := range []string{"abi", "boot/vmlinuz", "lib/modules/" + abi + "/modules.builtin", "lib/modules/" + abi + "/kernel/drivers/virtio/virtio_pci.ko"} {
		files["+debian+debian_kernel/"+f] = filepath.Join(b.external, "+debian+debian_kernel", f)
	}
	writeFile(t, filepath.Join(bin, "testos/image/oci-layout"), `{"imageLayoutVersion": "1.0.0"}`)
	writeFile(t, filepath.Join(bin, "testos/image/index.json"), "{}")
	for rf, p := range files {
		if rf == "_main/testos/image" {
			continue
		}
		content := rf
		if strings.HasSuffix(rf, "/abi") {
			content = abi + "\n"
		}
		writeFile(t, p, content)
	}
	return files
}

// testBinary makes the runfiles of target (e.g. "resolve/resolve_test")
// with files in them, places exe as the test binary, and returns the binary's
// path and its runfiles directory.
func (b *bazelTree) testBinary(t *testing.T, target, exe string, files map[string]string) (bin, runfiles string) {
	t.Helper()
	pkg, name := filepath.Split(target)
	bin = filepath.Join(b.execroot, "bazel-out/k8-fastbuild/bin", pkg, name+"_", name)
	copyFile(t, exe, bin)
	runfiles = bin + ".runfiles"
	// What Bazel 8 writes for a main-repository target (apparent names
	// only for repositories whose files are in the runfiles).
	mapping := bin + ".repo_mapping"
	writeFile(t, mapping, strings.Join([]string{
		",debian_kernel,+debian+debian_kernel",
		",debian_ovmf,+debian+debian_ovmf",
		",debian_systemd_boot,+debian+debian_systemd_boot",
		",qcluster,_main",
		"+debian+debian_cache,debian_kernel,+debian+debian_kernel",
		"+debian+debian_cache,debian_ovmf,+debian+debian_ovmf",
		"+debian+debian_cache,debian_systemd_boot,+debian+debian_systemd_boot",
	}, "\n")+"\n")
	entries := map[string]string{"_repo_mapping": mapping}
	for rf, p := range files {
		entries[rf] = p
	}
	var lines []string
	for rf, p := range entries {
		lines = append(lines, rf+" "+p)
		link := filepath.Join(runfiles, rf)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, link); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(lines)
	writeFile(t, filepath.Join(runfiles, "MANIFEST"), strings.Join(lines, "\n")+"\n")
	// rules_go's test main changes into the package's runfiles directory.
	if err := os.MkdirAll(filepath.Join(runfiles, "_main", pkg), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, runfiles
}

// newBazelTree links the checkout's top-level entries into a fake execroot.
func newBazelTree(t *testing.T, checkout string) *bazelTree {
	t.Helper()
	base := filepath.Join(t.TempDir(), "output_base")
	b := &bazelTree{execroot: filepath.Join(base, "execroot/_main"), external: filepath.Join(base, "external")}
	entries, err := os.ReadDir(checkout)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(b.execroot, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(checkout, e.Name()), filepath.Join(b.execroot, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// How the simulated Bazel runs a binary.
type mode int

const (
	testManifest  mode = iota // bazel test: RUNFILES_MANIFEST_FILE (what rules_go prefers)
	testDirectory             // bazel test with RUNFILES_DIR only
	bazelRun                  // bazel run: no variables, the runfiles beside the binary
)

// run runs bin as `bazel test` or `bazel run` would.
func run(t *testing.T, bin, runfiles, pkg string, m mode, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = filepath.Join(runfiles, "_main", pkg)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "QCLUSTER_") || strings.HasPrefix(k, "RUNFILES_") || strings.HasPrefix(k, "TEST_") || k == "CI" || k == "GOFLAGS" {
			continue
		}
		env = append(env, kv)
	}
	if m != bazelRun {
		env = append(env, "TEST_SRCDIR="+runfiles, "TEST_WORKSPACE=_main")
	} else {
		cmd.Dir = filepath.Join(runfiles, "_main") // bazel run's working directory
	}
	env = append(env, "CI=true",
		// third_party/defs.bzl's E2E_ENV, e2e/BUILD.bazel's and launch/BUILD.bazel's env.
		"QCLUSTER_OVMF_CODE=+debian+debian_ovmf/usr/share/OVMF/OVMF_CODE_4M.fd",
		"QCLUSTER_OVMF_VARS=+debian+debian_ovmf/usr/share/OVMF/OVMF_VARS_4M.fd",
		"QCLUSTER_CLUSTER=_main/launch/cluster_/cluster",
		simEnv+"="+runfiles)
	switch m {
	case testManifest:
		env = append(env, "RUNFILES_MANIFEST_FILE="+filepath.Join(runfiles, "MANIFEST"))
	case testDirectory:
		env = append(env, "RUNFILES_DIR="+runfiles)
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestUnderSimulatedBazel(t *testing.T) {
	if os.Getenv(simEnv) != "" {
		t.Skip("the child runs TestSimulatedBazelChild only")
	}
	checkout, err := resolve.RepoRoot()
	if err != nil {
		t.Skipf("needs the source checkout: %v", err)
	}
	b := newBazelTree(t, checkout)
	files := b.declare(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	// resolve itself: every file from the runfiles, no checkout.
	bin, runfiles := b.testBinary(t, "resolve/resolve_test", self, files)
	for _, m := range []mode{testManifest, testDirectory, bazelRun} {
		out, err := run(t, bin, runfiles, "resolve", m, "-test.run=^TestSimulatedBazelChild$", "-test.v")
		if err != nil || !strings.Contains(out, "--- PASS: TestSimulatedBazelChild") {
			t.Errorf("mode %d: the checks under simulated Bazel failed (%v):\n%s", m, err, out)
		}
	}

	// The tests that need make's outputs or the checkout skip, saying why.
	for _, c := range []struct{ pkg, test string }{
		{"internal/protogen", "TestPluginVersionsMatchGoMod"},
		{"internal/testvm", "TestBoot"},
	} {
		exe := filepath.Join(t.TempDir(), "test")
		build := exec.Command("go", "test", "-c", "-o", exe, "./"+c.pkg)
		build.Dir = checkout
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go test -c ./%s: %v\n%s", c.pkg, err, out)
		}
		bin, runfiles := b.testBinary(t, c.pkg+"/"+filepath.Base(c.pkg)+"_test", exe, files)
		out, err := run(t, bin, runfiles, c.pkg, testManifest, "-test.run=^"+c.test+"$", "-test.v")
		if err != nil || !strings.Contains(out, "--- SKIP: "+c.test) || !strings.Contains(out, "skipped under Bazel") {
			t.Errorf("%s %s under simulated Bazel: want a skip saying it is under Bazel, got %v:\n%s", c.pkg, c.test, err, out)
		}
	}
}

// TestSimulatedBazelChild runs inside the tree TestUnderSimulatedBazel made.
func TestSimulatedBazelChild(t *testing.T) {
	runfiles := os.Getenv(simEnv)
	if runfiles == "" {
		t.Skip("run by TestUnderSimulatedBazel")
	}
	base, _, ok := strings.Cut(runfiles, "/execroot/")
	if exe, err := os.Executable(); !ok || err != nil || !strings.HasPrefix(exe, base+"/execroot/_main/bazel-out/") {
		t.Fatalf("the child is not inside the execroot: %s, %v", exe, err)
	}
	if _, err := os.Stat(filepath.Join(base, "execroot/_main/go.mod")); err != nil {
		t.Fatalf("the checkout is not visible above the executable: %v", err)
	}
	// Bazel's files: declared outputs and external repositories, never the
	// checkout's entries linked into the execroot.
	bazelFile := func(p string) bool {
		return strings.HasPrefix(p, base+"/external/") || strings.HasPrefix(p, base+"/execroot/_main/bazel-out/")
	}

	if root, err := resolve.RepoRoot(); !errors.Is(err, resolve.ErrUnderBazel) {
		t.Errorf("RepoRoot found %q, %v; want an error wrapping ErrUnderBazel", root, err)
	}
	inBazel := func(what string, p string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		if !bazelFile(p) {
			t.Errorf("%s: %s is not one of Bazel's files (under %s)", what, p, base)
		}
	}
	for _, s := range []resolve.Spec{
		resolve.Image(""), resolve.Loader(""), resolve.Kernel(""), resolve.Modules(""), resolve.Stub(""),
		resolve.OVMFCode(""), resolve.OVMFVars(""), resolve.OVMFCodeSecureBoot(""), resolve.OVMFVarsMS(""),
		resolve.Cluster(""), resolve.Nanoswitch(""),
		// The variables alone: $(rlocationpath …) values.
		{What: "$QCLUSTER_OVMF_CODE", Env: "QCLUSTER_OVMF_CODE"},
		{What: "$QCLUSTER_CLUSTER", Env: "QCLUSTER_CLUSTER"},
	} {
		p, err := resolve.Find(s)
		inBazel(s.What, p, err)
	}
	if p, err := resolve.Find(resolve.Modules("")); err == nil && filepath.Base(p) != abi {
		t.Errorf("modules: %s is not the ABI's directory %s", p, abi)
	}
	o, err := qemu.FindOVMF(qemu.FirmwareQuery{})
	inBazel("qemu.FindOVMF", o.Code, err)
	if err == nil && !strings.HasSuffix(o.Code, "/OVMF_CODE_4M.fd") {
		t.Errorf("qemu.FindOVMF: %+v; want the pinned OVMF_CODE_4M.fd", o)
	}
	t.Setenv("QCLUSTER_OVMF_CODE", "+debian+debian_ovmf/usr/share/OVMF/NONE.fd")
	if o, err := qemu.FindOVMF(qemu.FirmwareQuery{}); err == nil {
		// The runfile comes first; without it the variable must not lead
		// to the host's firmware.
		if !bazelFile(o.Code) {
			t.Errorf("qemu.FindOVMF with a wrong $QCLUSTER_OVMF_CODE: %+v, the host's", o)
		}
	} else if !errors.Is(err, resolve.ErrGivenMissing) {
		t.Errorf("qemu.FindOVMF with a wrong $QCLUSTER_OVMF_CODE: %v", err)
	}
	if _, err := resolve.Find(resolve.Spec{What: "x", Env: "QCLUSTER_OVMF_CODE"}); !errors.Is(err, resolve.ErrGivenMissing) {
		t.Errorf("a variable naming a missing runfile: %v; want ErrGivenMissing", err)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
