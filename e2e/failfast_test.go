package e2e

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/clustertest"
	"github.com/qcluster/qcluster/resolve"
)

// TestFailFast launches 1-node clusters that cannot come up and checks that
// each launch fails soon after the failure (not at the timeout), with an
// error that names the node, says what happened and carries its console
// tail, and that nothing is left running.
func TestFailFast(t *testing.T) {
	needsVMs(t)
	for _, tc := range []struct {
		name string
		// setup adjusts the options; it may set a Progress hook.
		setup func(t *testing.T, o *cluster.Options, k *killer)
		// want: one of these in the error or console tail.
		want []string
		// inLog must be in the serial log file, which is complete once
		// QEMU has exited (the error's line may be a prefix of its line).
		inLog string
	}{
		{
			name: "KernelPanic",
			setup: func(t *testing.T, o *cluster.Options, _ *killer) {
				o.Image = panicImage(t)
			},
			want:  []string{"Kernel panic - not syncing"},
			inLog: "Kernel panic - not syncing: Attempted to kill init",
		},
		{
			name: "Verity",
			setup: func(t *testing.T, o *cluster.Options, _ *killer) {
				o.Image = verityImage(t)
			},
			want: []string{"verity"},
		},
		{
			// The Microsoft-enrolled variables turn Secure Boot on; OVMF
			// refuses the unsigned loader and drops into its shell.
			name: "SecureBootRefusal",
			setup: func(t *testing.T, o *cluster.Options, _ *killer) {
				// e2e ships them under Bazel (E2E_DATA); else make fetch's
				// or the host's.
				code, err := resolve.Find(resolve.OVMFCodeSecureBoot(""))
				if err != nil {
					t.Skip(err)
				}
				vars, err := resolve.Find(resolve.OVMFVarsMS(""))
				if err != nil {
					t.Skip(err)
				}
				o.FirmwareCode, o.FirmwareVars = code, vars
			},
			want: []string{"Access Denied", "Shell> "},
		},
		{
			name: "QEMUDies",
			setup: func(t *testing.T, o *cluster.Options, k *killer) {
				o.Progress = killWhenBooting(t, o, "qemu-system-x86", k)
			},
			want: []string{"QEMU exited"},
		},
		{
			name: "SwtpmDies",
			setup: func(t *testing.T, o *cluster.Options, k *killer) {
				o.Node.NoTPM = false
				o.Progress = killWhenBooting(t, o, "swtpm", k)
			},
			want: []string{"swtpm exited", "QEMU exited"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // one-node boots: one host core each
			o := options(1, false)
			o.Cold = true // a boot to break, not a restore
			o.StateDir = filepath.Join(t.TempDir(), "state")
			o.LogDir = t.TempDir()
			var k killer
			tc.setup(t, &o, &k)
			start := time.Now()
			c, err := clustertest.TryLaunch(t, o)
			returned := time.Now()
			if k.done != nil {
				close(k.stop)
				<-k.done
			}
			if err == nil {
				t.Fatalf("cluster %s came up", c.Name)
			}
			took := returned.Sub(start)
			t.Logf("error after %s: %v", took.Round(time.Millisecond), err)
			var ne *cluster.NodeError
			if !errors.As(err, &ne) || ne.Node != "node0" {
				t.Fatalf("error is not a NodeError for node0: %#v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "node0") || strings.Contains(msg, "\n") {
				t.Errorf("error does not name node0 on one line: %q", msg)
			}
			if len(ne.ConsoleTail) == 0 {
				t.Error("no console tail")
			}
			all := err.Error() + "\n" + strings.Join(ne.ConsoleTail, "\n")
			found := false
			for _, w := range tc.want {
				found = found || strings.Contains(all, w)
			}
			if !found {
				t.Errorf("neither the error nor the console tail mentions any of %q:\n%s", tc.want, all)
			}
			for _, l := range ne.ConsoleTail {
				t.Logf("  | %s", l)
			}
			serial, _ := os.ReadFile(filepath.Join(o.LogDir, "node0", "console.log"))
			if !bytes.Contains(serial, []byte(tc.inLog)) {
				t.Errorf("the serial log does not say %q", tc.inLog)
			}

			// Latency: from the kill, or from the console's last line
			// (the serial log's modification time) to Launch returning.
			from := k.killed
			if from.IsZero() {
				if fi, err := os.Stat(filepath.Join(o.LogDir, "node0", "console.log")); err == nil {
					from = fi.ModTime()
				}
			}
			if !from.IsZero() {
				t.Logf("detected %s after the failure (launch %s)", returned.Sub(from).Round(time.Millisecond), took.Round(time.Millisecond))
			}
			if took > launchTimeout/2 {
				t.Errorf("launch took %s to fail, more than half of its %s timeout", took, launchTimeout)
			}
			if _, err := os.Stat(o.StateDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state directory left after the failed launch: %v", err)
			}
			waitGone(t, "after the failed launch", 2*time.Second, mentioning(o.StateDir))
		})
	}
}

// killer kills a helper process of a launch while its node boots.
type killer struct {
	done   chan struct{} // closed when the killer has finished
	stop   chan struct{} // closed by the test when Launch returned
	killed time.Time     // when it killed; zero if it did not
}

// killWhenBooting returns a Progress hook that, once the "Booting nodes"
// step is done and node0's console shows the firmware starting the loader,
// kills with SIGKILL the process named comm (as in /proc/PID/comm) that this
// test started for the cluster in o.StateDir.
func killWhenBooting(t *testing.T, o *cluster.Options, comm string, k *killer) func(cluster.Event) {
	k.done, k.stop = make(chan struct{}), make(chan struct{})
	state, console := o.StateDir, filepath.Join(o.LogDir, "node0", "console.log")
	return func(e cluster.Event) {
		if e.Kind != cluster.StepDone || e.Step != "Booting nodes" || e.Err != nil {
			return
		}
		go func() {
			defer close(k.done)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				if b, _ := os.ReadFile(console); bytes.Contains(b, []byte("BdsDxe: starting")) {
					break
				}
				select {
				case <-k.stop:
					t.Errorf("the launch ended before node0's firmware started the loader")
					return
				case <-tick.C:
				}
			}
			for _, p := range descendants(os.Getpid()) {
				if p.Comm == comm && strings.Contains(p.Cmdline, state) {
					k.killed = time.Now()
					if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
						t.Errorf("kill %s: %v", p, err)
					}
					t.Logf("killed %s (pid %d)", p.Comm, p.PID)
					return
				}
			}
			t.Errorf("no %s process of %s found to kill", comm, state)
		}()
	}
}
