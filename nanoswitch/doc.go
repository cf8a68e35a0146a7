// Package nanoswitch is one cluster's virtual Ethernet network, rootless and
// in user space: an L2 switch for QEMU guests with the services a cluster
// needs around it.
//
//   - Ports: a VM attaches over a UNIX socket of its own (AddPort; QEMU
//     "-netdev stream,server=off,addr.type=unix,addr.path=SOCK") or an
//     inherited connection (AttachConn), in QEMU's framing: a 4-byte
//     big-endian length before each frame. Any number of ports; a VM that
//     restarts connects to its socket again and gets its port back.
//   - Forwarding: a learning bridge of our own. Broadcast, multicast and
//     unknown unicast are flooded. Each port has a bounded queue (512 frames)
//     and a writer goroutine; when a peer stops reading (a VM under SIGSTOP)
//     its queue fills and its frames are dropped and counted, and no other
//     port notices.
//   - The gateway: a gVisor network stack attached as one more port
//     (GatewayPort). It serves DHCP with static leases by MAC (hostname,
//     domain and search list included) and DNS for the cluster's names
//     ("node0", "node0.<cluster>.qcluster.test", reverse names), and is the
//     source of host connections: DialContext for Go callers, SOCKS5 and
//     HTTP CONNECT on one 127.0.0.1 port with per-cluster credentials for
//     other tools (servers and SOCKS5 client in package
//     nanoswitch/hostproxy). Both reach cluster addresses only.
//   - Hermetic by default: guests reach the cluster's own addresses and
//     nothing else; names outside the domain get NXDOMAIN. AllowOutbound
//     proxies guests' TCP and UDP to the host's networks and resolves other
//     names with the host's resolver.
//   - Faults per link and per node, applied per frame: Partition, Isolate,
//     Degrade (loss, delay), Heal. Per-port counters (atomics) and optional
//     per-port pcap files, guest ↔ guest traffic included.
//   - Control: the same operations over gRPC on a UNIX socket (package
//     nanoswitch/api), served when Config.ControlSocket is set. The
//     nanoswitch command (nanoswitch/switchmain) runs a switch as a helper
//     process; package nanoswitch/client starts, waits for and stops that
//     process and is its Go client, without linking the switch itself.
//
// What comes from containers/gvisor-tap-vsock: the gateway's link endpoint
// (tap.LinkEndpoint, which joins a gVisor stack to a switch and keeps it from
// answering ARP for foreign addresses), its TCP and UDP forwarders (only with
// AllowOutbound), and the gVisor version it is known to work with. Its
// switch is not used: it holds one lock across blocking writes (one stalled
// VM freezes every port), drops unknown unicast and captures only the
// gateway's traffic. Its DHCP service hands out dynamic addresses without
// host names, and its DNS service sends every name outside its zones to the
// host's resolver; both log through logrus and start goroutines that cannot
// be waited for. So DHCP is written here on insomniacslk/dhcp's dhcpv4
// messages and DNS on golang.org/x/net/dns/dnsmessage.
//
// Limits: IPv4 only (no IPv6, no DHCPv6); one broadcast domain; DHCP serves
// static leases only (a MAC without a lease gets no address); DNS answers A
// and PTR for the cluster's names (other types get empty answers); SOCKS5
// supports CONNECT only (no BIND, no UDP ASSOCIATE); the MAC table does not
// age (a MAC moves when it is seen on another port); a hermetic gateway
// drops packets for outside addresses silently, so guests' connections there
// time out; MTU 1500. With AllowOutbound, gvisor-tap-vsock's forwarders log
// their errors through logrus's standard logger (stderr), not Config.Logger.
package nanoswitch
