package cluster

import (
	"context"
	"errors"
	"sync"
)

// bootNodes starts every node's swtpm and QEMU at once.
func (c *Cluster) bootNodes(ctx context.Context) error {
	c.onUndo("stop nodes", c.haltAll)
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		if err := n.start(ctx); err != nil {
			return n.fail(err)
		}
		return nil
	})
}

// haltAll stops every node at once, each under its lifecycle lock: a
// lifecycle call in flight ends first (Close ended the cluster's life), and
// none starts the node afterwards.
func (c *Cluster) haltAll() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() {
			n.lifecycle.Lock()
			defer n.lifecycle.Unlock()
			errs[i] = n.halt()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
