// Package control serves and calls the control API of a running cluster
// (package control/api): the process that launched a cluster serves it on
// a UNIX socket (mode 0600) over its *cluster.Cluster, and registers the
// cluster by name in a per-user Registry, so that the cluster command's
// subcommands in other terminals find it and act on it: status, teardown,
// node lifecycle, network faults, serial consoles, connections to node
// ports and log bundles.
//
// Limits: one client's lifecycle call holds that node until it returns
// (the cluster serializes them per node); a console viewer that falls
// behind loses output rather than slowing the guest; snapshots are not
// served yet.
package control

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/control/api"
)

// Info is what the launcher knows about a cluster beyond *cluster.Cluster.
type Info struct {
	// Ready is the readiness probe as the user gave it ("testos", "tcp:22").
	Ready string
	// Started is when the launch began; LaunchTook how long it took.
	Started    time.Time
	LaunchTook time.Duration
}

// Server serves the control API for one cluster.
type Server struct {
	api.UnimplementedControlServer

	c    *cluster.Cluster
	info Info
	down func()
	log  *slog.Logger

	grpc *grpc.Server
	ln   net.Listener
	wg   sync.WaitGroup
	once sync.Once
}

// Options configure a Server.
type Options struct {
	Info Info
	// Down is called when a client asks for teardown (cluster down); the
	// launcher then stops the server and closes the cluster. Required.
	Down func()
	// Logger receives one line per failed call. Default: discarded.
	Logger *slog.Logger
}

// Serve starts serving c's control API on a new UNIX socket at path
// (mode 0600; a stale socket file is replaced) and returns at once.
func Serve(c *cluster.Cluster, path string, o Options) (*Server, error) {
	if o.Down == nil {
		return nil, errors.New("control: Options.Down is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(path) > 107 {
		return nil, fmt.Errorf("control socket %s: longer than a UNIX socket path may be (107 bytes)", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The directory is private already; the socket is too.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{c: c, info: o.Info, down: o.Down, log: o.Logger, ln: ln, grpc: grpc.NewServer()}
	api.RegisterControlServer(s.grpc, s)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// ErrServerStopped: Close came before Serve started, a clean end.
		if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Warn("control: serve", "err", err)
		}
	}()
	return s, nil
}

// Addr is the socket's path.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops serving: calls in progress end (consoles and connections
// too) and the socket file is removed.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.grpc.Stop()
		s.wg.Wait()
	})
	return nil
}

// node checks a node index from a request.
func (s *Server) node(i int32) (*cluster.Node, error) {
	if i < 0 || int(i) >= len(s.c.Nodes) {
		return nil, status.Errorf(codes.InvalidArgument, "node %d: the cluster has %s", i, NodeRange(len(s.c.Nodes)))
	}
	return s.c.Nodes[i], nil
}

// NodeRange names the valid nodes of a cluster of n: "node0 to node2".
func NodeRange(n int) string {
	switch n {
	case 0:
		return "no nodes"
	case 1:
		return "node0 only"
	}
	return fmt.Sprintf("node0 to node%d", n-1)
}

func nodeStatus(n *cluster.Node) *api.NodeStatus {
	t := n.Timings()
	ns := &api.NodeStatus{
		Index: int32(n.Index), Name: n.Name, Fqdn: n.FQDN, Address: n.Address.String(), Mac: n.MAC.String(),
		State: n.State().String(), Tpm: !n.Options.NoTPM,
		DiskReadySeconds: t.DiskReady.Seconds(), QemuStartedSeconds: t.QEMUStarted.Seconds(), ReadySeconds: t.Ready.Seconds(),
		SerialLog: n.SerialLog, CommandLine: n.CommandLineFile,
	}
	if n.EKCertificate != nil {
		ns.TpmEkCertificateSha256 = fmt.Sprintf("%x", sha256.Sum256(n.EKCertificate))
	}
	return ns
}

// Status describes the cluster.
func (s *Server) Status(context.Context, *api.StatusRequest) (*api.ClusterStatus, error) {
	return StatusOf(s.c, s.info), nil
}

