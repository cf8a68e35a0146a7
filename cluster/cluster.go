// Package cluster launches and runs throw-away clusters of QEMU virtual
// machines: Launch synthesizes a disk per node from an OS image in OCI form
// (imagebuild/disk), manufactures a TPM per node (swtpm), starts the
// cluster's virtual switch (nanoswitch) and a QEMU per node (qemu), and waits
// until every node passes its OS profile's readiness probe. The returned
// *Cluster stops, starts, reboots and kills nodes, injects network faults,
// and tears everything down on Close.
//
// Launch runs named steps in order (checking the host, reading the image,
// synthesizing disks, manufacturing TPMs, starting the network, booting the
// nodes, waiting for them); each step works on all nodes at once, reports
// progress, and registers an undo for what it created, so a failed or
// cancelled launch leaves no process and no state behind. Readiness is a
// probe retried with jittered exponential backoff (capped at 250 ms) that
// races against the node's QEMU and swtpm exiting and against console lines
// that mean failure (a kernel panic, the EFI shell, the profile's own): a
// failure ends the launch at once with the node's name and console tail.
//
// cluster knows no particular guest OS: what is OS-specific comes through a
// Profile. It does not print; it reports through Options.Progress and logs
// through Options.Logger.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	"github.com/qcluster/qcluster/nanoswitch/client"
	"github.com/qcluster/qcluster/swtpm"
)

// Cluster is a running cluster. Its methods are safe for concurrent use.
type Cluster struct {
	// Name, as in Options (or the generated one).
	Name string
	// StateDir holds the nodes' disks, firmware variables, TPM state and
	// parameters; LogDir their serial logs and QEMU command lines.
	StateDir, LogDir string
	// Accel is the accelerator the nodes run under: "kvm" or "tcg".
	Accel string
	// SOCKS5 is how tools outside this process reach the nodes.
	SOCKS5 SOCKS5
	// Files written for the user: the CA, the owner's client certificate
	// and key, and an env file to source.
	Files Files
	// Plan is what was decided before anything started.
	Plan *Plan
	// Nodes, in index order.
	Nodes []*Node
	// RestoredFrom is the snapshot the cluster was restored from ("" for a
	// cluster that booted).
	RestoredFrom string

	opts    Options
	host    hostTools
	inputs  diskInputs
	sockDir string
	net     *client.Switch // the cluster's switch process and its control client
	tpmCA   *swtpm.CA
	// manifest is the snapshot's, for a restore.
	manifest *Manifest

	// life ends at Close (cause ErrClosed): lifecycle calls in flight stop.
	life    context.Context
	endLife context.CancelCauseFunc

	progressMu sync.Mutex // serializes Options.Progress calls
	mu         sync.Mutex
	conns      map[connKey]*grpc.ClientConn
	undo       []undoFunc
	closed     bool
}

// SOCKS5 describes the switch's SOCKS5 proxy on the host's loopback.
type SOCKS5 struct {
	Address            string // host:port on 127.0.0.1
	Username, Password string
	CredentialsFile    string // "username:password", mode 0600
}

// Files are the paths of what the user needs to call the nodes.
type Files struct {
	CA, ClientCert, ClientKey string
	// Env is a shell file exporting QCLUSTER_* variables and ALL_PROXY.
	Env string
}

type undoFunc struct {
	what string
	fn   func() error
}

type connKey struct {
	node, port int
}

// NodeError is a node that failed to come up or stopped unexpectedly. Its
// message is one line; the console tail is kept for whoever prints it.
type NodeError struct {
	Node        string
	Err         error
	SerialLog   string
	ConsoleTail []string // the last lines of the serial console, oldest first
}

