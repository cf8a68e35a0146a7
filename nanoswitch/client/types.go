package client

import (
	"net"
	"net/netip"
	"time"
)

// The types the control API carries; package nanoswitch uses them too
// (as aliases), so that the switch and its client agree by construction.

// Degradation is a lossy, slow link.
type Degradation struct {
	// LossPercent is the chance, 0 to 100, that a frame is dropped.
	LossPercent float64
	// Delay is added to every frame before it is written, at most a minute.
	// Frames keep their order; a delay longer than the port's queue can
	// cover at the offered rate drops frames.
	Delay time.Duration
}

// FaultState is the set of faults in force.
type FaultState struct {
	// Partitions are pairs of port names, each pair sorted, in sorted order.
	Partitions [][2]string
	// Isolated port names, sorted.
	Isolated []string
	// Degraded ports by name.
	Degraded map[string]Degradation
}

// Counters are a port's traffic figures since the switch started, summed
// over every connection the port has had. "Rx" is what the port's peer
// (the VM) sent into the switch, "Tx" what the switch wrote to the peer.
// Frames are counted without QEMU's length prefix.
type Counters struct {
	RxFrames, RxBytes uint64 // frames (and their bytes) received from the peer
	TxFrames, TxBytes uint64 // frames (and their bytes) handed to the peer's connection
	// RxDrops are frames from the peer that were discarded as malformed
	// (shorter than an Ethernet header).
	RxDrops uint64
	// TxDrops are frames for the peer discarded because its queue was full
	// (a stalled or slow peer) or no peer was attached.
	TxDrops uint64
	// FaultDrops are frames for the peer discarded by a fault: a partition,
	// an isolation or a degradation's loss.
	FaultDrops uint64
	// Connects is the number of times a peer attached (QEMU connecting to
	// the socket; again after each restart).
	Connects uint64
}

// PortStatus describes one port.
type PortStatus struct {
	// Name of the port; GatewayPort for the switch's own stack.
	Name string
	// MAC given to AddPort (nil if none; the gateway's own MAC for it).
	MAC net.HardwareAddr
	// SocketPath is the UNIX socket QEMU connects to ("" for ports made
	// by AttachConn and for the gateway).
	SocketPath string
	// Connected reports whether a peer is attached now.
	Connected bool
	Counters
}

// Lease is a static DHCP lease.
type Lease struct {
	// MAC of the guest's NIC.
	MAC net.HardwareAddr
	// Addr is the address it gets, inside the subnet.
	Addr netip.Addr
	// Hostname is a DNS label: DHCP hands it out (option 12) and DNS
	// resolves "<Hostname>.<Domain>" and "<Hostname>" to Addr.
	Hostname string
}
