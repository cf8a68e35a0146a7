package nanoswitch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Sentinels of DialContext (and of the SOCKS5 server's refusals).
var (
	// ErrNotCluster: the address is not one a node can have: outside the
	// subnet, the gateway's own, or a name outside the cluster's domain.
	ErrNotCluster = errors.New("not an address of the cluster")
	// ErrUnknownHost: a name in the cluster's domain that no lease has.
	ErrUnknownHost = errors.New("no such host in the cluster")
)

// clusterAddr resolves host (an IPv4 address, or a lease's host name, short
// or qualified) to an address in the subnet that a node may have.
func (s *Switch) clusterAddr(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if !s.cfg.usable(a) || a == s.cfg.Gateway {
			return netip.Addr{}, fmt.Errorf("%s: %w %s", host, ErrNotCluster, s.cfg.Subnet)
		}
		return a, nil
	}
	name := lowerTrimDot(host)
	short, inZone := strings.CutSuffix(name, "."+s.cfg.Domain)
	if !inZone && strings.Contains(name, ".") {
		return netip.Addr{}, fmt.Errorf("%s: %w (domain %s)", host, ErrNotCluster, s.cfg.Domain)
	}
	l, ok := s.leases.Load().byName[short]
	if !ok {
		return netip.Addr{}, fmt.Errorf("%s: %w", host, ErrUnknownHost)
	}
	return l.Addr, nil
}

// DialContext connects to address inside the cluster's network from the
// gateway: "10.42.0.10:7443", "node0:7443" or "node0.<Domain>:7443".
// network is "tcp" or "udp" (IPv4 only). Addresses outside the cluster are
// refused with ErrNotCluster, unknown names with ErrUnknownHost. Connection
// failures are *net.OpError wrapping the errno a kernel would give
// (ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT). Faults between a node and
// GatewayPort apply to these connections. It has the signature of
// net.Dialer.DialContext, for grpc.WithContextDialer and http.Transport.
func (s *Switch) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	fail := func(err error) (net.Conn, error) {
		return nil, fmt.Errorf("nanoswitch: dial %s %s: %w", network, address, err)
	}
	if s.isClosed() {
		return fail(ErrClosed)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return fail(err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return fail(fmt.Errorf("port %q: want a number from 1 to 65535", portStr))
	}
	a, err := s.clusterAddr(host)
	if err != nil {
		return fail(err)
	}
	to := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(a.As4()), Port: uint16(port)}
	switch network {
	case "tcp", "tcp4":
		return s.dialTCP(ctx, to)
	case "udp", "udp4":
		c, err := gonet.DialUDP(s.stack, nil, &to, ipv4.ProtocolNumber)
		if err != nil {
			return fail(err)
		}
		return c, nil
	}
	return fail(fmt.Errorf("network %q: want tcp or udp", network))
}

// dialTCP opens a TCP connection from the gateway's stack. It is
// gonet.DialContextTCP with the stack's errors kept as errnos.
func (s *Switch) dialTCP(ctx context.Context, to tcpip.FullAddress) (net.Conn, error) {
	raddr := &net.TCPAddr{IP: net.IP(to.Addr.AsSlice()), Port: int(to.Port)}
	opErr := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Addr: raddr, Err: err} }
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, opErr(errors.New(terr.String()))
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(to)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, opErr(ctx.Err())
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(os.NewSyscallError("connect", errnoOf(terr)))
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// errnoOf translates the stack's connect errors to errnos.
func errnoOf(terr tcpip.Error) error {
	switch terr.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrHostUnreachable, *tcpip.ErrHostDown:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		return syscall.ENETUNREACH
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED
	}
	return errors.New(terr.String())
}
