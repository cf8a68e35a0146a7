// Package warm keeps a cache of cluster templates, so that launching a
// cluster means restoring a snapshot rather than booting: the first launch
// for a set of options boots the cluster cold, snapshots it into the cache
// and restores from it; every later launch with the same options, image and
// host restores at once.
//
// A template is keyed by everything a restore must match (cluster.
// TemplateKey: QEMU, swtpm, firmware, accelerator, image, loader, machines,
// profile). The cache is bounded in size: after a template is made, the
// least recently used ones are removed until the cache fits. It is safe for
// several processes at once: one makes a missing template while the others
// wait for it, and a template being restored from is never removed.
//
// What a restored cluster shares with its template, and so with every other
// restore of it: everything in the guests' memory and on their disks at the
// snapshot's moment: keys, TPM endorsement keys, node identities, the
// kernel's random state. Profiles fix up what they can (cluster.Restorer);
// testos steps its clock and reseeds its RNG. Clusters restored from one
// template are alike, not unique: use Options.Cold where that matters.
package warm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/cluster"
)

// Cache is a directory of cluster templates.
type Cache struct {
	// Dir holds the templates, one directory each, named by key. Required.
	// Callers usually take $XDG_CACHE_HOME/qcluster/warm.
	Dir string
	// MaxBytes bounds the space the templates take on disk. Default: 16 GiB.
	MaxBytes int64
	// Logger receives what the cache does. Default: discard.
	Logger *slog.Logger
}

// Result says how Launch got its cluster.
type Result struct {
	// Template is the snapshot directory restored from; "" for a cold launch.
	Template string
	// Made is true when this call made the template (a cold launch and a
	// snapshot) before restoring it.
	Made bool
	// MakeTime is how long making the template took.
	MakeTime time.Duration
}

// templateValidity is how long a template's certificates are valid: a
// template older than that is made again.
const templateValidity = 365 * 24 * time.Hour

// defaultMaxBytes bounds a cache that sets no size.
const defaultMaxBytes = 16 << 30

