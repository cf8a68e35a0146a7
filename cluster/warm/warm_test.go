package warm_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/warm"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/testos/profile"
)

func options() cluster.Options {
	nanoswitch, _ := filepath.Abs("../../out/bin/nanoswitch")
	return cluster.Options{
		Nodes:      1,
		Node:       cluster.NodeOptions{NoTPM: true},
		Accel:      "tcg",
		Profile:    &profile.Profile{HealthOnly: true},
		Timeout:    5 * time.Minute,
		Nanoswitch: nanoswitch,
	}
}

// TestCache: two launches that want the same missing template at once: one
// makes it, the other waits for it, both restore it; a third restores it
// too. A cache too small for two templates keeps the one used last.
func TestCache(t *testing.T) {
	needs.Short(t, "boots a VM under TCG")
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	dir := t.TempDir()
	cache := &warm.Cache{Dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	results := make([]warm.Result, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			c, res, err := cache.Launch(ctx, options())
			if err != nil {
				t.Errorf("launch %d: %v", i, err)
				return
			}
			defer c.Close()
			results[i] = res
			if c.RestoredFrom == "" || c.Nodes[0].State() != cluster.StateReady {
				t.Errorf("launch %d: restored from %q, node %s", i, c.RestoredFrom, c.Nodes[0].State())
			}
		})
	}
	wg.Wait()
	if results[0].Made == results[1].Made || results[0].Template != results[1].Template || results[0].Template == "" {
		t.Fatalf("want exactly one launch to make the one template: %+v", results)
	}
	key, err := cluster.TemplateKey(ctx, options())
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Template != filepath.Join(dir, key) {
		t.Errorf("template %s, want it named by its key %s", results[0].Template, key)
	}

	c, res, err := cache.Launch(ctx, options())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if res.Made || res.Template != results[0].Template {
		t.Errorf("third launch: %+v", res)
	}

	// Cold leaves the cache alone.
	cold := options()
	cold.Cold = true
	c, res, err = cache.Launch(ctx, cold)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if res.Template != "" || c.RestoredFrom != "" {
		t.Errorf("cold launch: %+v, restored from %q", res, c.RestoredFrom)
	}

	// Another template in a cache that holds one: the older one goes.
	small := &warm.Cache{Dir: dir, MaxBytes: 1}
	other := options()
	other.Node.MemoryMiB = 256
	c, res, err = small.Launch(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !res.Made {
		t.Errorf("other options: %+v", res)
	}
	if _, err := os.Stat(results[0].Template); err == nil {
		t.Errorf("the least recently used template %s was kept in a full cache", results[0].Template)
	}
	if _, err := os.Stat(res.Template); err != nil {
		t.Errorf("the template just made was evicted: %v", err)
	}
}
