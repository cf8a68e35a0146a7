package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/nanoswitch/switchmain"
	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/resolve"
	"github.com/qcluster/qcluster/testos/api"
	"github.com/qcluster/qcluster/testos/profile"
)

var long = flag.Bool("e2e.long", false, "run the long variants: 20 launches in a row instead of 2")

// launchTimeout bounds every launch of the suites. Failures must be found
// in a fraction of it.
const launchTimeout = 5 * time.Minute

// binDir holds the built cluster command; removed after the tests.
var binDir string

func TestMain(m *testing.M) {
	// The test binary is the clusters' switch too (options).
	if len(os.Args) > 1 && os.Args[1] == switchmain.Arg {
		os.Exit(switchmain.Main(os.Args[2:]))
	}
	flag.Parse()
	// Returning hands m.Run's code to the test runner (no os.Exit here).
	m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// needsVMs skips tests that boot VMs under -short and when the host lacks
// what booting needs (failing them in CI).
func needsVMs(t testing.TB) {
	t.Helper()
	needs.Short(t, "boots VMs under TCG")
	needsHost(t)
}

// needsHost checks the programs and files a launch looks up.
func needsHost(t testing.TB) {
	t.Helper()
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	needs.Tool(t, "swtpm", "swtpm")
	needs.Tool(t, "swtpm_setup", "swtpm-tools")
	if _, err := qemu.FindOVMF(qemu.FirmwareQuery{}); err != nil {
		needs.File(t, "/usr/share/OVMF/OVMF_CODE_4M.fd", "apt-get install ovmf, or make deps: "+err.Error())
	}
	base(t)
}

// options returns the suites' defaults: the testos profile, TCG, a
// 5-minute launch timeout, and 1 node without a TPM unless a test says
// otherwise.
func options(nodes int, tpm bool) cluster.Options {
	switchCommand, _ := switchmain.Command() // os.Executable: cannot fail on Linux
	return cluster.Options{
		SwitchCommand: switchCommand,
		Nodes:         nodes,
		Node:          cluster.NodeOptions{NoTPM: !tpm},
		Profile:       &profile.Profile{},
		Accel:         "tcg",
		Timeout:       launchTimeout,
	}
}

// rpcTimeout bounds one gRPC call to a node.
const rpcTimeout = 30 * time.Second

func rpcContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}

// status calls NodeService.Status on node i.
func status(t testing.TB, c *cluster.Cluster, i int) *api.StatusResponse {
	t.Helper()
	conn, err := c.GRPC(i, profile.DefaultPort)
	if err != nil {
		t.Fatal(err)
	}
	st, err := api.NewNodeServiceClient(conn).Status(rpcContext(t), &api.StatusRequest{})
	if err != nil {
		t.Fatalf("%s: Status: %v", c.Nodes[i].Name, err)
	}
	return st
}

// members calls Membership.List on the leader (node 0).
func members(ctx context.Context, c *cluster.Cluster) (map[string]*api.Member, error) {
	conn, err := c.GRPC(0, profile.DefaultPort)
	if err != nil {
		return nil, err
	}
	l, err := api.NewMembershipClient(conn).List(ctx, &api.ListRequest{})
	if err != nil {
		return nil, err
	}
	m := map[string]*api.Member{}
	for _, mem := range l.GetMembers() {
		m[mem.GetName()] = mem
	}
	return m, nil
}

// waitHealth polls the leader's membership list until name's health is
// want, and returns how long that took. Every other node in steady must be
// listed healthy at every poll. It fails t at the deadline.
func waitHealth(t testing.TB, c *cluster.Cluster, name string, want bool, within time.Duration, steady ...string) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	reported := map[string]bool{}
	for {
		m, err := members(ctx, c)
		if err == nil {
			for _, s := range steady {
				if !m[s].GetHealthy() && !reported[s] {
					reported[s] = true
					t.Errorf("%s not healthy at the leader while waiting for %s: %v", s, name, m[s])
				}
			}
			if mem, ok := m[name]; ok && mem.GetHealthy() == want {
				return time.Since(start)
			}
			last = fmt.Sprint(m[name])
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not healthy=%v at the leader within %s; last: %s", name, want, within, last)
		case <-tick.C:
		}
	}
}

