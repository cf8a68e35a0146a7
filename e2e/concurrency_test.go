package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/clustertest"
	"github.com/qcluster/qcluster/testos/api"
)

// TestConcurrentClusters launches three 1-node clusters at once in this
// process and checks that all become ready and are told apart. They differ
// in how the image reaches the disk: the default image verified once and
// copied (with a TPM), a zstd-compressed copy of it that every node
// decompresses and verifies, and the default image read unverified (the
// raw blobs, reflinked where the file system can).
func TestConcurrentClusters(t *testing.T) {
	needsVMs(t)
	b := base(t)
	zstdImage := writeImage(t, t.TempDir(), b.Info, b.Kernel, b.System, "zstd")
	variants := []struct {
		name   string
		change func(*cluster.Options)
	}{
		{"default", func(o *cluster.Options) { o.Node.NoTPM = false }},
		{"zstd", func(o *cluster.Options) { o.Image = zstdImage }},
		{"unverified", func(o *cluster.Options) { o.Unverified = true }},
	}
	clusters := make([]*cluster.Cluster, len(variants))
	errs := make([]error, len(variants))
	took := make([]time.Duration, len(variants))
	opts := make([]cluster.Options, len(variants))
	for i, v := range variants {
		opts[i] = options(1, false)
		opts[i].LogDir = clustertest.KeepLogsOnFailure(t)
		v.change(&opts[i])
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range variants {
		wg.Go(func() {
			clusters[i], errs[i] = cluster.Launch(context.Background(), opts[i])
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i, c := range clusters {
		if c != nil {
			t.Cleanup(func() {
				if t.Failed() {
					clustertest.Report(t, c)
				}
				if err := c.Close(); err != nil {
					t.Errorf("close %s: %v", c.Name, err)
				}
			})
		}
		if errs[i] != nil {
			t.Errorf("%s: %v", variants[i].name, errs[i])
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("all three ready %s after the first launch began", time.Since(start).Round(time.Millisecond))

	names, socks := map[string]bool{}, map[string]bool{}
	for i, c := range clusters {
		t.Logf("%s: cluster %s ready after %s", variants[i].name, c.Name, took[i].Round(time.Millisecond))
		names[c.Name], socks[c.SOCKS5.Address] = true, true
		st := status(t, c, 0)
		if st.GetClusterName() != c.Name || st.GetNodeName() != "node0" {
			t.Errorf("%s: node0 of %s says it is %s of %s", variants[i].name, c.Name, st.GetNodeName(), st.GetClusterName())
		}
		// The system partition, however it got there, passed dm-verity.
		if st.GetVerity().GetState() != api.Verity_STATE_OK {
			t.Errorf("%s: verity %v", variants[i].name, st.GetVerity())
		}
		if got, want := st.GetTpm().GetPresent(), !opts[i].Node.NoTPM; got != want {
			t.Errorf("%s: TPM present %v, want %v", variants[i].name, got, want)
		}
	}
	if len(names) != len(clusters) || len(socks) != len(clusters) {
		t.Errorf("clusters share names or SOCKS5 addresses: %v %v", names, socks)
	}
}
