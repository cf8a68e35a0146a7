package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/internal/atomicfile"
)

// SnapshotOptions say what Snapshot does besides writing the snapshot.
type SnapshotOptions struct {
	// Close closes the cluster once the snapshot is written, instead of
	// resuming it; its RAM files and disks then move into the snapshot
	// instead of being copied, where both are on one file system.
	// Default false: the cluster runs on.
	Close bool
}

// SnapshotInfo reports what Snapshot did.
type SnapshotInfo struct {
	Dir string
	// Paused is how long the nodes were stopped (or until Close began).
	Paused time.Duration
	// Bytes is the snapshot's size on disk (allocated blocks).
	Bytes int64
	// StateBytes is the size of the nodes' migration streams, together.
	StateBytes int64
}

// Snapshot freezes the cluster into dir, which must not exist yet, so that
// Options.Snapshot can restore copies of it. Every node must be ready. The
// nodes are stopped together, so that what they were saying to each other
// stays consistent; then each node's device state goes out through QEMU's
// migration (RAM stays in its file), and its disk and RAM file are copied
// (reflinked where the file system can) at that stopped moment. The
// manifest is written last and the directory renamed into place, so dir
// either holds a whole snapshot or does not exist.
//
// A cluster restored from a snapshot cannot be snapshotted: its RAM is a
// private copy of the template's. Snapshot the template instead.
func (c *Cluster) Snapshot(ctx context.Context, dir string, opts SnapshotOptions) (*SnapshotInfo, error) {
	info, err := c.snapshot(ctx, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", c.Name, err)
	}
	return info, nil
}