// buildCommand returns the cluster command: //launch:cluster from the
// runfiles or $QCLUSTER_CLUSTER (Bazel passes its runfile path), else one
// built with go build once per test binary.
var buildCommand = sync.OnceValues(func() (string, error) {
	if p, err := resolve.Find(resolve.Cluster("")); err == nil || errors.Is(err, resolve.ErrGivenMissing) {
		return p, err
	}
	root, err := resolve.RepoRoot()
	if err != nil {
		return "", err
	}
	// Outside /tmp, which the command's sandbox replaces.
	if binDir, err = os.MkdirTemp("/var/tmp", "qcluster-e2e-bin-"); err != nil {
		return "", err
	}
	bin := filepath.Join(binDir, "cluster")
	cmd := exec.Command("go", "build", "-o", bin, "./launch")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./launch: %w: %s", err, out)
	}
	return bin, nil
})

// command is a run of the built cluster command in a sandbox that makes
// leftovers visible: its own session (every helper it starts stays in it,
// so a process left behind is one whose session is the command's PID) and
// a private mount namespace whose /tmp is Tmp, a directory of the test's
// (the command puts its socket directory and, by default, its state there;
// whatever is left in Tmp afterwards was left by this run, even while other
// clusters run on the machine).
type command struct {
	*exec.Cmd
	Tmp            string
	keepTop        string // the repository's top directory under Tmp, if any
	Stdout, Stderr *syncBuffer
	waited         <-chan struct{} // closed once the command exited (start)
}

// newCommand prepares the cluster command with args. Fixture paths given in
// args must lie outside /tmp (see fixtureDir): the command sees Tmp there.
func newCommand(t testing.TB, args ...string) *command {
	t.Helper()
	needs.Root(t)
	needs.Tool(t, "unshare", "util-linux")
	bin, err := buildCommand()
	if err != nil {
		t.Fatal(err)
	}
	c := &command{Tmp: t.TempDir(), Stdout: &syncBuffer{}, Stderr: &syncBuffer{}}
	// The command runs in the test's working directory, inside the
	// repository, where it finds out/; under Bazel, in the runfiles, whose
	// relative runfile paths ($QCLUSTER_OVMF_*) and variables it inherits. A
	// repository under /tmp (a CI clone, say) is bound into the private /tmp
	// at the same path.
	keep := ""
	if root, err := resolve.RepoRoot(); err == nil {
		if rest, ok := strings.CutPrefix(root, "/tmp/"); ok {
			keep = "/" + rest
			c.keepTop = strings.Split(rest, "/")[0]
		}
	}
	// Absolute paths: a case may run the command with a PATH of its own.
	const script = `tmp=$1 keep=$2; shift 2
if [ -n "$keep" ]; then /bin/mkdir -p "$tmp$keep" && /bin/mount --bind "/tmp$keep" "$tmp$keep" || exit 1; fi
/bin/mount --rbind "$tmp" /tmp && exec "$@"`
	argv := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", c.Tmp, keep, bin}, args...)
	c.Cmd = exec.Command("unshare", argv...)
	// State goes to the private /tmp (TEST_TMPDIR would override it).
	c.Env = append(os.Environ(), "TMPDIR=/tmp", "TEST_TMPDIR=", "NO_COLOR=1")
	c.Cmd.Stdout, c.Cmd.Stderr = c.Stdout, c.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	return c
}

// leftovers lists what the run left in its /tmp and the processes left in
// its session.
func (c *command) leftovers() []string {
	var left []string
	entries, _ := os.ReadDir(c.Tmp)
	for _, e := range entries {
		if e.Name() == c.keepTop {
			continue // the repository's mount point (newCommand)
		}
		left = append(left, "/tmp/"+e.Name())
	}
	if c.Process != nil {
		for _, p := range matching(inSession(c.Process.Pid)) {
			left = append(left, p.String())
		}
	}
	return left
}

// fixtureDir returns a directory outside /tmp for files the command must
// see (its /tmp is private); it is removed when t ends.
func fixtureDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/var/tmp", "qcluster-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
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

// waitOutput polls until the buffer contains s, failing t at the deadline
// or when the command exits first.
func waitOutput(t testing.TB, buf *syncBuffer, s string, exited <-chan struct{}, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(buf.String(), s) {
		select {
		case <-exited:
			if strings.Contains(buf.String(), s) {
				return
			}
			t.Fatalf("command exited before printing %q; output:\n%s", s, buf)
		case <-deadline:
			t.Fatalf("command did not print %q within %s; output:\n%s", s, within, buf)
		case <-tick.C:
		}
	}
}
