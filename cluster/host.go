package cluster

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/resolve"
)

// hostTools are the programs and firmware found on the host.
type hostTools struct {
	qemu, swtpm, swtpmSetup, nanoswitch string
	ovmf                                qemu.OVMF
	image, loader                       string
}

// checkHost finds every program and file the launch needs, before anything
// is written, and decides the accelerator.
func (c *Cluster) checkHost(ctx context.Context) error {
	o := c.opts
	h := &c.host
	var err error
	// A restore needs no image, unless one is named to compare with.
	if c.manifest == nil || o.Image != "" {
		if h.image, err = resolve.Find(resolve.Image(o.Image)); err != nil {
			return err
		}
	}
	if c.manifest == nil {
		if h.loader, err = resolve.Find(resolve.Loader(o.Loader)); err != nil {
			return err
		}
	}
	if h.qemu, err = resolve.Find(resolve.QEMU(o.QEMU)); err != nil {
		return err
	}
	if h.ovmf, err = qemu.FindOVMF(qemu.FirmwareQuery{Code: o.FirmwareCode, VarsTemplate: o.FirmwareVars}); err != nil {
		return err
	}
	if c.needsTPM() {
		if h.swtpm, err = resolve.Find(resolve.Swtpm(o.Swtpm)); err != nil {
			return err
		}
		if h.swtpmSetup, err = resolve.Find(resolve.SwtpmSetup(o.SwtpmSetup)); err != nil {
			return err
		}
	}
	if h.nanoswitch, err = findNanoswitch(ctx, o.Nanoswitch); err != nil {
		return err
	}
	accel, err := qemu.DetectAccel(qemu.Accel(o.Accel))
	if err != nil {
		return err
	}
	if accel.Notice != "" {
		o.Logger.Warn(accel.Notice)
	}
	c.Accel = string(accel.Accel)
	return nil
}

func (c *Cluster) needsTPM() bool {
	for i := 0; i < c.opts.Nodes; i++ {
		if n, _ := c.opts.nodeOptions(i); !n.NoTPM {
			return true
		}
	}
	return false
}

// findNanoswitch finds the nanoswitch command, building it from this
// repository with the go command as a last resort (go run / go test without
// make; make builds out/bin/nanoswitch).
func findNanoswitch(ctx context.Context, explicit string) (string, error) {
	p, err := resolve.Find(resolve.Nanoswitch(explicit))
	root, rerr := resolve.RepoRoot()
	out := filepath.Join(root, "out", "bin", "nanoswitch")
	if explicit != "" || (err == nil && (rerr != nil || p != out || !staleBinary(root, out))) {
		return p, err
	}
	gobin, gerr := exec.LookPath("go")
	if rerr != nil || gerr != nil {
		if err == nil {
			return p, nil // stale, but nothing to rebuild it with
		}
		return "", err
	}
	build := exec.CommandContext(ctx, gobin, "build", "-o", out, "./nanoswitch/cmd/nanoswitch")
	build.Dir = root
	if b, berr := build.CombinedOutput(); berr != nil {
		return "", fmt.Errorf("%w; building it failed too: %v: %s", err, berr, strings.TrimSpace(string(b)))
	}
	return out, nil
}

// staleBinary reports whether the repository's build of nanoswitch is older
// than any of its sources (or go.mod), so that a developer's edit is never
// run against an old binary.
func staleBinary(root, bin string) bool {
	st, err := os.Stat(bin)
	if err != nil {
		return true
	}
	stale := false
	for _, dir := range []string{"nanoswitch", "go.mod", "go.sum"} {
		filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".go") || strings.HasPrefix(d.Name(), "go.")) {
				if info, err := d.Info(); err == nil && info.ModTime().After(st.ModTime()) {
					stale = true
					return filepath.SkipAll
				}
			}
			return nil
		})
	}
	return stale
}
