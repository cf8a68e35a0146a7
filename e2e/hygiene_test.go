package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcessHygiene runs the cluster command and stops it the hard way
// and the polite way: SIGKILL while nodes boot leaves no helper process;
// SIGINT, while booting or once ready, exits 130 and removes every file; and a
// loop of launches all reach ready, each leaving nothing behind.
func TestProcessHygiene(t *testing.T) {
	needsVMs(t)
	t.Run("SIGKILLWhileBooting", func(t *testing.T) {
		cmd := startBooting(t)
		pid := cmd.Process.Pid
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-cmd.waited
		took := waitGone(t, "after SIGKILL of the cluster command", 2*time.Second, inSession(pid))
		t.Logf("every helper gone %s after SIGKILL", took.Round(time.Millisecond))
	})
	t.Run("SIGINTWhileBooting", func(t *testing.T) {
		cmd := startBooting(t)
		took := interrupt(t, cmd)
		if !strings.Contains(cmd.Stderr.String(), "Interrupted") {
			t.Errorf("stderr does not say the launch was interrupted:\n%s", cmd.Stderr)
		}
		t.Logf("SIGINT while booting → exit 130 in %s", took.Round(time.Millisecond))
	})
	t.Run("SIGINTWhenReady", func(t *testing.T) {
		fix := fixtureDir(t)
		summary := filepath.Join(fix, "summary.json")
		cmd := newCommand(t, "--accel", "tcg", "--nodes", "1", "--timeout", launchTimeout.String(), "--json", summary)
		exited := start(t, cmd)
		waitOutput(t, cmd.Stderr, "Press Ctrl-C", exited, launchTimeout)
		s := readSummary(t, summary)
		if len(s.Nodes) != 1 || s.Nodes[0].State != "ready" {
			t.Errorf("summary nodes: %+v", s.Nodes)
		}
		took := interrupt(t, cmd)
		t.Logf("SIGINT when ready → torn down, exit 130 in %s", took.Round(time.Millisecond))
	})
	t.Run("Loop", func(t *testing.T) {
		n := 2
		if *long {
			n = 20
		}
		for i := range n {
			fix := fixtureDir(t)
			summary := filepath.Join(fix, "summary.json")
			cmd := newCommand(t, "--accel", "tcg", "--nodes", "1", "--timeout", launchTimeout.String(), "--exit-when-ready", "--json", summary)
			start := time.Now()
			if err := cmd.Run(); err != nil {
				t.Fatalf("launch %d of %d: %v; stderr:\n%s", i+1, n, err, cmd.Stderr)
			}
			s := readSummary(t, summary)
			if len(s.Nodes) != 1 || s.Nodes[0].State != "ready" {
				t.Errorf("launch %d: summary nodes %+v", i+1, s.Nodes)
			}
			if left := cmd.leftovers(); len(left) > 0 {
				t.Errorf("launch %d left behind: %q", i+1, left)
			}
			t.Logf("launch %d of %d: ready and torn down in %s (ready after %.1fs)", i+1, n, time.Since(start).Round(time.Millisecond), s.LaunchSecs)
		}
	})
}

// startBooting starts a 1-node launch with a TPM and returns once its QEMU,
// swtpm and nanoswitch run (the "Booting nodes" step is done).
func startBooting(t *testing.T) *command {
	t.Helper()
	// Cold: a restore from a template has no boot to interrupt.
	cmd := newCommand(t, "--accel", "tcg", "--nodes", "1", "--cold", "--timeout", launchTimeout.String())
	exited := start(t, cmd)
	waitOutput(t, cmd.Stderr, "✓ Booting nodes", exited, 2*time.Minute)
	have := map[string]bool{}
	for _, p := range matching(inSession(cmd.Process.Pid)) {
		have[role(p)] = true
	}
	for _, comm := range []string{"qemu", "swtpm", "nanoswitch"} {
		if !have[comm] {
			t.Errorf("no %s running while nodes boot (have %v)", comm, have)
		}
	}
	return cmd
}

// start starts cmd and returns a channel closed when it has exited (and
// been waited for). The command is killed if the test ends first.
func start(t *testing.T, cmd *command) <-chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	cmd.waited = exited
	return exited
}

// interrupt sends SIGINT and checks that the command exits 130 and leaves
// nothing behind; it returns the time from the signal to the exit.
func interrupt(t *testing.T, cmd *command) time.Duration {
	t.Helper()
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cmd.waited:
	case <-time.After(time.Minute):
		t.Fatalf("still running a minute after SIGINT; stderr:\n%s", cmd.Stderr)
	}
	took := time.Since(sent)
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit status %d after SIGINT, want 130; stderr:\n%s", code, cmd.Stderr)
	}
	if left := cmd.leftovers(); len(left) > 0 {
		t.Errorf("left behind after SIGINT: %q", left)
	}
	return took
}

// summary is the part of --json's output the tests read.
type summary struct {
	Name       string  `json:"name"`
	StateDir   string  `json:"state_dir"`
	LaunchSecs float64 `json:"launch_seconds"`
	Nodes      []struct {
		Name, Address, State string
	} `json:"nodes"`
}

func readSummary(t *testing.T, path string) summary {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("summary: %v", err)
	}
	var s summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("summary %s: %v", path, err)
	}
	return s
}
