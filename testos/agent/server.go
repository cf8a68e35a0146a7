package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/testos/api"
)

// grpcServer is the running server.
type grpcServer struct {
	srv    *grpc.Server
	health *health.Server
}

// serve starts gRPC on lis (the listen port; loopback in tests), marks
// every service SERVING and the node ready.
func (n *node) serve(ctx context.Context, log *slog.Logger, lis net.Listener) (*grpcServer, error) {
	serverTLS, clientTLS, err := tlsConfigs(n.cfg)
	if err != nil {
		lis.Close()
		return nil, err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	api.RegisterNodeServiceServer(srv, &nodeServer{n: n})
	api.RegisterManagementServer(srv, &managementServer{n: n})
	// Reflection lets grpcurl and other generic clients list and call the
	// services without the .proto (behind the same mutual TLS).
	reflection.Register(srv)
	services := []string{api.NodeService_ServiceDesc.ServiceName, api.Management_ServiceDesc.ServiceName}

	self := func() *api.JoinRequest {
		return &api.JoinRequest{Name: n.cfg.nodeName, Address: n.cfg.advertiseAddr(n.net.primary()), NodeId: n.storage.nodeID,
			BootCount: n.storage.bootCount, ClusterName: n.cfg.clusterName}
	}
	switch n.cfg.role {
	case api.Role_ROLE_BOOTSTRAP:
		s := self()
		n.roster = newRoster(time.Now, n.cfg.clusterName, rosterEntry{name: s.Name, address: s.Address, nodeID: s.NodeId, bootCount: s.BootCount})
		api.RegisterMembershipServer(srv, &membershipServer{r: n.roster})
		services = append(services, api.Membership_ServiceDesc.ServiceName)
	case api.Role_ROLE_MEMBER:
		n.member = &memberState{cfg: n.cfg, tlsConfig: clientTLS, self: self}
	}
	// Written before Serve starts, which orders it before every handler
	// that reads it (Status, without a lock).
	n.readyMillis = uptime().Milliseconds()
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			fatal(fmt.Errorf("grpc: serve on %s: %w", lis.Addr(), err))
		}
	}()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, s := range services {
		hs.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	log.Info("grpc serving", "addr", lis.Addr(), "services", services, "mtls", n.cfg.caPEM != "")
	return &grpcServer{srv: srv, health: hs}, nil
}

// stop marks the node NOT_SERVING and stops gracefully (pending RPCs, such
// as the Reboot that asked for this, finish first), or hard after 5 s.
func (g *grpcServer) stop() {
	g.health.Shutdown()
	done := make(chan struct{})
	go func() { g.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.srv.Stop()
	}
}

// advertiseAddr is host:port members give the leader ("" without address).
func (c *config) advertiseAddr(ip string) string {
	if ip == "" {
		return ""
	}
	return net.JoinHostPort(ip, fmt.Sprint(c.listenPort))
}

type nodeServer struct {
	api.UnimplementedNodeServiceServer
	n *node
}

