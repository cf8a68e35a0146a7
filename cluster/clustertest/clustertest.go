// Package clustertest launches clusters for go test: Launch ties the
// cluster's life to the test (t.Cleanup), logs progress through t.Logf, and
// when the test fails attaches every node's console tail and the paths of
// its logs and QEMU command line to the test output.
//
// Under Bazel, state goes under $TEST_TMPDIR and logs to
// $TEST_UNDECLARED_OUTPUTS_DIR/<name>; elsewhere logs go to a directory that
// is kept only when the test fails. (cluster itself reads no environment.)
//
// Clusters are restored from templates (cluster/warm) unless Options.Cold:
// the first launch for a set of options boots and snapshots a template,
// later ones restore it in about a second. Each restore is a cluster of its
// own, but a copy of the same template: same keys, same TPM identities.
package clustertest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/warm"
	"github.com/qcluster/qcluster/nanoswitch/switchmain"
	"github.com/qcluster/qcluster/resolve"
)

// Main is a TestMain for packages that launch clusters: the test binary
// also serves as its clusters' switch (nanoswitch/switchmain), so that go
// test needs no nanoswitch program. TryLaunch then passes it as
// Options.SwitchCommand unless the options name a switch.
func Main(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == switchmain.Arg {
		os.Exit(switchmain.Main(os.Args[2:]))
	}
	selfSwitch = true
	os.Exit(m.Run())
}

// selfSwitch is set by Main: the test binary can serve as the switch.
var selfSwitch bool

// Launch launches a cluster for t and fails the test if it does not come up.
// The cluster is closed when the test ends.
func Launch(t testing.TB, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	c, err := TryLaunch(t, opts)
	if err != nil {
		t.Fatalf("launch cluster: %v", err)
	}
	return c
}

// TryLaunch is Launch for tests that expect the launch to fail: it returns
// the error instead of failing the test.
func TryLaunch(t testing.TB, opts cluster.Options) (*cluster.Cluster, error) {
	t.Helper()
	if selfSwitch && len(opts.SwitchCommand) == 0 && opts.Nanoswitch == "" {
		var err error
		if opts.SwitchCommand, err = switchmain.Command(); err != nil {
			return nil, err
		}
	}
	if opts.TempDir == "" {
		opts.TempDir = os.Getenv("TEST_TMPDIR")
	}
	if opts.LogDir == "" {
		if d := os.Getenv("TEST_UNDECLARED_OUTPUTS_DIR"); d != "" && opts.Name != "" {
			opts.LogDir = filepath.Join(d, opts.Name)
		} else {
			opts.LogDir = KeepLogsOnFailure(t)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	user := opts.Progress
	opts.Progress = func(e cluster.Event) {
		switch e.Kind {
		case cluster.StepDone:
			if e.Err != nil {
				t.Logf("✗ %s (%s): %v", e.Step, e.Elapsed.Round(time.Millisecond), e.Err)
			} else {
				t.Logf("✓ %s (%s)", e.Step, e.Elapsed.Round(time.Millisecond))
			}
		case cluster.NodeReady:
			t.Logf("  %s ready after %s", e.Node, e.Elapsed.Round(time.Millisecond))
		}
		if user != nil {
			user(e)
		}
	}
	ctx := context.Background()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
			defer cancel()
		}
	}
	c, res, err := launch(ctx, opts)
	if err != nil {
		return nil, err
	}
	switch {
	case res.Made:
		t.Logf("cluster %s restored from template %s, made first in %s", c.Name, res.Template, res.MakeTime.Round(time.Millisecond))
	case res.Template != "":
		t.Logf("cluster %s restored from template %s", c.Name, res.Template)
	}
	t.Cleanup(func() {
		if t.Failed() {
			Report(t, c)
		}
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
		t.Logf("cluster %s torn down in %s", c.Name, time.Since(start).Round(time.Millisecond))
	})
	return c, nil
}

// launch restores opts' cluster from a template where it can: the one
// named by $QCLUSTER_TEMPLATE (Bazel builds it, see resolve.Template) when
// it was made for these options, else one in the template cache, made on
// first use: $QCLUSTER_CACHE_DIR, else $XDG_CACHE_HOME/qcluster/warm (under
// Bazel, in $TEST_TMPDIR). opts.Cold boots instead.
func launch(ctx context.Context, opts cluster.Options) (*cluster.Cluster, warm.Result, error) {
	if !opts.Cold && opts.Snapshot == "" {
		if tmpl, err := resolve.Find(resolve.Template("")); err == nil {
			if m, err := cluster.ReadManifest(tmpl); err == nil {
				if key, err := cluster.TemplateKey(ctx, opts); err == nil && key == m.TemplateKey() {
					opts.Snapshot = tmpl
				}
			}
		}
	}
	dir := os.Getenv("QCLUSTER_CACHE_DIR")
	if dir == "" {
		if d := os.Getenv("TEST_TMPDIR"); d != "" {
			dir = filepath.Join(d, "qcluster-warm")
		} else if d, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(d, "qcluster", "warm")
		} else {
			opts.Cold = true
		}
	}
	cache := &warm.Cache{Dir: dir, Logger: opts.Logger}
	return cache.Launch(ctx, opts)
}

// Report logs every node's state, log paths and console tail.
func Report(t testing.TB, c *cluster.Cluster) {
	t.Helper()
	for _, n := range c.Nodes {
		t.Logf("%s (%s): %s; serial log %s; command line %s", n.Name, n.Address, n.State(), n.SerialLog, n.CommandLineFile)
		for _, l := range n.ConsoleTail(40) {
			t.Logf("  %s | %s", n.Name, l)
		}
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// KeepLogsOnFailure returns a directory for Options.LogDir that is removed
// when the test passes and kept (and named in the test log) when it fails.
// Under Bazel it returns a fresh directory in $TEST_UNDECLARED_OUTPUTS_DIR,
// which Bazel keeps.
func KeepLogsOnFailure(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("TEST_UNDECLARED_OUTPUTS_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "qcluster-")
		if err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", "qcluster-logs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("node logs kept in %s", dir)
		}
	})
	return dir
}
