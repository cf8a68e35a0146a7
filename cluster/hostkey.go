package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/qcluster/qcluster/imagebuild/osimage"
)

// hostKey is the part of a SnapshotKey that the host decides: program and
// firmware versions and the accelerator. Its parts are found at once:
// `qemu --version` alone takes ~150 ms (QEMU loads many libraries), most
// of a restore's checking.
func (c *Cluster) hostKey(ctx context.Context) (SnapshotKey, error) {
	k := SnapshotKey{Accel: c.Accel}
	var g errgroup.Group
	g.Go(func() (err error) {
		k.QEMU, err = programVersion(ctx, c.host.qemu)
		return err
	})
	if c.host.swtpm != "" {
		g.Go(func() (err error) {
			k.Swtpm, err = programVersion(ctx, c.host.swtpm)
			k.Libtpms = libtpmsVersion()
			return err
		})
	}
	g.Go(func() (err error) {
		if k.OVMFCode, err = hashFile(c.host.ovmf.Code); err != nil {
			return fmt.Errorf("firmware: %w", err)
		}
		if k.OVMFVars, err = hashFile(c.host.ovmf.VarsTemplate); err != nil {
			return fmt.Errorf("firmware: %w", err)
		}
		return nil
	})
	return k, g.Wait()
}

// programVersion runs `prog --version` and returns the word after "version"
// on its first line ("QEMU emulator version 7.2.22 (Debian …)" → "7.2.22").
func programVersion(ctx context.Context, prog string) (string, error) {
	out, err := exec.CommandContext(ctx, prog, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", prog, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "version" {
			return strings.TrimSuffix(f[i+1], ","), nil
		}
	}
	return strings.TrimSpace(line), nil
}

// libtpmsVersion is the version in the file name of the libtpms that
// swtpm loads (libtpms.so.0 → libtpms.so.0.9.2), "unknown" if not found.
// swtpm does not report it.
func libtpmsVersion() string {
	for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"} {
		if p, err := filepath.EvalSymlinks(filepath.Join(dir, "libtpms.so.0")); err == nil {
			return strings.TrimPrefix(filepath.Base(p), "libtpms.so.")
		}
	}
	return "unknown"
}

// imageDigest opens the OS image as a launch does (so that it fails the
// same way) and returns its manifest's digest.
func imageDigest(dir string) (string, error) {
	img, err := osimage.Open(dir)
	if err != nil {
		return "", err
	}
	return img.Digest(), nil
}

// profileRecord describes a profile for the manifest: its type and its
// settings as JSON.
func profileRecord(p Profile) (ManifestProfile, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return ManifestProfile{}, fmt.Errorf("profile %T: %w", p, err)
	}
	return ManifestProfile{Type: fmt.Sprintf("%T", p), Settings: b}, nil
}

// TemplateKey names the template that a cache of snapshots would restore a
// cluster for opts from: a hash of everything a restore must match (the
// host's QEMU, swtpm and firmware, the accelerator, the image, the loader,
// the nodes' machines, the subnet and the profile). The name is not part
// of it: a restored cluster's guests keep the template's, and Options.Name
// names the restore on this host. It finds the programs and files as
// Launch does, and refuses what Launch would refuse before booting
// anything (an image that does not open, a state directory it cannot
// claim), so that a cache fails before it makes a template.
func TemplateKey(ctx context.Context, opts Options) (string, error) {
	opts.Snapshot = ""
	o, err := opts.withDefaults()
	if err != nil {
		return "", err
	}
	c := &Cluster{opts: o}
	if err := c.checkHost(ctx); err != nil {
		return "", err
	}
	if o.StateDir != "" {
		if err := checkStateDir(o.StateDir); err != nil {
			return "", err
		}
	}
	k, err := c.hostKey(ctx)
	if err != nil {
		return "", err
	}
	if k.Image, err = imageDigest(c.host.image); err != nil {
		return "", err
	}
	if k.Loader, err = hashFile(c.host.loader); err != nil {
		return "", fmt.Errorf("loader: %w", err)
	}
	k.Nodes = o.Nodes
	for i := 0; i < o.Nodes; i++ {
		n, _ := o.nodeOptions(i) // checked by withDefaults
		k.Machines = append(k.Machines, machineKey(n))
	}
	prof, err := profileRecord(o.Profile)
	if err != nil {
		return "", err
	}
	return templateKey(k, prof, o.Subnet.String()), nil
}

// TemplateKey is the key of the options this snapshot was made for (see
// the function TemplateKey): equal keys mean it can stand in for a launch.
func (m *Manifest) TemplateKey() string {
	return templateKey(m.Key, m.Profile, m.Cluster.Subnet)
}

func templateKey(k SnapshotKey, prof ManifestProfile, subnet string) string {
	var settings any
	_ = json.Unmarshal(prof.Settings, &settings) // normalised: equal settings, equal bytes
	b, _ := json.Marshal(struct {
		Format   int
		Key      SnapshotKey
		Profile  string
		Settings any
		Subnet   string
	}{manifestFormat, k, prof.Type, settings, subnet})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