// StatusOf describes c as Status does, for the launcher's own summary.
func StatusOf(c *cluster.Cluster, info Info) *api.ClusterStatus {
	st := &api.ClusterStatus{
		Name: c.Name, StateDir: c.StateDir, LogDir: c.LogDir, Accelerator: c.Accel,
		Pid: int64(os.Getpid()), StartedUnix: info.Started.Unix(), LaunchSeconds: info.LaunchTook.Seconds(),
		Ready: info.Ready, ProxyAddress: c.SOCKS5.Address, CredentialsFile: c.SOCKS5.CredentialsFile,
		CaCert: c.Files.CA, ClientCert: c.Files.ClientCert, ClientKey: c.Files.ClientKey, EnvFile: c.Files.Env,
	}
	for _, n := range c.Nodes {
		st.Nodes = append(st.Nodes, nodeStatus(n))
	}
	return st
}

// Down asks the launcher to tear down.
func (s *Server) Down(context.Context, *api.DownRequest) (*api.DownResponse, error) {
	s.log.Info("control: teardown asked for")
	s.down()
	return &api.DownResponse{}, nil
}

// lifecycle runs one node action.
func (s *Server) lifecycle(ctx context.Context, what string, i int32, fn func(context.Context, int) error) (*api.NodeResponse, error) {
	n, err := s.node(i)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := fn(ctx, n.Index); err != nil {
		s.log.Warn("control: "+what, "node", n.Name, "err", err)
		return nil, toStatus(err)
	}
	return &api.NodeResponse{Node: nodeStatus(n), Seconds: time.Since(start).Seconds()}, nil
}

func (s *Server) Reboot(ctx context.Context, r *api.NodeRequest) (*api.NodeResponse, error) {
	return s.lifecycle(ctx, "reboot", r.Node, s.c.Reboot)
}

func (s *Server) Stop(ctx context.Context, r *api.NodeRequest) (*api.NodeResponse, error) {
	return s.lifecycle(ctx, "stop", r.Node, s.c.Stop)
}

func (s *Server) Start(ctx context.Context, r *api.NodeRequest) (*api.NodeResponse, error) {
	return s.lifecycle(ctx, "start", r.Node, s.c.Start)
}

func (s *Server) Kill(ctx context.Context, r *api.NodeRequest) (*api.NodeResponse, error) {
	return s.lifecycle(ctx, "kill", r.Node, func(_ context.Context, i int) error { return s.c.Kill(i) })
}

func (s *Server) Partition(ctx context.Context, r *api.PartitionRequest) (*api.FaultResponse, error) {
	if _, err := s.node(r.A); err != nil {
		return nil, err
	}
	if _, err := s.node(r.B); err != nil {
		return nil, err
	}
	if r.A == r.B {
		return nil, status.Errorf(codes.InvalidArgument, "partition node%d from itself: name two different nodes", r.A)
	}
	return &api.FaultResponse{}, toStatus(s.c.Partition(ctx, int(r.A), int(r.B)))
}

func (s *Server) Isolate(ctx context.Context, r *api.NodeRequest) (*api.FaultResponse, error) {
	if _, err := s.node(r.Node); err != nil {
		return nil, err
	}
	return &api.FaultResponse{}, toStatus(s.c.Isolate(ctx, int(r.Node)))
}

func (s *Server) Degrade(ctx context.Context, r *api.DegradeRequest) (*api.FaultResponse, error) {
	if _, err := s.node(r.Node); err != nil {
		return nil, err
	}
	if r.LossPercent < 0 || r.LossPercent > 100 || r.DelayMs < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "loss %g%%, delay %dms: want 0 to 100%% and a delay of 0 or more", r.LossPercent, r.DelayMs)
	}
	return &api.FaultResponse{}, toStatus(s.c.Degrade(ctx, int(r.Node), r.LossPercent, time.Duration(r.DelayMs)*time.Millisecond))
}

func (s *Server) Heal(ctx context.Context, _ *api.HealRequest) (*api.FaultResponse, error) {
	return &api.FaultResponse{}, toStatus(s.c.Heal(ctx))
}

// toStatus turns a cluster error into a gRPC status with its message on
// one line.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, cluster.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, strings.ReplaceAll(err.Error(), "\n", " | "))
}
