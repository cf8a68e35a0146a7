package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/clustertest"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/nanoswitch/switchmain"
	"github.com/qcluster/qcluster/testos/profile"
)

// TestCloseRacesLifecycle closes a cluster while Reboot and Stop calls on its
// node are in flight or waiting for the node: every call must end with nil
// or ErrClosed, and no QEMU of the cluster may outlive Close.
func TestCloseRacesLifecycle(t *testing.T) {
	needs.Short(t, "boots a VM under TCG")
	needsHost(t)
	switchCommand, err := switchmain.Command()
	if err != nil {
		t.Fatal(err)
	}
	c := clustertest.Launch(t, cluster.Options{
		Nodes:         1,
		Node:          cluster.NodeOptions{NoTPM: true},
		Accel:         "tcg",
		Profile:       &profile.Profile{},
		Timeout:       5 * time.Minute,
		SwitchCommand: switchCommand,
	})
	first := c.Nodes[0].VM()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const callers = 8
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			if i%4 == 3 {
				errs[i] = c.Stop(ctx, 0)
			} else {
				errs[i] = c.Reboot(ctx, 0)
			}
		})
	}
	// Close once a Reboot has started a new QEMU and waits for it.
	for vm := c.Nodes[0].VM(); vm == first || vm == nil; vm = c.Nodes[0].VM() {
		if ctx.Err() != nil {
			t.Fatal("no reboot started a new QEMU")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, cluster.ErrClosed) {
			t.Errorf("call %d racing Close: %v, want nil or ErrClosed", i, err)
		}
	}
	if err := c.Reboot(ctx, 0); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("Reboot after Close: %v, want ErrClosed", err)
	}
	if pids := processesMentioning(t, c.StateDir); len(pids) > 0 {
		t.Errorf("processes of the closed cluster still run: %v", pids)
	}
}

// processesMentioning returns the pids whose command line mentions s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, filepath.Base(filepath.Dir(d)))
		}
	}
	return pids
}
