package cluster

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// waitReady waits for every node at once; the first failure cancels the rest.
func (c *Cluster) waitReady(ctx context.Context) error {
	return c.forEachNode(ctx, c.waitNode)
}

// waitNode probes n with backoff until it is ready, racing against its
// processes exiting and its console showing a failure.
func (c *Cluster) waitNode(ctx context.Context, n *Node) error {
	vm, tpm := n.processes()
	if vm == nil {
		return n.fail(errors.New("not running"))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Watchers turn an exit or a failure line into the cancellation cause.
	go func() {
		select {
		case <-vm.Exited():
			ex, _ := vm.Wait()
			cancel(fmt.Errorf("QEMU exited before the node was ready: %s", ex))
		case <-ctx.Done():
		}
	}()
	if tpm != nil {
		go func() {
			select {
			case <-tpm.Exited():
				cancel(fmt.Errorf("swtpm exited before the node was ready: %v", tpm.Wait()))
			case <-ctx.Done():
			}
		}()
	}
	go func() {
		if line, err := vm.Console().WaitForLine(ctx, c.failurePattern()); err == nil {
			cancel(fmt.Errorf("console: %s", line))
		}
	}()

	// Options, not fields set afterwards: NewExponentialBackOff starts its
	// first interval from the default 500 ms, which a field set after it
	// does not change (that cost every restore a quarter to three quarters
	// of a second).
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(250*time.Millisecond),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0)) // the context bounds it
	var lastErr error
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 3*time.Second)
		err := c.probe(attempt, n)
		cancelAttempt()
		if err == nil {
			n.setReady()
			c.progress(Event{Kind: NodeReady, Step: "Waiting for nodes", Node: n.Name, Elapsed: n.Timings().Ready, Nodes: len(c.Nodes)})
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			cause := context.Cause(ctx)
			switch {
			case errors.Is(cause, context.Canceled):
				return cause // the caller gave up, or another node failed first
			case errors.Is(cause, context.DeadlineExceeded):
				cause = fmt.Errorf("not ready before the launch timeout; last probe: %v", lastErr)
			}
			return n.fail(cause)
		case <-time.After(b.NextBackOff()):
		}
	}
}

// failurePattern matches the generic failure lines and the profile's.
func (c *Cluster) failurePattern() *regexp.Regexp {
	var alts []string
	for _, p := range genericFailures {
		alts = append(alts, regexp.QuoteMeta(p))
	}
	if fm, ok := c.opts.Profile.(FailureMatcher); ok {
		for _, re := range fm.ConsoleFailures() {
			alts = append(alts, re.String())
		}
	}
	return regexp.MustCompile("(?:" + strings.Join(alts, ")|(?:") + ")")
}
