package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	o, err := Options{Name: "t1", Nodes: 3, Profile: TCPProfile{Port: 1}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	p, err := makePlan(o)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, n := range p.Nodes {
		if want := netip.MustParseAddr("10.42.0.1" + string(rune('0'+i))); n.Address != want {
			t.Errorf("node%d address %s, want %s", i, n.Address, want)
		}
		if seen[n.MAC.String()] {
			t.Errorf("node%d MAC %s repeated", i, n.MAC)
		}
		seen[n.MAC.String()] = true
		if n.MAC[0]&2 != 2 && n.MAC[0] != 0x52 {
			t.Errorf("MAC %s is not locally administered", n.MAC)
		}
		block, _ := pem.Decode(n.Identity.CertPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: p.PKI.CAPool(), DNSName: n.FQDN,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("node%d certificate does not verify for %s: %v", i, n.FQDN, err)
		}
		if err := cert.VerifyHostname(n.Address.String()); err != nil {
			t.Errorf("node%d certificate lacks its address: %v", i, err)
		}
	}
	if again := nodeMAC("t1", 1); again.String() != p.Nodes[1].MAC.String() {
		t.Errorf("MAC not stable: %s vs %s", again, p.Nodes[1].MAC)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Nodes: -1}, "-1 nodes"},
		{Options{Nodes: 1000}, "1000 nodes"},
		{Options{Name: "Bad_Name"}, "cluster name"},
		{Options{Accel: "hvf"}, "accelerator"},
		{Options{Node: NodeOptions{MemoryMiB: 1 << 30}}, "memory"},
		{Options{Node: NodeOptions{CPUs: -2}}, "CPUs"},
		{Options{PerNode: map[int]NodeOptions{5: {}}}, "override for node 5"},
		{Options{Subnet: netip.MustParsePrefix("10.0.0.0/29")}, "subnet"},
	} {
		if c.o.Profile == nil {
			c.o.Profile = TCPProfile{Port: 1}
		}
		_, err := c.o.withDefaults()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error with %q", c.o, err, c.want)
		}
	}
	if _, err := (Options{}).withDefaults(); err == nil || !strings.Contains(err.Error(), "profile") {
		t.Errorf("no profile: got %v", err)
	}
}
