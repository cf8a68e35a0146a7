package switchmain

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func nodes(names ...string) []node {
	out := make([]node, len(names))
	for i, n := range names {
		out[i] = node{name: n}
	}
	return out
}

func TestPlanLeases(t *testing.T) {
	subnet := netip.MustParsePrefix("10.42.0.0/24")
	leases, err := planLeases("c1", subnet, nodes("node0", "node1", "node2"))
	if err != nil {
		t.Fatal(err)
	}
	given, err := planLeases("c1", subnet, []node{{name: "a", mac: net.HardwareAddr{0x52, 0x54, 0, 1, 2, 3}, addr: netip.MustParseAddr("10.42.0.99")}})
	if err != nil || given[0].Addr.String() != "10.42.0.99" || given[0].MAC.String() != "52:54:00:01:02:03" {
		t.Errorf("given MAC and address: %+v, %v; want them kept", given, err)
	}
	again, _ := planLeases("c1", subnet, nodes("node0", "node1", "node2"))
	other, _ := planLeases("c2", subnet, nodes("node0"))
	seen := map[string]bool{}
	for i, l := range leases {
		if want := netip.AddrFrom4([4]byte{10, 42, 0, byte(firstNodeHost + i)}); l.Addr != want {
			t.Errorf("node %d: address %s, want %s", i, l.Addr, want)
		}
		if l.MAC[0]&1 != 0 || l.MAC[0]&2 == 0 {
			t.Errorf("node %d: MAC %s is not locally administered unicast", i, l.MAC)
		}
		if seen[l.MAC.String()] {
			t.Errorf("node %d: MAC %s repeated", i, l.MAC)
		}
		seen[l.MAC.String()] = true
		if again[i].MAC.String() != l.MAC.String() {
			t.Errorf("node %d: MAC not stable", i)
		}
	}
	if other[0].MAC.String() == leases[0].MAC.String() {
		t.Error("two clusters got the same MAC for node 0")
	}
	if _, err := planLeases("c", netip.MustParsePrefix("10.0.0.0/29"), nodes("a")); err == nil {
		t.Error("a /29 has no host .10, but planning succeeded")
	}
	// A bad host name is the switch's to refuse: TestCommandBadInput.
	many := make([]string, 246)
	for i := range many {
		many[i] = "n" + strings.Repeat("x", i%5) + string(rune('a'+i%26))
	}
	if _, err := planLeases("c", subnet, nodes(many...)); err == nil {
		t.Error("246 nodes fit a /24 from host .10, which cannot be")
	}
}
