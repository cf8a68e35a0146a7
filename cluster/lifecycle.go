package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/qcluster/qcluster/nanoswitch/client"
	"github.com/qcluster/qcluster/qemu"
)

// node returns node i or an error naming the valid range.
func (c *Cluster) node(i int) (*Node, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	if i < 0 || i >= len(c.Nodes) {
		return nil, fmt.Errorf("node %d: the cluster has nodes 0 to %d", i, len(c.Nodes)-1)
	}
	return c.Nodes[i], nil
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// acquire takes node i's lifecycle lock for a Start, Stop, Reboot or Kill,
// and returns a context that also ends when the cluster closes. Close halts
// every node under the same lock after setting closed, so a call that gets
// the lock checks closed and either ends before Close halts its node or does
// nothing. release unlocks.
func (c *Cluster) acquire(ctx context.Context, i int) (n *Node, _ context.Context, release func(), err error) {
	if n, err = c.node(i); err != nil {
		return nil, nil, nil, err
	}
	n.lifecycle.Lock()
	if c.isClosed() {
		n.lifecycle.Unlock()
		return nil, nil, nil, ErrClosed
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(c.life, func() { cancel(ErrClosed) })
	return n, ctx, func() {
		stop()
		cancel(nil)
		n.lifecycle.Unlock()
	}, nil
}

// closedErr is err, or ErrClosed when the cluster closed meanwhile: what
// failed then failed because of Close.
func (c *Cluster) closedErr(err error) error {
	if err != nil && c.isClosed() {
		return ErrClosed
	}
	return err
}

// gracePeriod is how long Stop waits for a node to power off when asked.
const gracePeriod = 30 * time.Second

// Stop shuts node i down: through its OS's API when the profile has one,
// else with the ACPI power button, and kills it if it has not powered off
// within 30 s (or when ctx ends). Its disk, firmware variables and TPM state
// stay for Start.
func (c *Cluster) Stop(ctx context.Context, i int) error {
	n, ctx, release, err := c.acquire(ctx, i)
	if err != nil {
		return err
	}
	defer release()
	vm := n.VM()
	if vm == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, gracePeriod)
	defer cancel()
	if err := c.askShutdown(ctx, n, vm, false); err != nil {
		c.opts.Logger.Warn("graceful stop failed, killing", "node", n.Name, "err", err)
	} else {
		select {
		case <-vm.Exited():
		case <-ctx.Done():
			c.opts.Logger.Warn("node did not power off in time, killing", "node", n.Name)
		}
	}
	err = n.halt()
	n.setState(StateStopped)
	return c.closedErr(err)
}

// askShutdown asks the node's OS to power off or reboot, falling back on the
// ACPI power button (which can only power off).
func (c *Cluster) askShutdown(ctx context.Context, n *Node, vm *qemu.VM, reboot bool) error {
	if s, ok := c.opts.Profile.(Shutdowner); ok {
		if err := s.Shutdown(ctx, c, n, reboot); err == nil {
			return nil
		} else {
			c.opts.Logger.Info("shutdown through the OS failed, pressing the power button", "node", n.Name, "err", err)
		}
	}
	return vm.QMP().SystemPowerdown(ctx)
}

// Kill stops node i at once, like pulling the power cord.
func (c *Cluster) Kill(i int) error {
	n, _, release, err := c.acquire(context.Background(), i)
	if err != nil {
		return err
	}
	defer release()
	err = n.halt()
	n.setState(StateStopped)
	return c.closedErr(err)
}

// Start starts a stopped node i again with the same disk, firmware variables
// and TPM state, and waits until it is ready.
func (c *Cluster) Start(ctx context.Context, i int) error {
	n, ctx, release, err := c.acquire(ctx, i)
	if err != nil {
		return err
	}
	defer release()
	return c.closedErr(c.startLocked(ctx, n))
}

func (c *Cluster) startLocked(ctx context.Context, n *Node) error {
	if vm := n.VM(); vm != nil {
		select {
		case <-vm.Exited():
			n.halt() // reap what is left of the previous run
		default:
			return fmt.Errorf("%s: already running", n.Name)
		}
	}
	c.dropConns(n.Index)
	if err := n.start(ctx); err != nil {
		return n.fail(err)
	}
	return c.waitNode(ctx, n)
}

// Reboot reboots node i: it asks the node's OS to reboot (else presses the
// power button), waits for QEMU to end (QEMU runs with -no-reboot), kills it
// if it does not within 30 s, then starts it again with the same disk,
// firmware variables and TPM state and waits until it is ready.
func (c *Cluster) Reboot(ctx context.Context, i int) error {
	n, ctx, release, err := c.acquire(ctx, i)
	if err != nil {
		return err
	}
	defer release()
	return c.closedErr(c.rebootLocked(ctx, n))
}

func (c *Cluster) rebootLocked(ctx context.Context, n *Node) error {
	if vm := n.VM(); vm != nil {
		sctx, cancel := context.WithTimeout(ctx, gracePeriod)
		if err := c.askShutdown(sctx, n, vm, true); err != nil {
			c.opts.Logger.Warn("graceful reboot failed, killing", "node", n.Name, "err", err)
		} else {
			select {
			case <-vm.Exited():
			case <-sctx.Done():
				c.opts.Logger.Warn("node did not go down in time, killing", "node", n.Name)
			}
		}
		cancel()
		if err := n.halt(); err != nil {
			return err
		}
	}
	return c.startLocked(ctx, n)
}

// Partition stops all traffic between nodes a and b until Heal.
func (c *Cluster) Partition(ctx context.Context, a, b int) error {
	na, err := c.node(a)
	if err != nil {
		return err
	}
	nb, err := c.node(b)
	if err != nil {
		return err
	}
	return c.net.Partition(ctx, na.Name, nb.Name)
}

// Isolate cuts node a off from every other node until Heal; the host still
// reaches it.
func (c *Cluster) Isolate(ctx context.Context, a int) error {
	n, err := c.node(a)
	if err != nil {
		return err
	}
	return c.net.Isolate(ctx, n.Name)
}

// Degrade makes node a's link lossy (loss, 0 to 100 percent) and slow
// (delay per frame) until Heal.
func (c *Cluster) Degrade(ctx context.Context, a int, loss float64, delay time.Duration) error {
	n, err := c.node(a)
	if err != nil {
		return err
	}
	if loss < 0 || loss > 100 {
		return fmt.Errorf("loss %.1f%%: want 0 to 100", loss)
	}
	return c.net.Degrade(ctx, n.Name, client.Degradation{LossPercent: loss, Delay: delay})
}

// Heal removes every network fault.
func (c *Cluster) Heal(ctx context.Context) error {
	if c.net == nil {
		return errors.New("heal: network not started")
	}
	return c.net.Heal(ctx)
}
