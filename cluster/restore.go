package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/qemu"
)

// Restorer is implemented by profiles that fix up a guest after it was
// restored from a snapshot, before readiness is probed: a restored guest
// carries on from the snapshot's moment, so its wall clock lags by the
// snapshot's age, and its random number generator's state is the
// template's, as is everything else in its memory. Restore retries
// AfterRestore with backoff until it succeeds, as it does Probe.
type Restorer interface {
	AfterRestore(ctx context.Context, c *Cluster, node *Node) error
}

// applyManifest checks opts against a snapshot's manifest and fills in what
// the snapshot decides: the nodes, their machines and the subnet. Options
// left at their zero value take the snapshot's; others must agree.
func applyManifest(o Options, m *Manifest) (Options, error) {
	if o.Nodes != 0 && o.Nodes != len(m.Nodes) {
		return o, fmt.Errorf("snapshot %s has %d nodes; asked for %d", o.Snapshot, len(m.Nodes), o.Nodes)
	}
	subnet := netip.MustParsePrefix(m.Cluster.Subnet) // checked by ParseManifest
	if o.Subnet.IsValid() && o.Subnet.Masked() != subnet {
		return o, fmt.Errorf("snapshot %s uses subnet %s; asked for %s", o.Snapshot, subnet, o.Subnet)
	}
	if o.Accel != "" && o.Accel != "auto" && o.Accel != m.Key.Accel {
		return o, fmt.Errorf("snapshot %s was taken under %s; asked for %s", o.Snapshot, m.Key.Accel, o.Accel)
	}
	for i, n := range m.Nodes {
		want := o.Node
		if ov, ok := o.PerNode[i]; ok {
			want = mergeNode(want, ov)
		}
		have := n.Options
		switch {
		case want.CPUs != 0 && want.CPUs != have.CPUs:
			return o, fmt.Errorf("snapshot's %s has %d CPUs; asked for %d", n.Name, have.CPUs, want.CPUs)
		case want.MemoryMiB != 0 && want.MemoryMiB != have.MemoryMiB:
			return o, fmt.Errorf("snapshot's %s has %d MiB of memory; asked for %d MiB", n.Name, have.MemoryMiB, want.MemoryMiB)
		case want.DiskSize != 0 && want.DiskSize != have.DiskSize:
			return o, fmt.Errorf("snapshot's %s has a disk of %d bytes; asked for %d", n.Name, have.DiskSize, want.DiskSize)
		case want.NoTPM && !have.NoTPM:
			return o, fmt.Errorf("snapshot's %s has a TPM; asked for none", n.Name)
		case len(want.ExtraQEMUArgs) > 0 && !slices.Equal(want.ExtraQEMUArgs, have.ExtraQEMUArgs):
			return o, fmt.Errorf("snapshot's %s has extra QEMU arguments %q; asked for %q", n.Name, have.ExtraQEMUArgs, want.ExtraQEMUArgs)
		}
	}
	if o.Profile != nil {
		p, err := profileRecord(o.Profile)
		if err != nil {
			return o, err
		}
		if p.Type != m.Profile.Type || !jsonEqual(p.Settings, m.Profile.Settings) {
			return o, fmt.Errorf("snapshot %s was made with profile %s %s; given %s %s", o.Snapshot, m.Profile.Type, compact(m.Profile.Settings), p.Type, compact(p.Settings))
		}
	}
	o.Nodes = len(m.Nodes)
	o.Node = NodeOptions{}
	o.PerNode = map[int]NodeOptions{}
	for i, n := range m.Nodes {
		o.PerNode[i] = n.Options
	}
	o.Subnet = subnet
	return o, nil
}

// mergeNode lays an override over node defaults, as nodeOptions does.
func mergeNode(n, ov NodeOptions) NodeOptions {
	if ov.CPUs != 0 {
		n.CPUs = ov.CPUs
	}
	if ov.MemoryMiB != 0 {
		n.MemoryMiB = ov.MemoryMiB
	}
	if ov.DiskSize != 0 {
		n.DiskSize = ov.DiskSize
	}
	n.NoTPM = n.NoTPM || ov.NoTPM
	n.ExtraQEMUArgs = append(slices.Clone(n.ExtraQEMUArgs), ov.ExtraQEMUArgs...)
	return n
}