// Launch returns a cluster for opts: restored from the cached template for
// opts, made first if missing. With opts.Cold it launches cold and leaves
// the cache alone; with opts.Snapshot set it restores that snapshot.
func (c *Cache) Launch(ctx context.Context, opts cluster.Options) (*cluster.Cluster, Result, error) {
	if opts.Cold || opts.Snapshot != "" {
		cl, err := cluster.Launch(ctx, opts)
		return cl, Result{Template: opts.Snapshot}, err
	}
	if c.Dir == "" {
		return nil, Result{}, errors.New("template cache: no directory given")
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := cluster.TemplateKey(ctx, opts)
	if err != nil {
		return nil, Result{}, err
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, Result{}, fmt.Errorf("template cache: %w", err)
	}
	dir := filepath.Join(c.Dir, key)
	var res Result
	// Shared: restores. Exclusive: making the template, or removing it.
	lock, err := lockFile(ctx, dir+".lock", unix.LOCK_SH)
	if err != nil {
		return nil, res, err
	}
	defer lock.Close() // and so unlocked

	if !usable(dir, log) {
		// Let go first: two holders converting shared to exclusive at
		// once would wait for each other.
		unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		if err := flock(ctx, lock, unix.LOCK_EX); err != nil {
			return nil, res, err
		}
		if !current(lock) {
			// Evicted while we let go: start over.
			lock.Close()
			return c.Launch(ctx, opts)
		}
		// Another process may have made it while we waited.
		if !usable(dir, log) {
			// What a process killed while making this template left.
			os.RemoveAll(dir)
			stale, _ := filepath.Glob(filepath.Join(c.Dir, "."+key+".partial-*"))
			for _, p := range stale {
				os.RemoveAll(p)
			}
			start := time.Now()
			if err := c.make(ctx, dir, opts); err != nil {
				return nil, res, err
			}
			res.Made, res.MakeTime = true, time.Since(start)
			log.Info("template made", "dir", dir, "took", res.MakeTime)
		}
		if err := flock(ctx, lock, unix.LOCK_SH); err != nil {
			return nil, res, err
		}
	}
	now := time.Now()
	_ = os.Chtimes(lock.Name(), now, now) // last use, for eviction
	if res.Made {
		c.evict(key, log)
	}
	res.Template = dir
	opts.Snapshot = dir
	cl, err := cluster.Launch(ctx, opts)
	return cl, res, err
}

// usable reports whether dir holds a template that can be restored: its
// manifest reads and its certificates have a day left.
func usable(dir string, log *slog.Logger) bool {
	m, err := cluster.ReadManifest(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !strings.Contains(err.Error(), "does not exist") {
			log.Warn("template unusable, making it again", "dir", dir, "err", err)
		}
		return false
	}
	return time.Until(m.Cluster.NotAfter) > 24*time.Hour
}

// make boots a cluster for opts cold and snapshots it into dir.
func (c *Cache) make(ctx context.Context, dir string, opts cluster.Options) error {
	cold := opts
	cold.CertValidity = templateValidity
	cold.Snapshot = ""
	cold.StateDir, cold.KeepState, cold.LogDir = "", false, ""
	if user := opts.Progress; user != nil {
		cold.Progress = func(e cluster.Event) {
			e.Step = "Template: " + e.Step
			user(e)
		}
	}
	cl, err := cluster.Launch(ctx, cold)
	if err != nil {
		return fmt.Errorf("make template: %w", err)
	}
	start := time.Now()
	report := func(e cluster.Event) {
		if opts.Progress != nil {
			opts.Progress(e)
		}
	}
	report(cluster.Event{Kind: cluster.StepStarted, Step: "Template: Snapshotting"})
	_, err = cl.Snapshot(ctx, dir, cluster.SnapshotOptions{Close: true})
	report(cluster.Event{Kind: cluster.StepDone, Step: "Template: Snapshotting", Elapsed: time.Since(start), Err: err})
	if err != nil {
		cl.Close()
		return fmt.Errorf("make template: %w", err)
	}
	return nil
}

// evict removes least recently used templates until the cache fits,
// skipping keep and any template in use (its lock is held).
func (c *Cache) evict(keep string, log *slog.Logger) {
	max := c.MaxBytes
	if max <= 0 {
		max = defaultMaxBytes
	}
	type entry struct {
		key  string
		used time.Time
		size int64
	}
	var entries []entry
	var total int64
	locks, _ := filepath.Glob(filepath.Join(c.Dir, "*.lock"))
	for _, l := range locks {
		key := strings.TrimSuffix(filepath.Base(l), ".lock")
		fi, err := os.Stat(l)
		if err != nil {
			continue
		}
		e := entry{key: key, used: fi.ModTime(), size: cluster.SnapshotSize(filepath.Join(c.Dir, key))}
		entries = append(entries, e)
		total += e.size
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.used.Compare(b.used) })
	for _, e := range entries {
		if e.key == keep {
			continue
		}
		f, err := os.OpenFile(filepath.Join(c.Dir, e.key+".lock"), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(c.Dir, e.key)); errors.Is(err, fs.ErrNotExist) && e.key != keep {
			// A lock left by a template that was never made (its launch
			// failed): nothing to evict but the lock itself.
			if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
				os.Remove(f.Name())
			}
			f.Close()
			continue
		}
		if total <= max {
			f.Close()
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if err := os.RemoveAll(filepath.Join(c.Dir, e.key)); err == nil {
				os.Remove(f.Name())
				total -= e.size
				log.Info("template evicted", "key", e.key, "bytes", e.size, "last used", e.used)
			}
		}
		f.Close()
	}
}

// lockFile opens path and takes lock how on it, making sure the file
// locked is still the one at path: eviction removes the lock files of the
// templates it removes, and a lock on a removed file guards nothing.
func lockFile(ctx context.Context, path string, how int) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("template cache: %w", err)
		}
		if err := flock(ctx, f, how); err != nil {
			f.Close()
			return nil, err
		}
		if current(f) {
			return f, nil
		}
		f.Close()
	}
}

// current reports whether f is still the file at its path.
func current(f *os.File) bool {
	var held, now unix.Stat_t
	return unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(f.Name(), &now) == nil && held.Ino == now.Ino && held.Dev == now.Dev
}

// flock takes lock on f, waiting until it is free or ctx ends.
func flock(ctx context.Context, f *os.File, how int) error {
	wait := 10 * time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("template cache: lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("template cache: waiting for %s (another process is making the template): %w", f.Name(), ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}
