package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/resolve"
	"github.com/qcluster/qcluster/testos/profile"
)

func TestDiskFlag(t *testing.T) {
	for in, want := range map[string]int64{"3GiB": 3 << 30, "512MiB": 512 << 20, "4096": 4096, "64KiB": 64 << 10, "2G": 2 << 30} {
		if c, err := parseFlags([]string{"--disk", in}, io.Discard); err != nil || c.opts.Node.DiskSize != want {
			t.Errorf("--disk %q: %+v, %v; want %d", in, c, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1GiB", "3TB", "GiB", "1.5GiB", "99999999999GiB"} {
		if _, err := parseFlags([]string{"--disk", in}, io.Discard); err == nil {
			t.Errorf("--disk %q accepted", in)
		}
	}
}

func FuzzDiskFlag(f *testing.F) {
	for _, s := range []string{"3GiB", "1", "12MiB", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := parseFlags([]string{"--disk", s}, io.Discard); err == nil && c.opts.Node.DiskSize <= 0 {
			t.Fatalf("--disk %q = %d without error", s, c.opts.Node.DiskSize)
		}
	})
}

// TestLimitsAsPrinted reads each range --help prints and checks that its
// ends are accepted and the numbers just outside refused.
func TestLimitsAsPrinted(t *testing.T) {
	var help bytes.Buffer
	if code := run([]string{"--help"}, io.Discard, &help); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, flag := range []string{"nodes", "cpus", "memory"} {
		m := regexp.MustCompile(`(?m)^\s+-` + flag + ` int\n.*\((\d+)–(\d+)\)`).FindStringSubmatch(help.String())
		if m == nil {
			t.Errorf("--help prints no range for --%s:\n%s", flag, help.String())
			continue
		}
		lo, _ := strconv.Atoi(m[1])
		hi, _ := strconv.Atoi(m[2])
		for v, ok := range map[int]bool{lo - 1: false, lo: true, hi: true, hi + 1: false} {
			_, err := parseFlags([]string{"--" + flag, strconv.Itoa(v)}, io.Discard)
			if (err == nil) != ok {
				t.Errorf("--%s %d (printed range %d–%d): error %v", flag, v, lo, hi, err)
			}
		}
	}
}

func TestParseReady(t *testing.T) {
	for spec, want := range map[string]any{
		"testos":            &profile.Profile{},
		"tcp:22":            cluster.TCPProfile{Port: 22},
		"grpc-health:50051": cluster.GRPCHealthProfile{Port: 50051},
		"grpc-health:1:tls": cluster.GRPCHealthProfile{Port: 1, TLS: true},
	} {
		p, err := parseReady(spec)
		if err != nil {
			t.Errorf("%s: %v", spec, err)
			continue
		}
		if gotT, wantT := typeName(p), typeName(want); gotT != wantT {
			t.Errorf("%s: %s, want %s", spec, gotT, wantT)
		}
	}
	if p, err := parseReady("console:ready$"); err != nil || p.(cluster.ConsoleProfile).Ready.String() != "ready$" {
		t.Errorf("console: %v %v", p, err)
	}
	for _, bad := range []string{"", "tcp", "tcp:0", "tcp:70000", "grpc-health:x", "grpc-health:1:mtls", "console:", "console:(", "http:80"} {
		if _, err := parseReady(bad); err == nil {
			t.Errorf("parseReady(%q) accepted", bad)
		}
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

// TestBadFlags runs the command's main path on bad flags: each is one line
// on stderr and exit status 2, before anything is started.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--nodes", "0"}, {"--nodes", "-3"}, {"--nodes", "65"}, {"--memory", "0"}, {"--memory", "100"}, {"--memory", "65537"},
		{"--cpus", "0"}, {"--cpus", "65"}, {"--disk", "lots"}, {"--disk", "0"},
		{"--timeout", "soon"}, {"--timeout", "-1s"}, {"--ready", "http:80"}, {"--log-level", "loud"}, {"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
		if lines := strings.Count(strings.TrimRight(errb.String(), "\n"), "\n"); lines != 0 || !strings.HasPrefix(errb.String(), "cluster: ") {
			t.Errorf("%v: want one line starting with 'cluster: ', got %q", args, errb.String())
		}
	}
}

// asCommand makes the test binary the cluster command when set (TestMain),
// so that the signal tests run the real main in a process of its own.
const asCommand = "QCLUSTER_LAUNCH_TEST_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(asCommand) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// command is one run of the cluster command: the test binary as main.
type command struct {
	*exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
}

// startCommand starts the cluster command with a one-node cluster without
// a TPM under TCG, booted cold (these tests watch the boot's steps, which a
// restore from a cached template skips), plus args, after checking that
// the host can launch one. The command is killed if the test ends first.
func startCommand(t *testing.T, args ...string) *command {
	t.Helper()
	needs.Short(t, "launches a cluster")
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	for _, s := range []resolve.Spec{resolve.Image(""), resolve.Loader("")} {
		if _, err := resolve.Find(s); err != nil {
			needs.File(t, "out/testos", "run make image: "+err.Error())
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := &command{Cmd: exec.Command(exe, append([]string{"--cold", "--nodes", "1", "--no-tpm", "--accel", "tcg"}, args...)...),
		stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Env = append(os.Environ(), asCommand+"=1", "NO_COLOR=1")
	cmd.Stdout, cmd.Stderr = io.Discard, cmd.stderr
	// Its own process group: a signal for it alone, as a terminal's Ctrl-C
	// reaches the command but not its helpers (which have groups of their own).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(cmd.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-cmd.exited
	})
	return cmd
}

// waitFor polls until stderr contains s; it fails t when the command
// exits first or after within.
func (c *command) waitFor(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for !strings.Contains(c.stderr.String(), s) {
		select {
		case <-c.exited:
			if !strings.Contains(c.stderr.String(), s) {
				t.Fatalf("command exited (%v) before printing %q; stderr:\n%s", c.ProcessState, s, c.stderr)
			}
		case <-deadline:
			t.Fatalf("command did not print %q within %s; stderr:\n%s", s, within, c.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// exitCode waits for the command and returns its exit status.
func (c *command) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(3 * time.Minute):
		t.Fatalf("command still running; stderr:\n%s", c.stderr)
	}
	return c.ProcessState.ExitCode()
}

// TestInterruptStatus signals the command during its first step: it tears
// down, removes the state directory and exits 128 + the signal's number.
func TestInterruptStatus(t *testing.T) {
	for sig, want := range map[syscall.Signal]int{syscall.SIGINT: 130, syscall.SIGTERM: 143} {
		t.Run(sig.String(), func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			cmd := startCommand(t, "--state-dir", state)
			cmd.waitFor(t, "• Checking host", time.Minute)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := cmd.exitCode(t); code != want {
				t.Errorf("exit status %d after %s, want %d; stderr:\n%s", code, sig, want, cmd.stderr)
			}
			if !strings.Contains(cmd.stderr.String(), "Interrupted") {
				t.Errorf("stderr does not say the launch was interrupted:\n%s", cmd.stderr)
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state directory after %s: %v", sig, err)
			}
		})
	}
}

// TestSecondInterruptKills stops the command's helpers (SIGSTOP) once its
// node boots, so that the teardown the first SIGINT starts waits on them,
// and sends a second SIGINT: the command exits at once, with 130, and the
// stopped helpers die with it.
func TestSecondInterruptKills(t *testing.T) {
	cmd := startCommand(t, "--state-dir", filepath.Join(t.TempDir(), "state"))
	cmd.waitFor(t, "✓ Booting nodes", 3*time.Minute)
	helpers := children(cmd.Process.Pid)
	if len(helpers) == 0 {
		t.Fatalf("no helper processes while the node boots")
	}
	for _, pid := range helpers {
		// The socket directory stays behind a kill; remove it afterwards.
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		for _, dir := range regexp.MustCompile(`/tmp/qc-[^/\x00]+`).FindAllString(string(cmdline), -1) {
			t.Cleanup(func() { os.RemoveAll(dir) })
		}
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	cmd.waitFor(t, "again to kill at once", time.Minute)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := cmd.exitCode(t); code != 130 {
		t.Errorf("exit status %d after a second SIGINT, want 130; stderr:\n%s", code, cmd.stderr)
	}
	if !strings.Contains(cmd.stderr.String(), "Killed") {
		t.Errorf("stderr does not say the command was killed:\n%s", cmd.stderr)
	}
	deadline := time.Now().Add(time.Minute)
	for _, pid := range helpers {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("helper %d outlived the command", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestCloseErrorReported makes teardown fail (an immutable file in the
// state directory) after writing --json failed: both errors are reported,
// one line each, and the exit status is 1.
func TestCloseErrorReported(t *testing.T) {
	needs.Root(t)
	needs.Tool(t, "chattr", "e2fsprogs")
	state := filepath.Join(t.TempDir(), "state")
	cmd := startCommand(t, "--state-dir", state, "--json", filepath.Join(t.TempDir(), "missing", "summary.json"))
	cmd.waitFor(t, "• Booting nodes", 3*time.Minute)
	pin := filepath.Join(state, "pinned")
	if err := os.WriteFile(pin, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chattr", "+i", pin).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", pin).Run() })
	if code := cmd.exitCode(t); code != 1 {
		t.Errorf("exit status %d, want 1; stderr:\n%s", code, cmd.stderr)
	}
	for _, want := range []string{"ERROR: write ", "ERROR: teardown: remove state directory"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `.*\S$`).MatchString(cmd.stderr.String()) {
			t.Errorf("no line %q...; stderr:\n%s", want, cmd.stderr)
		}
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			pids = append(pids, p)
		}
	}
	return pids
}

// alive reports whether pid runs (a zombie has ended).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// syncBuffer is a bytes.Buffer for one writer goroutine and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWarmFlags: --snapshot launches cold, --restore leaves what the
// snapshot decides unset unless typed, and the two do not go together.
func TestWarmFlags(t *testing.T) {
	c, err := parseFlags([]string{"--snapshot", "/tmp/s", "--nodes", "2"}, io.Discard)
	if err != nil || !c.opts.Cold || c.snapshotDir != "/tmp/s" || c.opts.Nodes != 2 {
		t.Errorf("--snapshot: %+v, %v", c, err)
	}
	c, err = parseFlags([]string{"--restore", "/tmp/s"}, io.Discard)
	if err != nil || c.opts.Snapshot != "/tmp/s" || c.opts.Nodes != 0 || c.opts.Node.MemoryMiB != 0 || c.opts.Node.DiskSize != 0 {
		t.Errorf("--restore: %+v, %v", c.opts, err)
	}
	c, err = parseFlags([]string{"--restore", "/tmp/s", "--memory", "1024"}, io.Discard)
	if err != nil || c.opts.Node.MemoryMiB != 1024 {
		t.Errorf("--restore --memory: %+v, %v", c.opts, err)
	}
	if _, err := parseFlags([]string{"--restore", "/a", "--snapshot", "/b"}, io.Discard); err == nil || !strings.Contains(err.Error(), "choose one") {
		t.Errorf("--restore with --snapshot: %v", err)
	}
	for _, bad := range []string{"0", "-1GiB", "lots"} {
		if _, err := parseFlags([]string{"--cache-max", bad}, io.Discard); err == nil {
			t.Errorf("--cache-max %q accepted", bad)
		}
	}
}

// TestRestoreMissing: restoring a snapshot that is not there is a one-line
// error and exit 1, with nothing left in the state directory's place.
func TestRestoreMissing(t *testing.T) {
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	var stderr bytes.Buffer
	code := run([]string{"--restore", filepath.Join(dir, "nope"), "--state-dir", state, "--exit-when-ready"}, io.Discard, &stderr)
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	var errLines []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(l, "ERROR:") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], "does not exist") {
		t.Errorf("want one ERROR line saying the snapshot does not exist; stderr:\n%s", stderr.String())
	}
	if _, err := os.Stat(state); err == nil {
		t.Errorf("state directory %s was made", state)
	}
}
