package nanoswitch

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/qcluster/qcluster/internal/needs"
)

// nodeLeases gives the named nodes static leases: node i gets host 10+i of
// subnet and a MAC made from i.
func nodeLeases(subnet netip.Prefix, names []string) []Lease {
	leases := make([]Lease, len(names))
	base := subnet.Masked().Addr().As4()
	for i, name := range names {
		base[3] = byte(10 + i)
		leases[i] = Lease{MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0x10, 0x00, byte(i)}, Addr: netip.AddrFrom4(base), Hostname: name}
	}
	return leases
}

func TestConfigErrors(t *testing.T) {
	l := Lease{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"}
	for _, c := range []Config{
		{Name: "Bad Name"},
		{Subnet: netip.MustParsePrefix("fd00::/64")},
		{Gateway: netip.MustParseAddr("10.43.0.1")},
		{Gateway: netip.MustParseAddr("10.42.0.255")},
		{Leases: []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.1"), Hostname: "a"}}},
		{Leases: []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.1.1"), Hostname: "a"}}},
		{Leases: []Lease{{MAC: broadcast, Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "a"}}},
		{Leases: []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "gateway"}}},
		{Leases: []Lease{l, {MAC: mac(2), Addr: l.Addr, Hostname: "node1"}}},
		{Leases: []Lease{l, {MAC: mac(2), Addr: netip.MustParseAddr("10.42.0.11"), Hostname: "node0"}}},
		{Leases: []Lease{l, {MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.11"), Hostname: "node1"}}},
		{LeaseTime: time.Second},
		{QueueLength: -1},
	} {
		c.Logger = testLogger(t)
		if sw, err := New(t.Context(), c); err == nil {
			sw.Close()
			t.Errorf("config %+v accepted", c)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("error of more than one line: %q", err)
		}
	}
}

func testLeases() []Lease {
	return []Lease{
		{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"},
		{MAC: mac(2), Addr: netip.MustParseAddr("10.42.0.11"), Hostname: "node1"},
	}
}

func TestDHCPReply(t *testing.T) {
	sw := newTestSwitch(t, Config{Name: "dhcp", Leases: testLeases()})
	disc, err := dhcpv4.NewDiscovery(mac(2))
	if err != nil {
		t.Fatal(err)
	}
	offer := sw.dhcpReply(disc)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("offer: %v", offer)
	}
	check := func(m *dhcpv4.DHCPv4) {
		t.Helper()
		gw := net.ParseIP("10.42.0.1").To4()
		if !m.YourIPAddr.Equal(net.ParseIP("10.42.0.11")) || !m.ServerIdentifier().Equal(gw) ||
			!m.Router()[0].Equal(gw) || !m.DNS()[0].Equal(gw) || m.HostName() != "node1" ||
			m.DomainName() != "dhcp.qcluster.test" || m.DomainSearch().Labels[0] != "dhcp.qcluster.test" ||
			m.SubnetMask().String() != "ffffff00" || m.IPAddressLeaseTime(0) != 12*time.Hour {
			t.Errorf("reply:\n%s", m.Summary())
		}
	}
	check(offer)
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack := sw.dhcpReply(req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("ack: %v", ack)
	}
	check(ack)

	wrong, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.42.0.50"))))
	if nak := sw.dhcpReply(wrong); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for another address: %v, want NAK", nak)
	}
	other, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.42.0.2"))))
	if r := sw.dhcpReply(other); r != nil {
		t.Errorf("request to another server answered: %v", r)
	}
	stranger, _ := dhcpv4.NewDiscovery(mac(9))
	if r := sw.dhcpReply(stranger); r != nil {
		t.Errorf("MAC without a lease answered: %v", r)
	}
	// A lease added later is served.
	if err := sw.AddLease(Lease{MAC: mac(9), Addr: netip.MustParseAddr("10.42.0.99"), Hostname: "late"}); err != nil {
		t.Fatal(err)
	}
	if r := sw.dhcpReply(stranger); r == nil || !r.YourIPAddr.Equal(net.ParseIP("10.42.0.99")) {
		t.Errorf("late lease: %v", r)
	}
	if err := sw.AddLease(Lease{MAC: mac(9), Addr: netip.MustParseAddr("10.42.0.99"), Hostname: "late"}); err != nil {
		t.Errorf("adding the same lease again: %v", err)
	}
	if n := len(sw.Leases()); n != 3 {
		t.Errorf("%d leases, want 3", n)
	}
}

func dnsQuery(t *testing.T, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDNSAnswer(t *testing.T) {
	for _, outbound := range []bool{false, true} {
		sw := newTestSwitch(t, Config{Name: "dns", Leases: testLeases(), AllowOutbound: outbound})
		for _, c := range []struct {
			name  string
			typ   dnsmessage.Type
			rcode dnsmessage.RCode
			want  string // the answer's A or PTR, "" for none
		}{
			{"node0.dns.qcluster.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "10.42.0.10"},
			{"NODE1.dns.qcluster.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "10.42.0.11"},
			{"node1.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "10.42.0.11"},
			{"gateway.dns.qcluster.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "10.42.0.1"},
			{"node0.dns.qcluster.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, ""},
			{"dns.qcluster.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, ""},
			{"node7.dns.qcluster.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, ""},
			{"10.0.42.10.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeSuccess, "node0.dns.qcluster.test."},
			{"99.0.42.10.in-addr.arpa.", dnsmessage.TypePTR, dnsmessage.RCodeNameError, ""},
			{"example.invalid.", dnsmessage.TypeA, dnsmessage.RCodeNameError, ""},
		} {
			if !outbound || c.name != "example.invalid." {
				resp := sw.dnsAnswer(dnsQuery(t, c.name, c.typ), 512)
				var m dnsmessage.Message
				if err := m.Unpack(resp); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				got := ""
				if len(m.Answers) == 1 {
					switch b := m.Answers[0].Body.(type) {
					case *dnsmessage.AResource:
						got = netip.AddrFrom4(b.A).String()
					case *dnsmessage.PTRResource:
						got = b.PTR.String()
					}
				}
				if m.ID != 7 || !m.Response || m.RCode != c.rcode || got != c.want || len(m.Answers) > 1 {
					t.Errorf("outbound=%v %s %s: rcode %s answer %q (%d answers), want %s %q",
						outbound, c.name, c.typ, m.RCode, got, len(m.Answers), c.rcode, c.want)
				}
			}
		}
	}
	sw := newTestSwitch(t, Config{Name: "dns"})
	if r := sw.dnsAnswer([]byte{1, 2, 3}, 512); r != nil {
		t.Errorf("garbage answered: %x", r)
	}
}

// TestPcap checks the capture files with tcpdump.
func TestPcap(t *testing.T) {
	tcpdump := needs.Tool(t, "tcpdump", "tcpdump")
	dir := t.TempDir()
	sw := newTestSwitch(t, Config{PcapDir: dir})
	a := attachPeer(t, sw, "a", mac(1))
	b := attachPeer(t, sw, "b", mac(2))
	for i := 0; i < 3; i++ {
		a.send(mac(2), "frame")
		b.recv()
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		out, err := exec.Command(tcpdump, "-nn", "-e", "-r", filepath.Join(dir, name+".pcap")).CombinedOutput()
		if err != nil {
			t.Fatalf("tcpdump %s: %v\n%s", name, err, out)
		}
		if n := strings.Count(string(out), "52:54:00:00:00:01 > 52:54:00:00:00:02, ethertype Unknown (0x88b5)"); n != 3 {
			t.Errorf("%s.pcap: %d frames from a to b, want 3:\n%s", name, n, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, GatewayPort+".pcap")); err != nil {
		t.Error(err)
	}
}

// TestDNSOverTCP checks the TCP framing: a 2-byte length before each
// message, several queries on one connection.
func TestDNSOverTCP(t *testing.T) {
	sw := newTestSwitch(t, Config{Name: "dns", Leases: testLeases()})
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sw.serveDNSConn(a)
	}()
	defer func() { b.Close(); <-done }()
	for _, name := range []string{"node0.dns.qcluster.test.", "node1."} {
		q := dnsQuery(t, name, dnsmessage.TypeA)
		if _, err := b.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			t.Fatal(err)
		}
		var l [2]byte
		if _, err := io.ReadFull(b, l[:]); err != nil {
			t.Fatal(err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(b, resp); err != nil {
			t.Fatal(err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil || len(m.Answers) != 1 {
			t.Fatalf("%s over TCP: %v, %d answers", name, err, len(m.Answers))
		}
	}
}
