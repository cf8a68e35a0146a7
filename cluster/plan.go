package cluster

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
)

// Plan is everything decided about a cluster before anything starts: names,
// addresses, MACs and certificates. Profiles read it to make parameters.
type Plan struct {
	// Name of the cluster; Domain is "<Name>.qcluster.test".
	Name, Domain string
	// Subnet of the cluster network and the gateway's address in it (the
	// switch's own: DHCP, DNS, host access).
	Subnet  netip.Prefix
	Gateway netip.Addr
	// PKI signs the nodes' and the owner's certificates.
	PKI *PKI
	// Owner is the client identity the launcher (and the user, through the
	// files it writes) uses to call the nodes.
	Owner Identity
	Nodes []*NodePlan
}

// NodePlan is one node's share of the plan.
type NodePlan struct {
	Index int
	// Name is "node<Index>"; FQDN is Name + "." + Plan.Domain.
	Name, FQDN string
	// Address is the node's static DHCP lease: host 10+Index of the
	// subnet. The plan is its one owner: the switch is given it.
	Address netip.Addr
	// MAC is derived from the cluster name and the index (nodeMAC), so it
	// is stable across reboots and relaunches.
	MAC      net.HardwareAddr
	Identity Identity
	Options  NodeOptions
}

func makePlan(o Options) (*Plan, error) {
	p := &Plan{Name: o.Name, Domain: o.Name + ".qcluster.test", Subnet: o.Subnet}
	// A /24 or larger (withDefaults) holds firstNodeHost+MaxNodes hosts.
	p.Gateway = hostAddr(o.Subnet, 1)
	pki, err := newPKI(o.Name, o.CertValidity)
	if err != nil {
		return nil, err
	}
	p.PKI = pki
	if p.Owner, err = pki.Issue("owner", []string{"owner." + p.Domain}, nil); err != nil {
		return nil, err
	}
	for i := 0; i < o.Nodes; i++ {
		nopts, err := o.nodeOptions(i)
		if err != nil {
			return nil, err
		}
		n := &NodePlan{
			Index:   i,
			Name:    fmt.Sprintf("node%d", i),
			Address: hostAddr(o.Subnet, firstNodeHost+i),
			MAC:     nodeMAC(o.Name, i),
			Options: nopts,
		}
		n.FQDN = n.Name + "." + p.Domain
		if n.Identity, err = pki.Issue(n.Name, []string{n.Name, n.FQDN}, []netip.Addr{n.Address}); err != nil {
			return nil, err
		}
		p.Nodes = append(p.Nodes, n)
	}
	return p, nil
}

// firstNodeHost is node 0's host number in the subnet: node i gets host
// firstNodeHost+i (10.42.0.10, .11, …).
const firstNodeHost = 10

// nodeMAC derives node i's MAC from the cluster name: QEMU's 52:54:00
// prefix (locally administered, unicast) and three bytes of
// SHA-256("qcluster mac <cluster> <i>").
func nodeMAC(cluster string, i int) net.HardwareAddr {
	h := sha256.Sum256(fmt.Appendf(nil, "qcluster mac %s %d", cluster, i))
	return net.HardwareAddr{0x52, 0x54, 0x00, h[0], h[1], h[2]}
}

// hostAddr returns host number h of an IPv4 subnet.
func hostAddr(subnet netip.Prefix, h int) netip.Addr {
	b := subnet.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(h)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