func (c *Cluster) snapshot(ctx context.Context, dir string, opts SnapshotOptions) (*SnapshotInfo, error) {
	if c.RestoredFrom != "" {
		return nil, fmt.Errorf("the cluster was restored from %s; snapshot a cold-launched cluster (the template) instead", c.RestoredFrom)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("%s already exists: choose a new directory", dir)
	}
	// Hold every node still: no Reboot or Stop may run while we look.
	// Close takes these locks too: unlock before closing.
	for _, n := range c.Nodes {
		n.lifecycle.Lock()
	}
	locked := true
	unlock := func() {
		if locked {
			for _, n := range c.Nodes {
				n.lifecycle.Unlock()
			}
			locked = false
		}
	}
	defer unlock()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	for _, n := range c.Nodes {
		if s := n.State(); s != StateReady {
			return nil, fmt.Errorf("%s is %s: every node must be ready", n.Name, s)
		}
	}
	key, err := c.hostKey(ctx)
	if err != nil {
		return nil, err
	}
	if key.Image, err = imageDigest(c.host.image); err != nil {
		return nil, err
	}
	if key.Loader, err = hashFile(c.host.loader); err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	prof, err := profileRecord(c.opts.Profile)
	if err != nil {
		return nil, err
	}

	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".partial-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()

	// Stop every node back to back, so that no frame between two of them
	// is half-delivered in the snapshot.
	paused := time.Now()
	if err := c.eachVM(ctx, func(ctx context.Context, n *Node) error { return n.VM().QMP().Stop(ctx) }); err != nil {
		c.resume()
		return nil, err
	}
	resumed := false
	defer func() {
		if !resumed && !opts.Close {
			c.resume()
		}
	}()

	m := &Manifest{Format: manifestFormat, Created: time.Now().UTC(), Key: key, Profile: prof}
	m.Key.Nodes = len(c.Nodes)
	pki := c.Plan.PKI
	m.Cluster = ManifestCluster{
		Name: c.Plan.Name, Domain: c.Plan.Domain, Subnet: c.Plan.Subnet.String(), Gateway: c.Plan.Gateway.String(),
		CACert: string(pki.CAPEM), CAKey: string(pki.caKeyPEM()),
		OwnerCert: string(c.Plan.Owner.CertPEM), OwnerKey: string(c.Plan.Owner.KeyPEM),
		NotAfter: pki.CACert.NotAfter,
	}
	if c.tpmCA != nil {
		cert, err1 := os.ReadFile(c.tpmCA.CertPath())
		key, err2 := os.ReadFile(c.tpmCA.KeyPath())
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("TPM CA: %w", err)
		}
		m.TPMCACert, m.TPMCAKey = string(cert), string(key)
	}
	m.Nodes = make([]ManifestNode, len(c.Nodes))
	for i, n := range c.Nodes {
		m.Key.Machines = append(m.Key.Machines, machineKey(n.Options))
		m.Nodes[i] = ManifestNode{
			Index: n.Index, Name: n.Name, FQDN: n.FQDN, Address: n.Address.String(), MAC: n.MAC.String(),
			Cert: string(n.Identity.CertPEM), Key: string(n.Identity.KeyPEM),
			Options: n.Options, EKCertificate: n.EKCertificate, Files: map[string]ManifestFile{},
		}
	}
	var mu sync.Mutex
	err = c.eachVM(ctx, func(ctx context.Context, n *Node) error {
		files, err := c.snapshotNode(ctx, n, filepath.Join(tmp, n.Name), opts.Close)
		mu.Lock()
		m.Nodes[n.Index].Files = files
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := writeManifest(tmp, m); err != nil {
		return nil, err
	}
	info := &SnapshotInfo{Dir: dir, Paused: time.Since(paused)}
	if opts.Close {
		resumed = true
		unlock()
		if err := c.Close(); err != nil {
			return nil, fmt.Errorf("close after snapshot: %w", err)
		}
	} else {
		resumed = true
		if err := c.resume(); err != nil {
			return nil, fmt.Errorf("resume after snapshot: %w", err)
		}
		info.Paused = time.Since(paused)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	done = true
	for _, n := range m.Nodes {
		info.StateBytes += n.Files[snapState].Size
	}
	info.Bytes = SnapshotSize(dir)
	return info, nil
}

// snapshotNode writes one stopped node's files into dir: its device state
// through migration, then its disk, RAM file and parameters. With move the
// disk and RAM are renamed into place where possible (the cluster closes
// afterwards); otherwise they are cloned, and the node can resume.
func (c *Cluster) snapshotNode(ctx context.Context, n *Node, dir string, move bool) (map[string]ManifestFile, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	state := filepath.Join(dir, snapState)
	if err := n.VM().SaveState(ctx, state); err != nil {
		return nil, err
	}
	copies := []struct{ name, from string }{{snapDisk, n.disk}, {snapRAM, n.ram}}
	if n.params != "" {
		copies = append(copies, struct{ name, from string }{snapParams, n.params})
	}
	for _, cp := range copies {
		to := filepath.Join(dir, cp.name)
		if move && cp.name != snapParams {
			if err := os.Rename(cp.from, to); err == nil {
				continue
			}
		}
		m, err := blockdev.CloneFile(to, cp.from, 0o600)
		if err != nil {
			return nil, err
		}
		c.opts.Logger.Debug("snapshot: copied", "node", n.Name, "file", cp.name, "method", m)
	}
	files := map[string]ManifestFile{}
	for _, name := range []string{snapState, snapDisk, snapRAM, snapParams} {
		p := filepath.Join(dir, name)
		if name == snapParams && n.params == "" {
			continue
		}
		fi, err := fileInfo(name, p)
		if err != nil {
			return nil, err
		}
		files[name] = fi
		// Nothing writes to a snapshot, but QEMU opens RAM files read-write
		// even to map them privately.
		if name != snapRAM {
			if err := os.Chmod(p, 0o400); err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

func writeManifest(dir string, m *Manifest) error {
	b, err := marshalManifest(m)
	if err != nil {
		return err
	}
	// It holds the cluster's private keys.
	return atomicfile.Write(filepath.Join(dir, ManifestName), b, 0o400)
}

// eachVM runs fn for every node at once, each with its QEMU running.
func (c *Cluster) eachVM(ctx context.Context, fn func(context.Context, *Node) error) error {
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		if n.VM() == nil {
			return fmt.Errorf("%s: not running", n.Name)
		}
		return fn(ctx, n)
	})
}

// resume continues every node (after a stop for a snapshot) at once.
func (c *Cluster) resume() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.eachVM(ctx, func(ctx context.Context, n *Node) error { return n.VM().QMP().Cont(ctx) })
}
