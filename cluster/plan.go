package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"

	"github.com/qcluster/qcluster/nanoswitch"
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
	// Address is the node's static DHCP lease: host 10+Index of the subnet
	// (nanoswitch.PlanLeases, which the switch uses).
	Address netip.Addr
	// MAC is nanoswitch.NodeMAC: derived from the cluster name and the
	// index, so it is stable across reboots and relaunches.
	MAC      net.HardwareAddr
	Identity Identity
	Options  NodeOptions
}

func makePlan(o Options) (*Plan, error) {
	p := &Plan{Name: o.Name, Domain: o.Name + ".qcluster.test", Subnet: o.Subnet}
	// A /24 or larger (withDefaults) holds nanoswitch.FirstNodeHost+MaxNodes hosts.
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
			Address: hostAddr(o.Subnet, nanoswitch.FirstNodeHost+i),
			MAC:     nanoswitch.NodeMAC(o.Name, i),
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