func (s *nodeServer) Status(_ context.Context, req *api.StatusRequest) (*api.StatusResponse, error) {
	n := s.n
	tpm := n.tpm
	if req.GetTpmLive() && tpm.GetPresent() {
		tpm = readTPM(n.log, tpmDevice)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	cmdline, _ := os.ReadFile("/proc/cmdline")
	host, _ := os.Hostname()
	r := &api.StatusResponse{
		NodeName:      n.cfg.nodeName,
		ClusterName:   n.cfg.clusterName,
		Role:          n.cfg.role,
		NodeId:        n.storage.nodeID,
		Slot:          n.storage.slot,
		SlotSource:    n.storage.slotSource,
		LoaderEntry:   n.storage.entry,
		BootCount:     n.storage.bootCount,
		UptimeMs:      uptime().Milliseconds(),
		KernelRelease: unix.ByteSliceToString(uts.Release[:]),
		KernelVersion: unix.ByteSliceToString(uts.Version[:]),
		KernelCmdline: strings.TrimSpace(string(cmdline)),
		ProductInfo:   n.product,
		Partitions:    n.storage.parts,
		Verity:        n.storage.verity,
		Data:          n.storage.dataStats(),
		Tpm:           tpm,
		Addresses:     addresses(),
		Hostname:      host,
		ReadyMs:       n.readyMillis,
		UnixNanos:     time.Now().UnixNano(),
	}
	switch {
	case n.member != nil:
		r.Membership = n.member.status()
	default:
		r.Membership = &api.MembershipStatus{Joined: true}
	}
	return r, nil
}

func (s *nodeServer) WriteDataFile(_ context.Context, req *api.WriteDataFileRequest) (*api.WriteDataFileResponse, error) {
	p, err := s.dataPath(req.GetPath())
	if err != nil {
		return nil, err
	}
	st := &s.n.storage
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := atomicfile.WriteDurable(p, req.GetContent(), 0o644); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &api.WriteDataFileResponse{}, nil
}

func (s *nodeServer) ReadDataFile(_ context.Context, req *api.ReadDataFileRequest) (*api.ReadDataFileResponse, error) {
	p, err := s.dataPath(req.GetPath())
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &api.ReadDataFileResponse{Content: b}, nil
}

// dataPath checks a client path and that DATA is mounted. Paths are clean
// and relative, and resolved without following symlinks out of DATA.
func (s *nodeServer) dataPath(p string) (string, error) {
	if s.n.storage.data == nil || !s.n.storage.data.Mounted {
		return "", status.Error(codes.FailedPrecondition, "the data partition is not mounted")
	}
	full, err := dataPath(dataMount, p)
	if err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	// Refuse symlinks anywhere on the way (DATA is written only through
	// this API, which makes none, but a test may plant one).
	for d := full; d != dataMount && d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Lstat(d); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return "", status.Errorf(codes.InvalidArgument, "path %q: %s is a symlink", p, d)
		}
	}
	return full, nil
}

type managementServer struct {
	api.UnimplementedManagementServer
	n *node
}

func (s *managementServer) Reboot(context.Context, *api.RebootRequest) (*api.RebootResponse, error) {
	return &api.RebootResponse{}, s.request(unix.LINUX_REBOOT_CMD_RESTART)
}

func (s *managementServer) PowerOff(context.Context, *api.PowerOffRequest) (*api.PowerOffResponse, error) {
	return &api.PowerOffResponse{}, s.request(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// Restored steps the wall clock to the host's and mixes in fresh entropy:
// after a restore the clock carries on from the snapshot's moment and the
// random pool is the template's.
func (s *managementServer) Restored(_ context.Context, req *api.RestoredRequest) (*api.RestoredResponse, error) {
	if len(req.GetEntropy()) > 512 {
		return nil, status.Errorf(codes.InvalidArgument, "entropy: %d bytes, at most 512", len(req.GetEntropy()))
	}
	if req.GetUnixNanos() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "unix_nanos: want the host's wall clock")
	}
	if len(req.GetEntropy()) > 0 {
		if err := addEntropy(req.GetEntropy()); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &now); err != nil {
		return nil, status.Errorf(codes.Internal, "read clock: %v", err)
	}
	to := unix.NsecToTimespec(req.GetUnixNanos())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &to); err != nil {
		return nil, status.Errorf(codes.Internal, "set clock: %v", err)
	}
	stepped := req.GetUnixNanos() - now.Nano()
	// On the console too: a restored node prints nothing else, and its
	// console history starts here.
	s.n.log.Info("qcluster: restored from a snapshot", "clock_stepped", time.Duration(stepped), "entropy_bytes", len(req.GetEntropy()))
	return &api.RestoredResponse{SteppedNanos: stepped}, nil
}

// request hands the power change to the main loop, which acts once this
// RPC's reply has gone out.
func (s *managementServer) request(cmd int) error {
	select {
	case s.n.powerReq <- cmd:
		return nil
	default:
		return status.Error(codes.FailedPrecondition, "a reboot or power-off is already under way")
	}
}
