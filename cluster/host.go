package cluster

import (
	"context"

	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/resolve"
)

// hostTools are the programs and firmware found on the host.
type hostTools struct {
	qemu, swtpm, swtpmSetup string
	switchCommand           []string // argv prefix of the nanoswitch command
	ovmf                    qemu.OVMF
	image, loader           string
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
	if h.switchCommand = o.SwitchCommand; len(h.switchCommand) == 0 {
		bin, err := resolve.Find(resolve.Nanoswitch(o.Nanoswitch))
		if err != nil {
			return err
		}
		h.switchCommand = []string{bin}
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