// compact is JSON on one line, for messages.
func compact(b json.RawMessage) string {
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return string(b)
	}
	return out.String()
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// checkSnapshot compares the snapshot with this host and checks its files,
// before anything is written or started.
func (c *Cluster) checkSnapshot(ctx context.Context) error {
	m := c.manifest
	if left := time.Until(m.Cluster.NotAfter); left < time.Hour {
		return fmt.Errorf("%w: its certificates expire%s (%s): make the snapshot again", ErrBadSnapshot, map[bool]string{true: "d", false: ""}[left <= 0], m.Cluster.NotAfter.Format(time.RFC3339))
	}
	// The host's key, the image and the files are checked at once; the
	// key's error comes first, as it says most.
	var keyErr error
	keyDone := make(chan struct{})
	go func() {
		defer close(keyDone)
		host, err := c.hostKey(ctx)
		if err == nil {
			if d := m.Key.mismatch(host); d != "" {
				err = fmt.Errorf("%w: %s", ErrBadSnapshot, d)
			}
		}
		keyErr = err
	}()
	g, gctx := errgroup.WithContext(ctx)
	if c.opts.Image != "" {
		// The disks come from the snapshot, but an image given is checked
		// as a cold launch would check it: a corrupt image fails here too.
		img, err := osimage.Open(c.host.image)
		if err != nil {
			return err
		}
		if img.Digest() != m.Key.Image {
			return fmt.Errorf("%w: snapshot made from image %.19s; asked for %s (%.19s)", ErrBadSnapshot, m.Key.Image, c.opts.Image, img.Digest())
		}
		if !c.opts.Unverified {
			g.Go(func() error { return verifyImage(gctx, img) })
		}
	}
	for _, n := range m.Nodes {
		g.Go(func() error { return n.checkFiles(c.opts.Snapshot) })
	}
	err := g.Wait()
	<-keyDone
	if keyErr != nil {
		return keyErr
	}
	return err
}

// manifestPlan rebuilds the template's plan from its manifest.
func (m *Manifest) plan() (*Plan, error) {
	pki, err := loadPKI(m.Cluster.CACert, m.Cluster.CAKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	p := &Plan{
		Name: m.Cluster.Name, Domain: m.Cluster.Domain,
		Subnet:  netip.MustParsePrefix(m.Cluster.Subnet),
		Gateway: netip.MustParseAddr(m.Cluster.Gateway),
		PKI:     pki,
		Owner:   Identity{CertPEM: []byte(m.Cluster.OwnerCert), KeyPEM: []byte(m.Cluster.OwnerKey)},
	}
	if _, err := p.Owner.TLSCertificate(); err != nil {
		return nil, fmt.Errorf("%w: owner identity: %v", ErrBadSnapshot, err)
	}
	for _, n := range m.Nodes {
		mac, _ := net.ParseMAC(n.MAC)
		np := &NodePlan{
			Index: n.Index, Name: n.Name, FQDN: n.FQDN,
			Address:  netip.MustParseAddr(n.Address),
			MAC:      mac,
			Identity: Identity{CertPEM: []byte(n.Cert), KeyPEM: []byte(n.Key)},
			Options:  n.Options,
		}
		if _, err := np.Identity.TLSCertificate(); err != nil {
			return nil, fmt.Errorf("%w: %s identity: %v", ErrBadSnapshot, n.Name, err)
		}
		p.Nodes = append(p.Nodes, np)
	}
	return p, nil
}

// copyDisks gives every node a disk of its own, cloned from the snapshot's
// (a reflink where the file system shares extents, else its data extents),
// a fresh variable store (the snapshot's variables arrive in the state and
// are written back to it) and the template's parameters; and seeds the TPM
// CA, so that EK certificates verify as they did in the template.
func (c *Cluster) copyDisks(ctx context.Context) error {
	m := c.manifest
	if m.TPMCACert != "" {
		ca, err := newTPMCA(ctx, c, []byte(m.TPMCACert), []byte(m.TPMCAKey))
		if err != nil {
			return err
		}
		c.tpmCA = ca
	}
	start := time.Now()
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		src := filepath.Join(c.opts.Snapshot, n.Name)
		method, err := blockdev.CloneFile(n.disk, filepath.Join(src, snapDisk), 0o600)
		if err != nil {
			return fmt.Errorf("%s: copy disk: %w", n.Name, err)
		}
		c.opts.Logger.Debug("restore: disk", "node", n.Name, "method", method)
		if _, err := qemu.PrepareVars(c.host.ovmf.VarsTemplate, n.vars); err != nil {
			return fmt.Errorf("%s: firmware variables: %w", n.Name, err)
		}
		if _, ok := m.Nodes[n.Index].Files[snapParams]; ok {
			b, err := os.ReadFile(filepath.Join(src, snapParams))
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			n.params = filepath.Join(n.Dir, "parameters")
			if err := atomicfile.Write(n.params, b, 0o600); err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
		}
		n.mu.Lock()
		n.timings.DiskReady = time.Since(start)
		n.mu.Unlock()
		return nil
	})
}

