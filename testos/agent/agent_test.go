package main

import (
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/testos/api"
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

func TestParseVerity(t *testing.T) {
	root := strings.Repeat("ab", 32)
	cmdline := "console=ttyS0 quiet qcluster.verity=1,4096,4096,812,813,sha256," + root + ",- panic=-1\n"
	v, ok := cmdlineValue(cmdline, verityArg)
	if !ok {
		t.Fatal("qcluster.verity not found")
	}
	tab, err := parseVerity(v)
	if err != nil {
		t.Fatal(err)
	}
	want := "1 /dev/vda2 /dev/vda2 4096 4096 812 813 sha256 " + root + " -"
	if got := tab.params("/dev/vda2"); got != want {
		t.Errorf("params = %q, want %q", got, want)
	}
	if tab.sectors() != 812*8 {
		t.Errorf("sectors = %d", tab.sectors())
	}
	tab, err = parseVerity("1,4096,4096,8,9,sha256," + root + ",0011,ignore_zero_blocks")
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.params("d"); !strings.HasSuffix(got, " 0011 1 ignore_zero_blocks") {
		t.Errorf("params = %q", got)
	}
	for _, bad := range []string{"", "1,4096,4096,8,9,sha256," + root, "2,4096,4096,8,9,sha256," + root + ",-",
		"1,4000,4096,8,9,sha256," + root + ",-", "1,4096,4096,0,9,sha256," + root + ",-", "1,4096,4096,8,9,sha256,zz,-",
		"1,4096,4096,8,9,sha256," + root + ",xy", "1,4096,4096,8,9,sha256," + root + ",-,"} {
		if _, err := parseVerity(bad); err == nil {
			t.Errorf("parseVerity(%q) accepted", bad)
		}
	}
}

// TestDMStructLayout pins the DM ioctl structures to dm-ioctl.h's layout.
func TestDMStructLayout(t *testing.T) {
	if got := binary.Size(dmIoctl{}); got != dmIoctlSize {
		t.Errorf("binary.Size(dmIoctl) = %d, want %d", got, dmIoctlSize)
	}
	if got := unsafe.Sizeof(dmIoctl{}); got != dmIoctlSize {
		t.Errorf("unsafe.Sizeof(dmIoctl) = %d, want %d", got, dmIoctlSize)
	}
	if got := unsafe.Offsetof(dmIoctl{}.Dev); got != 40 {
		t.Errorf("offset of dev = %d, want 40", got)
	}
	if got := unsafe.Offsetof(dmIoctl{}.Name); got != 48 {
		t.Errorf("offset of name = %d, want 48", got)
	}
	if got := unsafe.Offsetof(dmIoctl{}.Data); got != 305 {
		t.Errorf("offset of data = %d, want 305", got)
	}
	if got := binary.Size(dmTargetSpec{}); got != dmSpecSize {
		t.Errorf("binary.Size(dmTargetSpec) = %d, want %d", got, dmSpecSize)
	}
	// DM_DEV_CREATE = _IOWR(0xfd, 3, struct dm_ioctl), as strace shows it.
	if got := dmRequest(dmDevCreateCmd); got != 0xc138fd03 {
		t.Errorf("DM_DEV_CREATE = %#x, want 0xc138fd03", got)
	}
	io, err := newDMIoctl("system", dmReadonlyFlag)
	if err != nil {
		t.Fatal(err)
	}
	b, err := marshalDM(io, []dmTarget{{0, 16, "verity", "1 a b"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%8 != 0 || binary.LittleEndian.Uint32(b[12:]) != uint32(len(b)) || binary.LittleEndian.Uint32(b[16:]) != dmIoctlSize ||
		binary.LittleEndian.Uint32(b[20:]) != 1 {
		t.Errorf("header of %d bytes: data_size %d, data_start %d, target_count %d", len(b),
			binary.LittleEndian.Uint32(b[12:]), binary.LittleEndian.Uint32(b[16:]), binary.LittleEndian.Uint32(b[20:]))
	}
	spec := b[dmIoctlSize:]
	if got := string(spec[24:30]); got != "verity" {
		t.Errorf("target type %q", got)
	}
	if got := string(spec[dmSpecSize : dmSpecSize+6]); got != "1 a b\x00" {
		t.Errorf("params %q", got)
	}
	if next := binary.LittleEndian.Uint32(spec[20:]); int(next) != len(spec) {
		t.Errorf("next = %d, want %d", next, len(spec))
	}
	if _, err := newDMIoctl(strings.Repeat("x", 128), 0); err == nil {
		t.Error("128-byte name accepted")
	}
}

// TestReadGPT reads a disk laid out like a node disk by sgdisk.
func TestReadGPT(t *testing.T) {
	sgdisk := needs.Tool(t, "sgdisk", "gdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sgdisk,
		"-n", "1:2048:+8M", "-t", "1:"+typeESP, "-c", "1:ESP",
		"-n", "2:0:+16M", "-t", "2:"+typeSystem, "-c", "2:SYSTEM-A",
		"-n", "3:0:+16M", "-t", "3:"+typeSystem, "-c", "3:SYSTEM-B",
		"-n", "4:0:0", "-t", "4:"+typeData, "-c", "4:DATA",
		"-u", "2:11111111-2222-3333-4444-555555555555", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := readGPT(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 4 {
		t.Fatalf("%d partitions: %+v", len(parts), parts)
	}
	a, err := findPart(parts, typeSystem, "SYSTEM-A")
	if err != nil {
		t.Fatal(err)
	}
	if a.number != 2 || a.firstLBA != 2048+16384 || a.sizeBytes(512) != 16<<20 || a.partGUID != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("SYSTEM-A = %+v", a)
	}
	d, err := findPart(parts, typeData, "DATA")
	if err != nil {
		t.Fatal(err)
	}
	if d.number != 4 {
		t.Errorf("DATA = %+v", d)
	}
	if _, err := findPart(parts, typeData, "SYSTEM-A"); err == nil {
		t.Error("found SYSTEM-A with the data type")
	}

	// A flipped byte in the partition array fails the CRC check.
	b, _ := os.ReadFile(img)
	b[1024+56] ^= 1
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := os.Open(img)
	defer g.Close()
	if _, err := readGPT(g, 512); err == nil || !strings.Contains(err.Error(), "CRC32") {
		t.Errorf("corrupt array: err = %v", err)
	}
}

func TestEFIString(t *testing.T) {
	b := []byte{7, 0, 0, 0}
	for _, r := range "qcluster-b.efi" {
		b = append(b, byte(r), 0)
	}
	b = append(b, 0, 0)
	if got := efiString(b); got != "qcluster-b.efi" {
		t.Errorf("efiString = %q", got)
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
