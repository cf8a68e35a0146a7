package client

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qcluster/qcluster/nanoswitch/api"
	"github.com/qcluster/qcluster/nanoswitch/hostproxy"
)

// Client controls a switch running in another process (the nanoswitch
// command): the switch's methods over the control socket (nanoswitch/api),
// and DialContext through its SOCKS5 server.
type Client struct {
	ready  Ready
	conn   *grpc.ClientConn
	api    api.SwitchClient
	dialer *hostproxy.SOCKSDialer // nil without SOCKS5
}

// Open connects to the switch described by a ready file. It does not wait:
// the ready file exists once the switch serves.
func Open(readyFile string) (*Client, error) {
	r, err := ReadReady(readyFile)
	if err != nil {
		return nil, fmt.Errorf("nanoswitch: open: %w", err)
	}
	c := &Client{ready: r}
	if r.SOCKSAddress != "" {
		user, pass, err := ReadCredentials(r.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("nanoswitch: open %s: %w", readyFile, err)
		}
		c.dialer = &hostproxy.SOCKSDialer{Server: r.SOCKSAddress, Username: user, Password: pass}
	}
	conn, err := grpc.NewClient("unix://"+r.ControlSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("nanoswitch: open %s: control socket: %w", readyFile, err)
	}
	c.conn, c.api = conn, api.NewSwitchClient(conn)
	return c, nil
}

// Ready returns the switch's ready file contents.
func (c *Client) Ready() Ready { return c.ready }

// Close closes the control connection; the switch keeps running.
func (c *Client) Close() error { return c.conn.Close() }

// DialContext connects to a cluster address ("node0:7443") through the
// switch's SOCKS5 server. A refusal wraps a *hostproxy.ReplyError.
func (c *Client) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if c.dialer == nil {
		return nil, fmt.Errorf("nanoswitch: dial %s: the switch has no SOCKS5 server", address)
	}
	conn, err := c.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("nanoswitch: dial %s %s: %w", network, address, err)
	}
	return conn, nil
}

// AddPort adds a port; see nanoswitch.Switch.AddPort.
func (c *Client) AddPort(ctx context.Context, name string, mac net.HardwareAddr) (string, error) {
	req := &api.AddPortRequest{Name: name}
	if mac != nil {
		req.Mac = mac.String()
	}
	resp, err := c.api.AddPort(ctx, req)
	if err != nil {
		return "", fmt.Errorf("nanoswitch: %w", err)
	}
	return resp.SocketPath, nil
}

// AddLease adds a static lease; see nanoswitch.Switch.AddLease.
func (c *Client) AddLease(ctx context.Context, l Lease) error {
	_, err := c.api.AddLease(ctx, &api.Lease{Mac: l.MAC.String(), Address: l.Addr.String(), Hostname: l.Hostname})
	if err != nil {
		return fmt.Errorf("nanoswitch: %w", err)
	}
	return nil
}

// Ports returns every port's status; see nanoswitch.Switch.Ports.
func (c *Client) Ports(ctx context.Context) ([]PortStatus, error) {
	resp, err := c.api.Ports(ctx, &api.Empty{})
	if err != nil {
		return nil, fmt.Errorf("nanoswitch: ports: %w", err)
	}
	var out []PortStatus
	for _, p := range resp.Ports {
		mac, _ := net.ParseMAC(p.Mac)
		out = append(out, PortStatus{Name: p.Name, MAC: mac, SocketPath: p.SocketPath, Connected: p.Connected,
			Counters: Counters{RxFrames: p.RxFrames, RxBytes: p.RxBytes, TxFrames: p.TxFrames, TxBytes: p.TxBytes,
				RxDrops: p.RxDrops, TxDrops: p.TxDrops, FaultDrops: p.FaultDrops, Connects: p.Connects}})
	}
	return out, nil
}

func (c *Client) faults(f *api.Faults, err error) (FaultState, error) {
	if err != nil {
		return FaultState{}, fmt.Errorf("nanoswitch: %w", err)
	}
	st := FaultState{Isolated: f.Isolated, Degraded: map[string]Degradation{}}
	for _, p := range f.Partitions {
		st.Partitions = append(st.Partitions, [2]string{p.A, p.B})
	}
	for _, d := range f.Degraded {
		st.Degraded[d.Port] = Degradation{LossPercent: d.LossPercent, Delay: time.Duration(d.DelayUs) * time.Microsecond}
	}
	return st, nil
}

// Partition stops traffic between ports a and b; see nanoswitch.Switch.Partition.
func (c *Client) Partition(ctx context.Context, a, b string) error {
	_, err := c.faults(c.api.Partition(ctx, &api.PartitionRequest{A: a, B: b}))
	return err
}

// Isolate cuts port a off from the other VM ports; see nanoswitch.Switch.Isolate.
func (c *Client) Isolate(ctx context.Context, a string) error {
	_, err := c.faults(c.api.Isolate(ctx, &api.IsolateRequest{Port: a}))
	return err
}

// Degrade makes port a lossy and slow; see nanoswitch.Switch.Degrade.
func (c *Client) Degrade(ctx context.Context, a string, d Degradation) error {
	if d.Delay < 0 {
		return fmt.Errorf("nanoswitch: degrade %s: negative delay %s", a, d.Delay)
	}
	_, err := c.faults(c.api.Degrade(ctx, &api.DegradeRequest{Port: a, LossPercent: d.LossPercent,
		DelayUs: uint64(d.Delay.Microseconds())}))
	return err
}

// Heal removes every fault.
func (c *Client) Heal(ctx context.Context) error {
	_, err := c.faults(c.api.Heal(ctx, &api.Empty{}))
	return err
}

// Faults returns the faults in force.
func (c *Client) Faults(ctx context.Context) (FaultState, error) {
	return c.faults(c.api.GetFaults(ctx, &api.Empty{}))
}
