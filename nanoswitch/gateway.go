package nanoswitch

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/containers/gvisor-tap-vsock/pkg/services/forwarder"
	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// The gateway is a gVisor network stack attached to the switch as one more
// port, GatewayPort. It owns the gateway address and serves DHCP and DNS;
// host connections (DialContext, SOCKS5) start from it. Its link endpoint is
// gvisor-tap-vsock's tap.LinkEndpoint, which hands outgoing frames to a
// NetworkSwitch (here: the forwarding core) and refuses to let the stack
// answer ARP for addresses other than its own.

// nicID is the stack's only NIC.
const nicID tcpip.NICID = 1

// mtu of the cluster network: plain Ethernet.
const mtu = 1500

// startStack creates the gateway's stack and port.
func (s *Switch) startStack() error {
	gw, err := s.newPort(GatewayPort, gatewayMAC)
	if err != nil {
		return err
	}
	gw.gw = true
	if err := s.addPort(gw); err != nil {
		return err
	}
	s.gw = gw
	ep, err := tap.NewLinkEndpoint(false, mtu, gatewayMAC.String(), s.cfg.Gateway.String(), nil)
	if err != nil {
		return err
	}
	ep.Connect(gatewayWire{s})
	st := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	s.stack = st
	if terr := st.CreateNIC(nicID, ep); terr != nil {
		return fmt.Errorf("create nic: %s", terr)
	}
	if terr := st.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(s.cfg.Gateway.As4()).WithPrefix(),
	}, stack.AddressProperties{}); terr != nil {
		return fmt.Errorf("add address %s: %s", s.cfg.Gateway, terr)
	}
	subnet, err := tcpip.NewSubnet(tcpip.AddrFrom4(s.cfg.Subnet.Addr().As4()),
		tcpip.MaskFromBytes(net4Mask(s.cfg.Subnet.Bits())))
	if err != nil {
		return err
	}
	st.SetRouteTable([]tcpip.Route{{Destination: subnet, NIC: nicID}})
	if s.cfg.AllowOutbound {
		s.allowOutbound(st, subnet)
	}
	// Hermetic: the stack takes only packets for its own address. Packets
	// that guests route through it to anywhere else are dropped, as by a
	// firewall, and connections to closed gateway ports are reset.
	err = gw.attachLink(nil, func(bufs [][]byte) error {
		for _, b := range bufs {
			frame := b[hdrLen:]
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
				Payload: buffer.MakeWithData(frame[ethLen:]),
			})
			ep.DeliverNetworkPacket(tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(frame[12:14])), pkt)
			pkt.DecRef()
		}
		return nil
	})
	s.gwLink = gw.cur.Load()
	return err
}

// allowOutbound lets guests reach the host's networks through the stack:
// it takes packets for any address (promiscuous, spoofing) and proxies TCP
// and UDP flows to addresses outside the subnet with the host's sockets,
// using gvisor-tap-vsock's forwarders. Flows to subnet addresses that are
// not the gateway's are refused.
func (s *Switch) allowOutbound(st *stack.Stack, subnet tcpip.Subnet) {
	st.SetPromiscuousMode(nicID, true)
	st.SetSpoofing(nicID, true)
	st.SetRouteTable([]tcpip.Route{
		{Destination: subnet, NIC: nicID},
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
	})
	var natMu sync.Mutex
	nat := map[tcpip.Address]tcpip.Address{}
	tcpFwd := forwarder.TCP(st, nat, &natMu, false)
	udpFwd := forwarder.UDP(st, nat, &natMu, false)
	inside := func(id stack.TransportEndpointID) bool { return subnet.Contains(id.LocalAddress) }
	st.SetTransportProtocolHandler(tcp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		return !inside(id) && tcpFwd.HandlePacket(id, pkt)
	})
	st.SetTransportProtocolHandler(udp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		return !inside(id) && udpFwd.HandlePacket(id, pkt)
	})
}

func net4Mask(bits int) []byte {
	m := make([]byte, 4)
	binary.BigEndian.PutUint32(m, ^uint32(0)<<(32-bits))
	return m
}

// gatewayWire takes the frames the gateway's stack sends and switches them
// as frames from the gateway's port.
type gatewayWire struct{ s *Switch }

func (g gatewayWire) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	n := pkt.Size()
	buf := make([]byte, hdrLen, hdrLen+n)
	binary.BigEndian.PutUint32(buf, uint32(n))
	for _, b := range pkt.AsSlices() {
		buf = append(buf, b...)
	}
	g.s.gw.received(buf)
}
