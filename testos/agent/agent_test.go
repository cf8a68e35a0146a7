package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qcluster/qcluster/testos/api"
	"github.com/qcluster/qcluster/testos/internal/boot"
)

func TestParseParams(t *testing.T) {
	p, err := parseParams([]byte(`{"nodeName":"node1","clusterName":"c","role":"ROLE_MEMBER","leaderAddress":"10.0.0.2:7443",
		"listenPort":8443,"tls":{"caCertPem":"ca","certPem":"cert","keyPem":"key"},"entropySeed":"AAEC"}`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newConfig(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.nodeName != "node1" || c.role != api.Role_ROLE_MEMBER || c.leaderName != "10.0.0.2" || c.listenPort != 8443 ||
		c.hostname != "node1" || len(c.entropySeed) != 3 || c.caPEM != "ca" || !c.fromParams {
		t.Errorf("config = %+v", c)
	}
	if _, err := parseParams([]byte(`{"nodeName":"a","bogus":1}`)); err == nil {
		t.Error("unknown field accepted")
	}
	if _, err := parseParams([]byte(`{`)); err == nil {
		t.Error("truncated JSON accepted")
	}
}

func TestNewConfigDefaults(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	c, err := newConfig(nil, mac)
	if err != nil {
		t.Fatal(err)
	}
	if c.fromParams || c.nodeName != "node-525400123456" || c.role != api.Role_ROLE_BOOTSTRAP ||
		c.listenPort != api.DefaultListenPort || c.hostname != c.nodeName || c.listenAddr() != ":7443" {
		t.Errorf("config = %+v", c)
	}
	// A leader address without a role makes a member.
	c, err = newConfig(&api.Parameters{NodeName: "n2", LeaderAddress: "n1:7443", LeaderName: "n1",
		Tls: &api.TLS{CaCertPem: "a", CertPem: "b", KeyPem: "c"}}, mac)
	if err != nil {
		t.Fatal(err)
	}
	if c.role != api.Role_ROLE_MEMBER || c.leaderName != "n1" {
		t.Errorf("config = %+v", c)
	}
}

func TestNewConfigErrors(t *testing.T) {
	for name, p := range map[string]*api.Parameters{
		"bad name":         {NodeName: "no_underscores"},
		"member no leader": {Role: api.Role_ROLE_MEMBER, Tls: &api.TLS{CaCertPem: "a", CertPem: "b", KeyPem: "c"}},
		"member no tls":    {Role: api.Role_ROLE_MEMBER, LeaderAddress: "n1:7443"},
		"partial tls":      {Tls: &api.TLS{CaCertPem: "a"}},
		"port":             {ListenPort: 70000},
		"log level":        {KernelLogLevel: 9},
		"role":             {Role: 7},
		"domain":           {Domain: "-x"},
	} {
		if _, err := newConfig(p, nil); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: multi-line error %q", name, err)
		}
	}
}

func TestFatalPrefix(t *testing.T) {
	if boot.FatalPrefix != api.FatalPrefix {
		t.Errorf("boot.FatalPrefix %q, api.FatalPrefix %q", boot.FatalPrefix, api.FatalPrefix)
	}
}

func TestDataPath(t *testing.T) {
	for p, ok := range map[string]bool{"a": true, "a/b.txt": true, "": false, ".": false, "..": false, "../x": false,
		"/etc/passwd": false, "a/../../x": false, "a//b": false, "./a": false} {
		_, err := dataPath("/data", p)
		if (err == nil) != ok {
			t.Errorf("dataPath(%q): err = %v", p, err)
		}
	}
}

func TestCountBootAndID(t *testing.T) {
	dir := t.TempDir()
	for want := uint64(1); want <= 3; want++ {
		n, err := countBoot(filepath.Join(dir, "boot-count"))
		if err != nil || n != want {
			t.Fatalf("countBoot = %d, %v; want %d", n, err, want)
		}
	}
	id1, err := loadOrCreateID(filepath.Join(dir, "id"))
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := loadOrCreateID(filepath.Join(dir, "id"))
	if id1 != id2 || len(id1) != 36 {
		t.Errorf("ids %q %q", id1, id2)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("left behind: %v", ents)
	}
}

// fakeClock is a settable clock for the roster.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func member(list []*api.Member, name string) *api.Member {
	for _, m := range list {
		if m.Name == name {
			return m
		}
	}
	return nil
}

func TestRoster(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	r := newRoster(clk.now, "c1", rosterEntry{name: "node1", address: "10.0.0.1:7443", nodeID: "id1", bootCount: 1})
	join := &api.JoinRequest{Name: "node2", Address: "10.0.0.2:7443", NodeId: "id2", BootCount: 1, ClusterName: "c1"}
	if err := r.join(join); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*api.JoinRequest{
		{Name: "node3", Address: "10.0.0.3:7443", ClusterName: "other"},
		{Name: "node1", Address: "10.0.0.3:7443", ClusterName: "c1"},
		{Name: "node3", Address: "nohostport", ClusterName: "c1"},
		{Address: "10.0.0.3:7443", ClusterName: "c1"},
	} {
		if err := r.join(bad); err == nil {
			t.Errorf("join %+v accepted", bad)
		}
	}
	l := r.list()
	if len(l) != 2 || l[0].Name != "node1" || !l[0].Leader || !l[0].Healthy || l[1].Name != "node2" || !l[1].Healthy {
		t.Fatalf("list = %v", l)
	}
	// Heartbeats every second keep it healthy.
	for range 5 {
		clk.add(time.Second)
		if err := r.heartbeat(&api.HeartbeatRequest{Name: "node2", NodeId: "id2", BootCount: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if m := member(r.list(), "node2"); !m.Healthy || m.LastHeartbeatAgeMs != 0 {
		t.Errorf("after heartbeats: %v", m)
	}
	// Three missed heartbeats: still healthy at exactly 3 s, unhealthy after.
	clk.add(3 * time.Second)
	if m := member(r.list(), "node2"); !m.Healthy || m.LastHeartbeatAgeMs != 3000 {
		t.Errorf("at 3 s: %v", m)
	}
	clk.add(time.Millisecond)
	if m := member(r.list(), "node2"); m.Healthy {
		t.Errorf("after 3 missed heartbeats still healthy: %v", m)
	}
	// A heartbeat brings it back.
	if err := r.heartbeat(&api.HeartbeatRequest{Name: "node2", NodeId: "id2", BootCount: 1}); err != nil {
		t.Fatal(err)
	}
	if m := member(r.list(), "node2"); !m.Healthy {
		t.Errorf("after heartbeat: %v", m)
	}
	// Unknown names and stale node IDs must join (again).
	if err := r.heartbeat(&api.HeartbeatRequest{Name: "node9", NodeId: "x"}); err == nil {
		t.Error("heartbeat of unknown node accepted")
	}
	if err := r.heartbeat(&api.HeartbeatRequest{Name: "node2", NodeId: "other"}); err == nil {
		t.Error("heartbeat with another node id accepted")
	}
	// Rejoining after a reboot updates the boot count.
	join.BootCount = 2
	if err := r.join(join); err != nil {
		t.Fatal(err)
	}
	if m := member(r.list(), "node2"); m.BootCount != 2 || !m.Healthy {
		t.Errorf("after rejoin: %v", m)
	}
}