// prepareNodes copies the disks while the switch starts: a switch takes a
// few hundred milliseconds to start (mostly its process's start-up), as
// long as the rest of a restore.
func (c *Cluster) prepareNodes(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.copyDisks(ctx) })
	g.Go(func() error { return c.startNetwork(ctx) })
	return g.Wait()
}

// restoreNodes starts every node's swtpm (empty, for the incoming state)
// and QEMU (waiting for its state, RAM mapped copy-on-write from the
// snapshot), loads the states, and then resumes every node together.
func (c *Cluster) restoreNodes(ctx context.Context) error {
	c.onUndo("stop nodes", c.haltAll)
	err := c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		if err := n.start(ctx); err != nil {
			return n.fail(err)
		}
		vm := n.VM()
		if err := vm.LoadState(ctx, n.incoming); err != nil {
			return n.fail(err)
		}
		n.mu.Lock()
		n.timings.StateLoaded = time.Since(vm.StartedAt())
		n.mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	// Resume all at once: the guests' view of each other stays as frozen.
	err = c.eachVM(ctx, func(ctx context.Context, n *Node) error {
		vm := n.VM()
		if err := vm.QMP().Cont(ctx); err != nil {
			return n.fail(err)
		}
		n.mu.Lock()
		n.timings.Resumed = time.Since(vm.StartedAt())
		// From now on the node is an ordinary one: a restart boots it
		// afresh, with RAM of its own.
		n.incoming = ""
		n.ram, n.ramShared = filepath.Join(n.Dir, "ram"), true
		n.fixup = true
		n.mu.Unlock()
		return nil
	})
	return err
}

// probe runs the profile's fix-up once after a restore, then its probe.
func (c *Cluster) probe(ctx context.Context, n *Node) error {
	n.mu.Lock()
	fixup := n.fixup
	n.mu.Unlock()
	if r, ok := c.opts.Profile.(Restorer); ok && fixup {
		start := time.Now()
		if err := r.AfterRestore(ctx, c, n); err != nil {
			return fmt.Errorf("after restore: %w", err)
		}
		c.opts.Logger.Debug("restore: fix-up done", "node", n.Name, "took", time.Since(start))
		n.mu.Lock()
		n.fixup = false
		n.mu.Unlock()
	}
	return c.opts.Profile.Probe(ctx, c, n)
}

// marshalManifest encodes m as indented JSON.
func marshalManifest(m *Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// SnapshotSize is the space the files of the snapshot in dir take on disk
// (allocated blocks: RAM files and disks are sparse).
func SnapshotSize(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			total += st.Blocks * 512
		}
		return nil
	})
	return total
}
