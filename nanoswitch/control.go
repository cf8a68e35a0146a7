package nanoswitch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/nanoswitch/api"
)

// The control API (nanoswitch/api) served on Config.ControlSocket: the same
// operations as the Switch's methods, for a switch in another process.

func (s *Switch) startControl() error {
	path := s.cfg.ControlSocket
	if path == "" {
		return nil
	}
	if len(path) > 107 {
		return fmt.Errorf("socket path %s is %d bytes, UNIX sockets allow 107", path, len(path))
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("%s exists and is not a socket", path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	g := grpc.NewServer(grpc.WaitForHandlers(true))
	api.RegisterSwitchServer(g, &controlServer{s: s})
	s.control, s.controlLn = g, ln
	return s.spawn(func() { _ = g.Serve(ln) })
}

type controlServer struct {
	api.UnimplementedSwitchServer
	s *Switch
}

// rpcError gives err the status code a caller can act on.
func rpcError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNoPort):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

func (c *controlServer) AddPort(_ context.Context, r *api.AddPortRequest) (*api.AddPortResponse, error) {
	var mac net.HardwareAddr
	if r.Mac != "" {
		var err error
		if mac, err = net.ParseMAC(r.Mac); err != nil {
			return nil, rpcError(fmt.Errorf("add port %s: %w", r.Name, err))
		}
	}
	path, err := c.s.AddPort(r.Name, mac)
	if err != nil {
		return nil, rpcError(err)
	}
	return &api.AddPortResponse{SocketPath: path}, nil
}

func (c *controlServer) AddLease(_ context.Context, r *api.Lease) (*api.Empty, error) {
	l, err := leaseFromAPI(r)
	if err == nil {
		err = c.s.AddLease(l)
	}
	return &api.Empty{}, rpcError(err)
}

func (c *controlServer) Leases(context.Context, *api.Empty) (*api.LeasesResponse, error) {
	resp := &api.LeasesResponse{}
	for _, l := range c.s.Leases() {
		resp.Leases = append(resp.Leases, &api.Lease{Mac: l.MAC.String(), Address: l.Addr.String(), Hostname: l.Hostname})
	}
	return resp, nil
}

func (c *controlServer) Ports(context.Context, *api.Empty) (*api.PortsResponse, error) {
	resp := &api.PortsResponse{}
	for _, p := range c.s.Ports() {
		mac := ""
		if p.MAC != nil {
			mac = p.MAC.String()
		}
		resp.Ports = append(resp.Ports, &api.Port{
			Name: p.Name, Mac: mac, SocketPath: p.SocketPath, Connected: p.Connected,
			RxFrames: p.RxFrames, RxBytes: p.RxBytes, TxFrames: p.TxFrames, TxBytes: p.TxBytes,
			RxDrops: p.RxDrops, TxDrops: p.TxDrops, FaultDrops: p.FaultDrops, Connects: p.Connects,
		})
	}
	return resp, nil
}

func (c *controlServer) faults(err error) (*api.Faults, error) {
	if err != nil {
		return nil, rpcError(err)
	}
	return faultsToAPI(c.s.Faults()), nil
}

func (c *controlServer) Partition(_ context.Context, r *api.PartitionRequest) (*api.Faults, error) {
	return c.faults(c.s.Partition(r.A, r.B))
}

func (c *controlServer) Isolate(_ context.Context, r *api.IsolateRequest) (*api.Faults, error) {
	return c.faults(c.s.Isolate(r.Port))
}

func (c *controlServer) Degrade(_ context.Context, r *api.DegradeRequest) (*api.Faults, error) {
	if r.DelayUs > uint64(time.Minute/time.Microsecond) {
		return nil, rpcError(fmt.Errorf("degrade %s: delay %dus: at most a minute", r.Port, r.DelayUs))
	}
	return c.faults(c.s.Degrade(r.Port, Degradation{
		LossPercent: r.LossPercent, Delay: time.Duration(r.DelayUs) * time.Microsecond}))
}

func (c *controlServer) Heal(context.Context, *api.Empty) (*api.Faults, error) {
	c.s.Heal()
	return c.faults(nil)
}

func (c *controlServer) GetFaults(context.Context, *api.Empty) (*api.Faults, error) {
	return c.faults(nil)
}

func leaseFromAPI(r *api.Lease) (Lease, error) {
	mac, err := net.ParseMAC(r.Mac)
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: %w", r.Hostname, err)
	}
	a, err := netip.ParseAddr(r.Address)
	if err != nil {
		return Lease{}, fmt.Errorf("lease %s: %w", r.Hostname, err)
	}
	return Lease{MAC: mac, Addr: a, Hostname: r.Hostname}, nil
}

func faultsToAPI(st FaultState) *api.Faults {
	f := &api.Faults{Isolated: st.Isolated}
	for _, p := range st.Partitions {
		f.Partitions = append(f.Partitions, &api.Faults_Pair{A: p[0], B: p[1]})
	}
	for _, name := range slices.Sorted(maps.Keys(st.Degraded)) {
		d := st.Degraded[name]
		f.Degraded = append(f.Degraded, &api.Faults_Degradation{
			Port: name, LossPercent: d.LossPercent, DelayUs: uint64(d.Delay / time.Microsecond)})
	}
	return f
}
