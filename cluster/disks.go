package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/disk"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/qemu"
)

// diskInputs are what every node's disk is made of.
type diskInputs struct {
	loader, kernel, system disk.Blob
	verified               bool // the payloads were checked once; the blobs are raw
}

// readImage opens the OS image and, unless told not to, verifies its
// payloads once here so that every node's disk can reflink the raw blobs.
func (c *Cluster) readImage(ctx context.Context) error {
	img, err := osimage.Open(c.host.image)
	if err != nil {
		return err
	}
	if c.inputs.loader, err = blockdev.NewFileBlob(c.host.loader); err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	kernel, system, err := disk.ImageBlobs(img, false)
	if errors.Is(err, osimage.ErrCompressed) {
		// Compressed payloads cannot be reflinked: every node decompresses
		// and verifies its own copy.
		kernel, system, err = disk.ImageBlobs(img, true)
		c.inputs.kernel, c.inputs.system = kernel, system
		return err
	}
	if err != nil {
		return err
	}
	if !c.opts.Unverified {
		if err := verifyImage(ctx, img); err != nil {
			return err
		}
		c.inputs.verified = true
	}
	c.inputs.kernel, c.inputs.system = kernel, system
	return nil
}

// verifyImage reads the image's OS payloads through their digests.
func verifyImage(ctx context.Context, img *osimage.Image) error {
	kernel, system, err := disk.ImageBlobs(img, true)
	if err != nil {
		return err
	}
	for _, b := range []disk.Blob{kernel, system} {
		if err := drain(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// drain reads a verifying blob to the end, which checks every chunk.
func drain(ctx context.Context, b disk.Blob) error {
	r, err := b.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("verify payload: %w", err)
	}
	return ctx.Err()
}

// synthesizeDisks writes every node's disk and firmware variables at once.
func (c *Cluster) synthesizeDisks(ctx context.Context) error {
	start := time.Now()
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		stats, err := disk.Write(ctx, n.disk, disk.Options{
			Size:   n.Options.DiskSize,
			Seed:   c.Name + "/" + n.Name,
			Loader: c.inputs.loader,
			Kernel: c.inputs.kernel,
			System: c.inputs.system,
			Logger: c.opts.Logger.With("node", n.Name),
		})
		if err != nil {
			return fmt.Errorf("%s: synthesize disk: %w", n.Name, err)
		}
		for _, cp := range stats.Copied {
			c.opts.Logger.Debug("disk", "node", n.Name, "copied", cp)
		}
		if _, err := qemu.PrepareVars(c.host.ovmf.VarsTemplate, n.vars); err != nil {
			return fmt.Errorf("%s: firmware variables: %w", n.Name, err)
		}
		n.mu.Lock()
		n.timings.DiskReady = time.Since(start)
		n.mu.Unlock()
		return nil
	})
}
