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

// haltAll stops every node at once.
func (c *Cluster) haltAll() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() { errs[i] = n.halt() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