func (e *NodeError) Error() string {
	if e.SerialLog != "" {
		return fmt.Sprintf("%s: %v (serial log: %s)", e.Node, e.Err, e.SerialLog)
	}
	return fmt.Sprintf("%s: %v", e.Node, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }

// ErrClosed is returned by methods of a closed cluster.
var ErrClosed = errors.New("cluster is closed")

// consoleTailLines is how much console an error carries.
const consoleTailLines = 20

// Launch starts a cluster as opts describe and returns once every node is
// ready, or fails with everything it started torn down. ctx bounds the launch
// only; the cluster lives until Close.
func Launch(ctx context.Context, opts Options) (*Cluster, error) {
	var m *Manifest
	if opts.Snapshot != "" {
		var err error
		if opts.Snapshot, err = filepath.Abs(opts.Snapshot); err != nil {
			return nil, err
		}
		if m, err = ReadManifest(opts.Snapshot); err != nil {
			return nil, err
		}
		if opts, err = applyManifest(opts, m); err != nil {
			return nil, err
		}
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c := &Cluster{Name: o.Name, opts: o, conns: map[connKey]*grpc.ClientConn{}, manifest: m, RestoredFrom: o.Snapshot}
	c.life, c.endLife = context.WithCancelCause(context.Background())
	type step struct {
		name string
		fn   func(context.Context) error
	}
	steps := []step{
		{"Checking host", c.checkHost},
		{"Preparing state", c.prepareState},
		{"Reading OS image", c.readImage},
		{"Synthesizing disks", c.synthesizeDisks},
		{"Manufacturing TPMs", c.manufactureTPMs},
		{"Starting network", c.startNetwork},
		{"Booting nodes", c.bootNodes},
		{"Waiting for nodes", c.waitReady},
	}
	if m != nil {
		steps = []step{
			{"Checking host", c.checkHost},
			{"Checking snapshot", c.checkSnapshot},
			{"Preparing state", c.prepareState},
			{"Copying disks, starting network", c.prepareNodes},
			{"Restoring nodes", c.restoreNodes},
			{"Waiting for nodes", c.waitReady},
		}
	}
	for _, s := range steps {
		start := time.Now()
		c.progress(Event{Kind: StepStarted, Step: s.name})
		err := s.fn(ctx)
		if err == nil {
			err = ctx.Err()
		}
		c.progress(Event{Kind: StepDone, Step: s.name, Elapsed: time.Since(start), Err: err})
		if err != nil {
			// A node's error names the node; every other one the step.
			switch {
			case isNodeError(err):
			case errors.Is(ctx.Err(), context.DeadlineExceeded):
				err = fmt.Errorf("%s: %w (launch timeout %s)", strings.ToLower(s.name), ctx.Err(), o.Timeout)
			case ctx.Err() != nil:
				err = fmt.Errorf("%s: %w", strings.ToLower(s.name), ctx.Err())
			default:
				err = fmt.Errorf("%s: %w", strings.ToLower(s.name), err)
			}
			if cerr := c.Close(); cerr != nil {
				o.Logger.Warn("teardown after failed launch", "err", cerr)
			}
			return nil, err
		}
	}
	return c, nil
}

func isNodeError(err error) bool {
	var ne *NodeError
	return errors.As(err, &ne)
}

func (c *Cluster) progress(e Event) {
	if c.opts.Progress != nil {
		c.progressMu.Lock()
		defer c.progressMu.Unlock()
		c.opts.Progress(e)
	}
}

// onUndo registers fn to run at Close, in reverse order of registration.
func (c *Cluster) onUndo(what string, fn func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.undo = append(c.undo, undoFunc{what, fn})
}

// forEachNode runs fn for every node at once and returns the first error.
func (c *Cluster) forEachNode(ctx context.Context, fn func(context.Context, *Node) error) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, n := range c.Nodes {
		g.Go(func() error { return fn(ctx, n) })
	}
	return g.Wait()
}

// TPMCA is the CA that issued every node's TPM endorsement key certificate
// (nil when no node has a TPM).
func (c *Cluster) TPMCA() *swtpm.CA { return c.tpmCA }

// DialContext connects to an address inside the cluster's network (a node's
// address or name and a port) through the switch.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.net == nil {
		return nil, fmt.Errorf("dial %s: network not started", addr)
	}
	return c.net.DialContext(ctx, network, addr)
}

// ClientTLS returns the owner's mutual-TLS configuration for calling the
// node named serverName.
func (c *Cluster) ClientTLS(serverName string) *tls.Config {
	return clientTLS(c.Plan.PKI, c.Plan.Owner, serverName)
}

// GRPC returns a client connection to port on node i, with mutual TLS as the
// cluster's owner, through the switch. Connections are cached until the node
// restarts or the cluster closes; do not close them.
func (c *Cluster) GRPC(i, port int) (*grpc.ClientConn, error) {
	if i < 0 || i >= len(c.Nodes) {
		return nil, fmt.Errorf("node %d: the cluster has nodes 0 to %d", i, len(c.Nodes)-1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if conn, ok := c.conns[connKey{i, port}]; ok {
		return conn, nil
	}
	n := c.Nodes[i]
	conn, err := c.dialGRPCLocked(n, port, credentials.NewTLS(c.ClientTLS(n.Name)))
	if err != nil {
		return nil, err
	}
	c.conns[connKey{i, port}] = conn
	return conn, nil
}

func (c *Cluster) dialGRPC(n *Node, port int, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dialGRPCLocked(n, port, creds)
}

func (c *Cluster) dialGRPCLocked(n *Node, port int, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	target := net.JoinHostPort(n.Address.String(), fmt.Sprint(port))
	conn, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return c.DialContext(ctx, "tcp", addr)
		}),
		// gRPC's default reconnect backoff grows to 2 minutes; a booting
		// node wants to be found within a probe interval of coming up.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("%s: grpc client for %s: %w", n.Name, target, err)
	}
	return conn, nil
}

// dropConns closes the cached connections to node i (it restarted).
func (c *Cluster) dropConns(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, conn := range c.conns {
		if k.node == i {
			conn.Close()
			delete(c.conns, k)
		}
	}
}

// Close stops every node and helper and removes the state directory unless
// Options.KeepState. It is safe to call more than once. Lifecycle calls in
// flight (Start, Stop, Reboot, Kill) end with ErrClosed, and no node starts
// once Close has begun.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.endLife(ErrClosed)
	undo := c.undo
	c.undo = nil
	conns := c.conns
	c.conns = map[connKey]*grpc.ClientConn{}
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		if err := undo[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", undo[i].what, err))
		}
	}
	return errors.Join(errs...)
}

// removeAll is os.RemoveAll for undo lists.
func removeAll(dir string) func() error {
	return func() error { return os.RemoveAll(dir) }
}

// nodeDir is where a node's state lives.
func (c *Cluster) nodeDir(n *NodePlan) string { return filepath.Join(c.StateDir, n.Name) }
