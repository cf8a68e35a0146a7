package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/clustertest"
	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/internal/testerr"
	"github.com/qcluster/qcluster/testos/api"
	"github.com/qcluster/qcluster/testos/profile"
)

// TestWarm shows that a cluster restored from a snapshot is the cluster that
// was snapshotted: same TPMs (EK certificates, PCR values), same DATA, the
// same membership, its clock on time; that restores of one snapshot are
// independent of each other and leave the snapshot as it was; that a
// generic profile restores too; and that bad snapshots are refused with one
// line, starting nothing.
func TestWarm(t *testing.T) {
	needsVMs(t)
	snap := filepath.Join(t.TempDir(), "snap")

	// The template: booted, marked, snapshotted (and closed by Snapshot).
	opts := options(3, true)
	opts.Cold = true
	tmpl := clustertest.Launch(t, opts)
	ctx := rpcContext(t)
	before := make([]*api.StatusResponse, len(tmpl.Nodes))
	for i, n := range tmpl.Nodes {
		conn, err := tmpl.GRPC(i, profile.DefaultPort)
		if err != nil {
			t.Fatal(err)
		}
		content := []byte("written before the snapshot by " + n.Name)
		if _, err := api.NewNodeServiceClient(conn).WriteDataFile(ctx, &api.WriteDataFileRequest{Path: "e2e/warm.txt", Content: content}); err != nil {
			t.Fatal(err)
		}
		if before[i], err = api.NewNodeServiceClient(conn).Status(ctx, &api.StatusRequest{TpmLive: true}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	info, err := tmpl.Snapshot(context.Background(), snap, cluster.SnapshotOptions{Close: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of 3 nodes in %s (paused %s): %d MiB on disk, %d KiB of device state",
		time.Since(start).Round(time.Millisecond), info.Paused.Round(time.Millisecond), info.Bytes>>20, info.StateBytes>>10)
	hashes := hashTree(t, snap)

	restore := func(t *testing.T) *cluster.Cluster {
		t.Helper()
		start := time.Now()
		c := clustertest.Launch(t, cluster.Options{Snapshot: snap, Profile: &profile.Profile{}, Timeout: launchTimeout})
		t.Logf("restored %s in %s", c.Name, time.Since(start).Round(time.Millisecond))
		if c.RestoredFrom != snap {
			t.Errorf("RestoredFrom = %q, want %q", c.RestoredFrom, snap)
		}
		return c
	}

	t.Run("Same", func(t *testing.T) {
		c := restore(t)
		ctx := rpcContext(t)
		m, err := members(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range c.Nodes {
			if !m[n.Name].GetHealthy() {
				t.Errorf("the leader lists %s as %v", n.Name, m[n.Name])
			}
			conn, err := c.GRPC(i, profile.DefaultPort)
			if err != nil {
				t.Fatal(err)
			}
			cl := api.NewNodeServiceClient(conn)
			hostBefore := time.Now()
			st, err := cl.Status(ctx, &api.StatusRequest{TpmLive: true})
			hostAfter := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			b := before[i]
			if st.GetNodeId() != b.GetNodeId() || st.GetBootCount() != b.GetBootCount() {
				t.Errorf("%s: node id %s boot %d, template's %s boot %d", n.Name, st.GetNodeId(), st.GetBootCount(), b.GetNodeId(), b.GetBootCount())
			}
			// Read from the TPM now: the restored swtpm holds the template's state.
			if !bytes.Equal(st.GetTpm().GetEkCertificateDer(), b.GetTpm().GetEkCertificateDer()) || len(b.GetTpm().GetEkCertificateDer()) == 0 {
				t.Errorf("%s: EK certificate differs from the template's", n.Name)
			}
			if !bytes.Equal(st.GetTpm().GetEkCertificateDer(), n.EKCertificate) {
				t.Errorf("%s: Node.EKCertificate is not the one in the TPM", n.Name)
			}
			if _, err := c.TPMCA().VerifyEK(st.GetTpm().GetEkCertificateDer()); err != nil {
				t.Errorf("%s: %v", n.Name, err)
			}
			if got, want := pcrs(st), pcrs(b); got != want || want == "" {
				t.Errorf("%s: PCRs %s, template's %s", n.Name, got, want)
			}
			r, err := cl.ReadDataFile(ctx, &api.ReadDataFileRequest{Path: "e2e/warm.txt"})
			if err != nil || string(r.GetContent()) != "written before the snapshot by "+n.Name {
				t.Errorf("%s: DATA file %q, %v", n.Name, r.GetContent(), err)
			}
			// The profile stepped the clock: within a second of the host's.
			guest := time.Unix(0, st.GetUnixNanos())
			if guest.Before(hostBefore.Add(-time.Second)) || guest.After(hostAfter.Add(time.Second)) {
				t.Errorf("%s: clock %s, host %s…%s", n.Name, guest.Format(time.RFC3339Nano), hostBefore.Format(time.RFC3339Nano), hostAfter.Format(time.RFC3339Nano))
			}
			// A restore's timings: state loaded, then resumed, then ready.
			if tm := n.Timings(); tm.StateLoaded <= 0 || tm.Resumed < tm.StateLoaded || tm.Ready < tm.Resumed {
				t.Errorf("%s: restore timings out of order: %+v", n.Name, tm)
			}
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		cs := make([]*cluster.Cluster, 2)
		for i := range cs {
			wg.Go(func() { cs[i] = restore(t) })
		}
		wg.Wait()
		a, b := cs[0], cs[1]
		if a == nil || b == nil {
			t.FailNow()
		}
		if a.StateDir == b.StateDir || a.SOCKS5.Address == b.SOCKS5.Address {
			t.Errorf("two restores share a state dir or switch: %s %s, %s %s", a.StateDir, b.StateDir, a.SOCKS5.Address, b.SOCKS5.Address)
		}
		ctx := rpcContext(t)
		conn, err := a.GRPC(0, profile.DefaultPort)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.NewNodeServiceClient(conn).WriteDataFile(ctx, &api.WriteDataFileRequest{Path: "e2e/only-a.txt", Content: []byte("a")}); err != nil {
			t.Fatal(err)
		}
		conn, err = b.GRPC(0, profile.DefaultPort)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.NewNodeServiceClient(conn).ReadDataFile(ctx, &api.ReadDataFileRequest{Path: "e2e/only-a.txt"}); err == nil {
			t.Error("a file written on one restore is on the other's disk")
		}
		// A fault in one restore leaves the other alone.
		if err := a.Partition(ctx, 0, 2); err != nil {
			t.Fatal(err)
		}
		waitHealth(t, a, "node2", false, healthWithin)
		if m, err := members(ctx, b); err != nil || !m["node2"].GetHealthy() {
			t.Errorf("the other restore's leader lists node2 as %v (%v)", m["node2"], err)
		}
	})

	t.Run("GenericProfile", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "tcp")
		o := options(1, false)
		o.Cold = true
		o.Profile = cluster.TCPProfile{Port: profile.DefaultPort}
		c := clustertest.Launch(t, o)
		if _, err := c.Snapshot(context.Background(), dir, cluster.SnapshotOptions{Close: true}); err != nil {
			t.Fatal(err)
		}
		r := clustertest.Launch(t, cluster.Options{Snapshot: dir, Profile: cluster.TCPProfile{Port: profile.DefaultPort}, Timeout: launchTimeout})
		if s := r.Nodes[0].State(); s != cluster.StateReady {
			t.Errorf("node0 is %s", s)
		}
		// A profile other than the snapshot's is refused.
		_, err := clustertest.TryLaunch(t, cluster.Options{Snapshot: dir, Profile: cluster.TCPProfile{Port: 22}})
		testerr.Want(t, err, nil, "made with profile", "given")
	})

	t.Run("BadSnapshots", func(t *testing.T) {
		badSnapshots(t, snap)
	})

	if got := hashTree(t, snap); !equalMaps(got, hashes) {
		t.Errorf("the snapshot changed under its restores:\nbefore %v\nafter  %v", hashes, got)
	}
}

// badSnapshots: each kind of bad snapshot gets a one-line error naming what
// is wrong, starts no process and leaves no state directory.
func badSnapshots(t *testing.T, good string) {
	m, err := cluster.ReadManifest(good)
	if err != nil {
		t.Fatal(err)
	}
	// like makes a snapshot directory that links to good's node files and
	// holds a manifest edited by edit (nil: no manifest); then breaks it.
	like := func(t *testing.T, edit func(*cluster.Manifest) []byte, breakIt func(dir string)) string {
		dir := filepath.Join(t.TempDir(), "snap")
		os.Mkdir(dir, 0o700)
		for _, n := range m.Nodes {
			os.Mkdir(filepath.Join(dir, n.Name), 0o700)
			for f := range n.Files {
				os.Symlink(filepath.Join(good, n.Name, f), filepath.Join(dir, n.Name, f))
			}
		}
		if edit != nil {
			mm := *m
			mm.Key.Machines = append([]string(nil), m.Key.Machines...)
			if err := os.WriteFile(filepath.Join(dir, cluster.ManifestName), edit(&mm), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if breakIt != nil {
			breakIt(dir)
		}
		return dir
	}
	asJSON := func(mm *cluster.Manifest) []byte { b, _ := json.Marshal(mm); return b }
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
		want []string
	}{
		{"Missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nothing") }, []string{"does not exist"}},
		{"Unfinished", func(t *testing.T) string { return like(t, nil, nil) }, []string{"no manifest.json", "still being written"}},
		{"Unparsable", func(t *testing.T) string {
			return like(t, func(*cluster.Manifest) []byte { return []byte(`{"format": 1, "nodes": [`) }, nil)
		}, []string{"does not parse"}},
		{"OtherQEMU", func(t *testing.T) string {
			return like(t, func(mm *cluster.Manifest) []byte { mm.Key.QEMU = "0.0.1"; return asJSON(mm) }, nil)
		}, []string{"snapshot taken with QEMU 0.0.1 under " + m.Key.Accel, "this host runs QEMU " + m.Key.QEMU}},
		{"OtherAccel", func(t *testing.T) string {
			return like(t, func(mm *cluster.Manifest) []byte { mm.Key.Accel = "kvm"; return asJSON(mm) }, nil)
		}, []string{"under kvm", "under " + m.Key.Accel}},
		{"TruncatedState", func(t *testing.T) string {
			return like(t, asJSON, func(dir string) {
				p := filepath.Join(dir, "node1", "state")
				b, _ := os.ReadFile(filepath.Join(good, "node1", "state"))
				os.Remove(p)
				os.WriteFile(p, b[:len(b)/2], 0o600)
			})
		}, []string{"node1", "state", "truncated"}},
		{"MissingRAM", func(t *testing.T) string {
			return like(t, asJSON, func(dir string) { os.Remove(filepath.Join(dir, "node2", "ram")) })
		}, []string{"node2", "ram"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			state := filepath.Join(t.TempDir(), "state")
			before := len(matching(mentioning(state)))
			_, err := clustertest.TryLaunch(t, cluster.Options{Snapshot: dir, StateDir: state, Profile: &profile.Profile{}})
			testerr.Want(t, err, nil, tc.want...)
			if !errors.Is(err, cluster.ErrBadSnapshot) && tc.name != "Missing" {
				t.Errorf("error %q does not wrap ErrBadSnapshot", err)
			}
			if _, err := os.Stat(state); err == nil {
				t.Errorf("state directory %s left behind", state)
			}
			if n := len(matching(mentioning(state))); n != before {
				t.Errorf("%d processes mention the state directory", n)
			}
		})
	}
}

// pcrs renders a node's PCR values for comparison.
func pcrs(st *api.StatusResponse) string {
	var b strings.Builder
	for _, p := range st.GetTpm().GetPcrs() {
		fmt.Fprintf(&b, "%d:%x ", p.GetIndex(), p.GetSha256())
	}
	return b.String()
}

// hashTree returns a SHA-256 of every file under dir, by relative path
// (hashFile).
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		sum, err := hashFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sum
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hashFile hashes a file's size and its data extents with their offsets.
// Holes read as zeros, so this covers the content without reading the
// gigabytes of holes in a snapshot's disks (30 s of the test when it read
// them); a write that fills a hole changes it too.
func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "size %d\n", fi.Size())
	err = blockdev.DataExtents(f, fi.Size(), func(off, n int64) error {
		fmt.Fprintf(h, "data %d %d\n", off, n)
		_, err := io.Copy(h, io.NewSectionReader(f, off, n))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestWarmCommand: `cluster --snapshot DIR --exit-when-ready` and then
// `cluster --restore DIR --exit-when-ready --json` work as the README shows,
// leaving nothing behind, and the summary says what was restored.
func TestWarmCommand(t *testing.T) {
	needsVMs(t)
	fix := fixtureDir(t)
	snap := filepath.Join(fix, "snap")
	a, b := filepath.Join(fix, "snapshot.json"), filepath.Join(fix, "restore.json")
	cmd := newCommand(t, "--accel", "tcg", "--nodes", "1", "--no-tpm", "--timeout", launchTimeout.String(),
		"--snapshot", snap, "--exit-when-ready", "--json", a)
	if err := cmd.Run(); err != nil {
		t.Fatalf("--snapshot: %v; stderr:\n%s", err, cmd.Stderr)
	}
	if left := cmd.leftovers(); len(left) > 0 {
		t.Errorf("--snapshot left behind: %q", left)
	}
	var made struct {
		Snapshot struct {
			Dir        string  `json:"dir"`
			Seconds    float64 `json:"seconds"`
			Bytes      int64   `json:"bytes"`
			StateBytes int64   `json:"state_bytes"`
		} `json:"snapshot"`
	}
	readJSON(t, a, &made)
	if made.Snapshot.Dir != snap || made.Snapshot.Bytes <= 0 || made.Snapshot.StateBytes <= 0 {
		t.Errorf("--snapshot summary: %+v", made)
	}
	m, err := cluster.ReadManifest(snap)
	if err != nil {
		t.Fatal(err)
	}
	// Bazel's //e2e:template is made by this command: clustertest must take
	// it for the options a test asks for, or the build output is wasted.
	key, err := cluster.TemplateKey(context.Background(), options(1, false))
	if err != nil {
		t.Fatal(err)
	}
	if m.TemplateKey() != key {
		t.Errorf("the command's snapshot has template key %s; clustertest's options for the same cluster have %s", m.TemplateKey(), key)
	}

	cmd = newCommand(t, "--restore", snap, "--exit-when-ready", "--json", b)
	if err := cmd.Run(); err != nil {
		t.Fatalf("--restore: %v; stderr:\n%s", err, cmd.Stderr)
	}
	if left := cmd.leftovers(); len(left) > 0 {
		t.Errorf("--restore left behind: %q", left)
	}
	var restored struct {
		summary
		Restored     bool   `json:"restored"`
		RestoredFrom string `json:"restored_from"`
		Nodes        []struct {
			State  string  `json:"state"`
			Loaded float64 `json:"state_loaded_seconds"`
			Ready  float64 `json:"ready_seconds"`
		} `json:"nodes"`
	}
	readJSON(t, b, &restored)
	if !restored.Restored || restored.RestoredFrom != snap || len(restored.Nodes) != 1 ||
		restored.Nodes[0].State != "ready" || restored.Nodes[0].Loaded <= 0 || restored.Nodes[0].Ready < restored.Nodes[0].Loaded {
		t.Errorf("--restore summary: %+v", restored)
	}
	t.Logf("snapshot %.3fs, %d MiB; restore to ready %.3fs", made.Snapshot.Seconds, made.Snapshot.Bytes>>20, restored.LaunchSecs)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
