package cluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/nanoswitch/switchmain"
	"github.com/qcluster/qcluster/testos/profile"
)

// needsHost skips the test (or fails it in CI) without what Launch's first
// step looks up.
func needsHost(t *testing.T) {
	t.Helper()
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	needs.File(t, "/usr/share/OVMF/OVMF_CODE_4M.fd", "apt-get install ovmf, or make deps")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	needs.File(t, filepath.Join(root, "out", "testos"), "run make image")
}

// TestLaunchesShareStateDir starts launches at once on one empty state
// directory, again and again. One may win; the others must fail without
// touching the winner's state. Each launch stops itself once its state is
// prepared (before reading the image), the winner keeping its state so that
// it can be checked.
func TestLaunchesShareStateDir(t *testing.T) {
	needsHost(t)
	switchCommand, err := switchmain.Command()
	if err != nil {
		t.Fatal(err)
	}
	const rounds, launches = 20, 4
	for round := range rounds {
		dir := filepath.Join(t.TempDir(), "state")
		if round%2 == 1 {
			if err := os.Mkdir(dir, 0o700); err != nil { // empty, rather than absent
				t.Fatal(err)
			}
		}
		var (
			wg       sync.WaitGroup
			barrier  sync.WaitGroup // every launch reaches its state step together
			mu       sync.Mutex
			winners  []string
			launched = make([]error, launches)
		)
		barrier.Add(launches)
		for i := range launches {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var c0 string
			wg.Go(func() {
				_, launched[i] = cluster.Launch(ctx, cluster.Options{
					Nodes:         1,
					Node:          cluster.NodeOptions{NoTPM: true},
					Accel:         "tcg",
					Profile:       &profile.Profile{},
					StateDir:      dir,
					KeepState:     true,
					Unverified:    true,
					SwitchCommand: switchCommand,
					Progress: func(e cluster.Event) {
						switch {
						case e.Kind == cluster.StepDone && e.Step == "Checking host" && e.Err != nil:
							barrier.Done() // never reaches the next step
						case e.Kind == cluster.StepStarted && e.Step == "Preparing state":
							barrier.Done()
							barrier.Wait()
						case e.Kind == cluster.StepDone && e.Step == "Preparing state" && e.Err == nil:
							// This launch holds the directory: stop it at the
							// next step, keeping its state for the check.
							c0 = filepath.Join(dir, "ca.crt")
							mu.Lock()
							winners = append(winners, c0)
							mu.Unlock()
						case e.Kind == cluster.StepStarted && e.Step == "Reading OS image" && c0 != "":
							cancel()
						}
					},
				})
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d launches prepared state in one directory, want 1 (errors: %v)", round, len(winners), launched)
		}
		for _, err := range launched {
			if err == nil || (!errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "state directory")) {
				t.Fatalf("round %d: launch error %v, want the winner cancelled and the others refused the directory", round, err)
			}
		}
		for _, f := range []string{"ca.crt", "owner.crt", "owner.key", "node0"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("round %d: the winner's state was touched by a losing launch: %v (errors: %v)", round, err, launched)
			}
		}
	}
}
