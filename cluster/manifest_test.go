package cluster

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testManifest is the manifest a snapshot of a fresh plan would have.
func testManifest(t testing.TB) *Manifest {
	t.Helper()
	o, err := Options{Name: "warm", Nodes: 2, Profile: TCPProfile{Port: 22}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	p, err := makePlan(o)
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profileRecord(o.Profile)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{
		Format: manifestFormat, Created: time.Unix(1e9, 0).UTC(), Profile: prof,
		Key: SnapshotKey{QEMU: "7.2.22", Accel: "tcg", OVMFCode: "aa", OVMFVars: "bb", Nodes: 2},
		Cluster: ManifestCluster{
			Name: p.Name, Domain: p.Domain, Subnet: p.Subnet.String(), Gateway: p.Gateway.String(),
			CACert: string(p.PKI.CAPEM), CAKey: string(p.PKI.caKeyPEM()),
			OwnerCert: string(p.Owner.CertPEM), OwnerKey: string(p.Owner.KeyPEM), NotAfter: p.PKI.CACert.NotAfter,
		},
	}
	sum := strings.Repeat("ab", 32)
	for _, n := range p.Nodes {
		m.Key.Machines = append(m.Key.Machines, machineKey(n.Options))
		m.Nodes = append(m.Nodes, ManifestNode{
			Index: n.Index, Name: n.Name, FQDN: n.FQDN, Address: n.Address.String(), MAC: n.MAC.String(),
			Cert: string(n.Identity.CertPEM), Key: string(n.Identity.KeyPEM), Options: n.Options,
			Files: map[string]ManifestFile{snapDisk: {Size: 1 << 20}, snapRAM: {Size: 1 << 20}, snapState: {Size: 10, SHA256: sum}},
		})
	}
	return m
}

// TestManifestRoundTrip: a manifest parses back to itself, and its plan is
// the plan it was made from.
func TestManifestRoundTrip(t *testing.T) {
	m := testManifest(t)
	b, err := marshalManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := marshalManifest(got)
	if string(b) != string(b2) {
		t.Errorf("round trip changed the manifest:\n%s\n%s", b, b2)
	}
	p, err := got.plan()
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "warm" || len(p.Nodes) != 2 || p.Nodes[1].Address.String() != m.Nodes[1].Address {
		t.Errorf("plan %+v", p)
	}
	if _, err := p.Owner.TLSCertificate(); err != nil {
		t.Fatal(err)
	}
	if got.TemplateKey() != m.TemplateKey() || len(m.TemplateKey()) != 32 {
		t.Errorf("template key %q vs %q", got.TemplateKey(), m.TemplateKey())
	}
}

// TestParseManifestRefuses: each kind of damage is a one-line error wrapping
// ErrBadSnapshot that names what is wrong.
func TestParseManifestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *Manifest)
		want string
	}{
		{"Format", func(m *Manifest) { m.Format = 2 }, "format 2"},
		{"Name", func(m *Manifest) { m.Cluster.Name = "Bad Name" }, "cluster name"},
		{"Subnet", func(m *Manifest) { m.Cluster.Subnet = "10.42.0.7/24" }, "subnet"},
		{"Gateway", func(m *Manifest) { m.Cluster.Gateway = "192.168.0.1" }, "gateway"},
		{"NoCA", func(m *Manifest) { m.Cluster.CAKey = "" }, "CA key"},
		{"NodeCount", func(m *Manifest) { m.Key.Nodes = 3 }, "key says 3 nodes"},
		{"Accel", func(m *Manifest) { m.Key.Accel = "hvf" }, "accelerator"},
		{"NodeName", func(m *Manifest) { m.Nodes[1].Name = "node7" }, "node7"},
		{"Address", func(m *Manifest) { m.Nodes[1].Address = m.Nodes[0].Address }, "address"},
		{"MAC", func(m *Manifest) { m.Nodes[1].MAC = "01:00:5e:00:00:01" }, "MAC"},
		{"Memory", func(m *Manifest) { m.Nodes[0].Options.MemoryMiB = 1 }, "machine options"},
		{"Machine", func(m *Manifest) { m.Key.Machines[0] = "cpus=9" }, "does not match"},
		{"NoState", func(m *Manifest) { delete(m.Nodes[0].Files, snapState) }, "no state"},
		{"StateHash", func(m *Manifest) { m.Nodes[0].Files[snapState] = ManifestFile{Size: 10} }, "SHA-256"},
		{"StrayFile", func(m *Manifest) { m.Nodes[0].Files["../etc"] = ManifestFile{Size: 1} }, "unexpected file"},
		{"NoProfile", func(m *Manifest) { m.Profile.Type = "" }, "profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManifest(t)
			tc.edit(m)
			b, _ := json.Marshal(m)
			_, err := ParseManifest(b)
			if err == nil || !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %v, want one line wrapping ErrBadSnapshot mentioning %q", err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "{", `{"format":1}{}`, `{"format":1,"extra":true}`, "null"} {
		if _, err := ParseManifest([]byte(bad)); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("ParseManifest(%q) = %v, want ErrBadSnapshot", bad, err)
		}
	}
}

// TestReadManifest: a missing directory and an unfinished snapshot are told
// apart.
func TestReadManifest(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadManifest(filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing: %v", err)
	}
	if _, err := ReadManifest(dir); err == nil || !strings.Contains(err.Error(), "still being written") {
		t.Errorf("unfinished: %v", err)
	}
	b, _ := marshalManifest(testManifest(t))
	os.WriteFile(filepath.Join(dir, ManifestName), b, 0o600)
	if _, err := ReadManifest(dir); err != nil {
		t.Error(err)
	}
}

// TestKeyMismatch: the first difference is named in a user's words.
func TestKeyMismatch(t *testing.T) {
	k := SnapshotKey{QEMU: "7.2.22", Accel: "kvm", Swtpm: "0.7.1", Libtpms: "0.9.2", OVMFCode: "aa", OVMFVars: "bb"}
	host := k
	if d := k.mismatch(host); d != "" {
		t.Errorf("equal keys: %q", d)
	}
	host.Accel = "tcg"
	if d := k.mismatch(host); d != "snapshot taken with QEMU 7.2.22 under kvm; this host runs QEMU 7.2.22 under tcg" {
		t.Errorf("accel: %q", d)
	}
	host = k
	host.Libtpms = "0.10.0"
	if d := k.mismatch(host); !strings.Contains(d, "libtpms 0.9.2") || !strings.Contains(d, "libtpms 0.10.0") {
		t.Errorf("libtpms: %q", d)
	}
	host = k
	host.OVMFCode = "cc"
	if d := k.mismatch(host); !strings.Contains(d, "OVMF") {
		t.Errorf("ovmf: %q", d)
	}
}

// FuzzParseManifest: never panics; whatever parses gives a plan that
// rebuilds without error or with ErrBadSnapshot, and re-encodes to a
// manifest that parses again.
func FuzzParseManifest(f *testing.F) {
	b, _ := marshalManifest(testManifest(f))
	f.Add(b)
	f.Add([]byte(`{"format":1}`))
	f.Add([]byte(`{"format":1,"nodes":[{"index":0}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("error %v does not wrap ErrBadSnapshot", err)
			}
			return
		}
		if _, err := m.plan(); err != nil && !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("plan: %v", err)
		}
		again, err := marshalManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseManifest(again); err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v", err)
		}
		_ = m.TemplateKey()
	})
}
