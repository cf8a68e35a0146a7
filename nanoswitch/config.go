package nanoswitch

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Config describes one cluster's switch. The zero value is usable: a
// hermetic 10.42.0.0/24 network with no leases, no SOCKS5 and no capture.
type Config struct {
	// Name of the cluster, used in the default domain and in log lines.
	// Default: "qcluster".
	Name string
	// Domain that node names live under; DHCP hands it out as the domain
	// name and search list. Default: "<Name>.qcluster.test".
	Domain string
	// Subnet of the cluster network, IPv4 only. Default: 10.42.0.0/24.
	Subnet netip.Prefix
	// Gateway is the switch's own address in Subnet: DHCP server, DNS
	// server, default route and the source of host connections.
	// Default: the first host of Subnet (10.42.0.1).
	Gateway netip.Addr
	// Leases are the static DHCP leases, by MAC. A MAC without a lease gets
	// no address. More can be added later with AddLease.
	Leases []Lease
	// LeaseTime is the DHCP lease duration. Default: 12h.
	LeaseTime time.Duration
	// Dir holds the ports' UNIX sockets ("<port>.sock") and, if it is set,
	// the control socket. Keep it short: UNIX socket paths are limited to
	// 107 bytes. Default: a new temporary directory, removed by Close.
	Dir string
	// ControlSocket, if set, is a path where New serves the gRPC control
	// API (nanoswitch/api). Default: no control socket.
	ControlSocket string
	// AllowOutbound lets guests reach the host's networks: TCP and UDP to
	// addresses outside Subnet are proxied through the host's own sockets,
	// and DNS names outside Domain are resolved with the host's resolver.
	// Default false: the network is hermetic, guests reach only the
	// cluster's addresses, and unknown names get NXDOMAIN.
	AllowOutbound bool
	// SOCKS starts the host-access port on 127.0.0.1 with an ephemeral
	// port: SOCKS5 (RFC 1928, username/password authentication of RFC
	// 1929) and HTTP CONNECT (RFC 9110, Basic proxy authentication) with
	// the same credentials. Default false.
	SOCKS bool
	// SOCKSUsername and SOCKSPassword are its credentials. Default:
	// the cluster name and 32 random hex digits.
	SOCKSUsername, SOCKSPassword string
	// PcapDir, if set, receives one capture file per port,
	// "<port>.pcap" (libpcap format, Ethernet), recording what the port's
	// peer sent and what it was sent. Default: no capture.
	PcapDir string
	// QueueLength is the number of frames each port may have waiting to be
	// written to its peer; more are dropped and counted. Default: 512.
	QueueLength int
	// Logger receives the switch's log lines. Default: discarded.
	Logger *slog.Logger
}

// GatewayPort is the name of the port that connects the switch's own
// network stack (DHCP, DNS, host access). Faults can name it, e.g.
// Partition("node0", GatewayPort) cuts node0 off from the host.
const GatewayPort = "gateway"

// hostAddr returns host number h of an IPv4 subnet.
func hostAddr(subnet netip.Prefix, h int) netip.Addr {
	b := subnet.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(h)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lastAddr returns the broadcast address of an IPv4 subnet.
func lastAddr(subnet netip.Prefix) netip.Addr {
	return hostAddr(subnet, 1<<(32-subnet.Bits())-1)
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkLabel checks that name is a lower-case DNS label, which port and host
// names must be.
func checkLabel(name string) error {
	if !labelRE.MatchString(name) {
		return fmt.Errorf("name %q: want a lower-case DNS label (a-z, 0-9, '-', at most 63)", name)
	}
	return nil
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = "qcluster"
	}
	if err := checkLabel(c.Name); err != nil {
		return c, fmt.Errorf("cluster %w", err)
	}
	if c.Domain == "" {
		c.Domain = c.Name + ".qcluster.test"
	}
	c.Domain = strings.TrimSuffix(strings.ToLower(c.Domain), ".")
	for _, l := range strings.Split(c.Domain, ".") {
		if err := checkLabel(l); err != nil {
			return c, fmt.Errorf("domain %q: %w", c.Domain, err)
		}
	}
	if !c.Subnet.IsValid() {
		c.Subnet = netip.MustParsePrefix("10.42.0.0/24")
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 {
		return c, fmt.Errorf("subnet %s: want an IPv4 prefix of /30 or larger", c.Subnet)
	}
	c.Subnet = c.Subnet.Masked()
	if !c.Gateway.IsValid() {
		c.Gateway = hostAddr(c.Subnet, 1)
	}
	if !c.usable(c.Gateway) {
		return c, fmt.Errorf("gateway %s: not a host address of subnet %s", c.Gateway, c.Subnet)
	}
	if c.LeaseTime == 0 {
		c.LeaseTime = 12 * time.Hour
	}
	if c.LeaseTime < time.Minute {
		return c, fmt.Errorf("lease time %s: want at least a minute", c.LeaseTime)
	}
	if c.QueueLength == 0 {
		c.QueueLength = 512
	}
	if c.QueueLength < 1 {
		return c, fmt.Errorf("queue length %d: want at least 1", c.QueueLength)
	}
	if c.SOCKSUsername == "" {
		c.SOCKSUsername = c.Name
	}
	if len(c.SOCKSUsername) > 255 || len(c.SOCKSPassword) > 255 {
		return c, fmt.Errorf("socks credentials: RFC 1929 allows at most 255 bytes each")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// usable reports whether a is a host address of the subnet (neither the
// network nor the broadcast address).
func (c *Config) usable(a netip.Addr) bool {
	return a.Is4() && c.Subnet.Contains(a) && a != c.Subnet.Addr() && a != lastAddr(c.Subnet)
}

// checkLease validates l against the configuration.
func (c *Config) checkLease(l Lease) error {
	if len(l.MAC) != 6 || l.MAC[0]&1 != 0 {
		return fmt.Errorf("lease %s: MAC %q: want a unicast Ethernet address", l.Hostname, l.MAC)
	}
	if err := checkLabel(l.Hostname); err != nil {
		return fmt.Errorf("lease %s: host%w", l.MAC, err)
	}
	if l.Hostname == GatewayPort {
		return fmt.Errorf("lease %s: hostname %q is the gateway's", l.MAC, l.Hostname)
	}
	if !c.usable(l.Addr) || l.Addr == c.Gateway {
		return fmt.Errorf("lease %s: address %s: not a free host address of subnet %s (gateway %s)", l.Hostname, l.Addr, c.Subnet, c.Gateway)
	}
	return nil
}
