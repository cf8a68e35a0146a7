package nanoswitch

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// leaseTable is an immutable set of static leases, indexed three ways. The
// switch replaces it whole in AddLease.
type leaseTable struct {
	byMAC  map[macKey]Lease
	byName map[string]Lease
	byAddr map[netip.Addr]Lease
}

// AddLease adds a static lease. The lease's MAC, address and hostname must
// not belong to another lease; adding the same lease again does nothing.
func (s *Switch) AddLease(l Lease) error {
	if err := s.cfg.checkLease(l); err != nil {
		return fmt.Errorf("add lease: %w", err)
	}
	l.MAC = slices.Clone(l.MAC)
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	old := s.leases.Load()
	k := keyOf(l.MAC)
	o, ok := old.byMAC[k]
	if ok && o.Addr == l.Addr && o.Hostname == l.Hostname {
		return nil
	}
	if !ok {
		o, ok = old.byName[l.Hostname]
	}
	if !ok {
		o, ok = old.byAddr[l.Addr]
	}
	if ok {
		return fmt.Errorf("add lease %s %s %s: clashes with lease %s %s %s", l.Hostname, l.MAC, l.Addr, o.Hostname, o.MAC, o.Addr)
	}
	t := &leaseTable{
		byMAC:  maps.Clone(old.byMAC),
		byName: maps.Clone(old.byName),
		byAddr: maps.Clone(old.byAddr),
	}
	if t.byMAC == nil {
		t.byMAC, t.byName, t.byAddr = map[macKey]Lease{}, map[string]Lease{}, map[netip.Addr]Lease{}
	}
	t.byMAC[k], t.byName[l.Hostname], t.byAddr[l.Addr] = l, l, l
	s.leases.Store(t)
	return nil
}

// Leases returns the static leases, sorted by address.
func (s *Switch) Leases() []Lease {
	out := slices.Collect(maps.Values(s.leases.Load().byMAC))
	slices.SortFunc(out, func(a, b Lease) int { return a.Addr.Compare(b.Addr) })
	return out
}

// The DHCP server (RFC 2131) hands out the static leases only: a client
// whose MAC has no lease is ignored. Its options: subnet mask (1), router
// (3), DNS server (6), host name (12), domain name (15), lease time (51),
// server identifier (54) and domain search list (119, RFC 3397). Replies
// are broadcast unless the client already has its address (renewal), which
// every client accepts.

const (
	dhcpServerPort = 67
	dhcpClientPort = 68
)

// startDHCP serves DHCP on the gateway's UDP port 67.
func (s *Switch) startDHCP() error {
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return errors.New(terr.String())
	}
	ep.SocketOptions().SetBroadcast(true)
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Port: dhcpServerPort}); terr != nil {
		ep.Close()
		return fmt.Errorf("bind udp port %d: %s", dhcpServerPort, terr)
	}
	conn := gonet.NewUDPConn(&wq, ep)
	s.services = append(s.services, conn.Close)
	return s.spawn(func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			req, err := dhcpv4.FromBytes(buf[:n])
			if err != nil {
				s.cfg.Logger.Debug("dhcp: malformed request", "err", err)
				continue
			}
			reply := s.dhcpReply(req)
			if reply == nil {
				continue
			}
			to := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpClientPort}
			if !req.ClientIPAddr.IsUnspecified() && req.ClientIPAddr != nil {
				to.IP = req.ClientIPAddr
			}
			if _, err := conn.WriteTo(reply.ToBytes(), to); err != nil {
				s.cfg.Logger.Warn("dhcp: reply failed", "mac", req.ClientHWAddr.String(), "err", err)
			}
		}
	})
}

// dhcpReply answers a DHCP request, or returns nil if it gets no answer.
func (s *Switch) dhcpReply(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil
	}
	mt := req.MessageType()
	lease, ok := s.leases.Load().byMAC[keyOf(req.ClientHWAddr)]
	if !ok {
		if _, seen := s.strangers.LoadOrStore(keyOf(req.ClientHWAddr), true); !seen {
			s.cfg.Logger.Info("dhcp: no lease for this MAC, ignoring it", "mac", req.ClientHWAddr.String(), "type", mt)
		}
		return nil
	}
	reply, err := dhcpv4.NewReplyFromRequest(req)
	if err != nil {
		return nil
	}
	gw := net.IP(s.cfg.Gateway.AsSlice())
	reply.ServerIPAddr = gw
	reply.UpdateOption(dhcpv4.OptServerIdentifier(gw))
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		reply.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
	case dhcpv4.MessageTypeRequest:
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		sid := req.ServerIdentifier()
		if sid != nil && !sid.Equal(gw) {
			return nil // the client chose another server
		}
		if !want.Equal(net.IP(lease.Addr.AsSlice())) {
			s.cfg.Logger.Info("dhcp: NAK", "mac", req.ClientHWAddr.String(), "requested", want, "lease", lease.Addr)
			nak, err := dhcpv4.NewReplyFromRequest(req,
				dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)))
			if err != nil {
				return nil
			}
			return nak
		}
		reply.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		s.cfg.Logger.Info("dhcp: ACK", "mac", req.ClientHWAddr.String(), "addr", lease.Addr, "host", lease.Hostname)
	case dhcpv4.MessageTypeInform:
		reply.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
		s.addDHCPOptions(reply, lease)
		return reply // no address in an INFORM's ACK (RFC 2131 4.3.5)
	default: // RELEASE, DECLINE: static leases do not change
		return nil
	}
	reply.YourIPAddr = net.IP(lease.Addr.AsSlice())
	reply.UpdateOption(dhcpv4.OptIPAddressLeaseTime(s.cfg.LeaseTime))
	s.addDHCPOptions(reply, lease)
	return reply
}

func (s *Switch) addDHCPOptions(reply *dhcpv4.DHCPv4, lease Lease) {
	gw := net.IP(s.cfg.Gateway.AsSlice())
	reply.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(s.cfg.Subnet.Bits(), 32)))
	reply.UpdateOption(dhcpv4.OptRouter(gw))
	reply.UpdateOption(dhcpv4.OptDNS(gw))
	reply.UpdateOption(dhcpv4.OptHostName(lease.Hostname))
	reply.UpdateOption(dhcpv4.OptDomainName(s.cfg.Domain))
	reply.UpdateOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: []string{s.cfg.Domain}}))
}
