package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/clustertest"
	"github.com/qcluster/qcluster/testos/api"
	"github.com/qcluster/qcluster/testos/profile"
)

// healthWithin bounds waiting for the leader to change its mind about a
// member. The leader marks a member unhealthy after 3 missed heartbeats
// (3 s); the rest is room for a loaded machine under TCG.
const healthWithin = 30 * time.Second

// TestCluster runs the suites for a 3-node cluster, each on a fresh cluster
// of its own, restored from one template (cluster/warm): the first launch
// boots and snapshots it (the others wait for it), every suite after that
// restores in about a second. The suites run in parallel, -test.parallel
// (GOMAXPROCS) at a time: a reboot keeps one host core busy, a partition
// mostly waits.
func TestCluster(t *testing.T) {
	needsVMs(t)
	for _, s := range []struct {
		name string
		fn   func(*testing.T, *cluster.Cluster)
	}{
		{"Core", testCore},
		{"Security", testSecurity},
		{"Reboot", testReboot},
		{"KillStart", testKillStart},
		{"Partition", testPartition},
		{"Isolate", testIsolate},
	} {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c := clustertest.Launch(t, options(3, true))
			t.Logf("3-node cluster %s ready in %s", c.Name, time.Since(start).Round(time.Millisecond))
			if c.RestoredFrom == "" {
				t.Error("the cluster booted: it should have been restored from the template")
			}
			start = time.Now()
			s.fn(t, c)
			t.Logf("%s took %s", s.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// testCore: the leader lists every node healthy; each node booted slot A
// through verity with DATA mounted, has a TPM whose EK certificate the
// cluster's TPM CA issued, and the address the plan gave it; node names
// resolve to the right nodes.
func testCore(t *testing.T, c *cluster.Cluster) {
	m, err := members(rpcContext(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != len(c.Nodes) {
		t.Errorf("the leader lists %d members, want %d: %v", len(m), len(c.Nodes), m)
	}
	for _, n := range c.Nodes {
		mem := m[n.Name]
		if !mem.GetHealthy() || mem.GetLeader() != (n.Index == 0) {
			t.Errorf("%s at the leader: %v", n.Name, mem)
		}
		if n.Index > 0 && !strings.HasPrefix(mem.GetAddress(), n.Address.String()+":") {
			t.Errorf("%s joined from %q, planned address %s", n.Name, mem.GetAddress(), n.Address)
		}
	}

	ca := c.TPMCA()
	if ca == nil {
		t.Fatal("the cluster has no TPM CA")
	}
	eks := map[string]string{}
	for _, n := range c.Nodes {
		st := status(t, c, n.Index)
		role := api.Role_ROLE_MEMBER
		if n.Index == 0 {
			role = api.Role_ROLE_BOOTSTRAP
		}
		// The guests' cluster name is the plan's (a restore's own name,
		// c.Name, is the host's name for it).
		if st.GetNodeName() != n.Name || st.GetClusterName() != c.Plan.Name || st.GetRole() != role || st.GetHostname() != n.Name {
			t.Errorf("%s: name %q cluster %q role %v hostname %q", n.Name, st.GetNodeName(), st.GetClusterName(), st.GetRole(), st.GetHostname())
		}
		if st.GetSlot() != "A" || st.GetSlotSource() != "efivar" {
			t.Errorf("%s: slot %q from %q, want A from efivar", n.Name, st.GetSlot(), st.GetSlotSource())
		}
		if v := st.GetVerity(); v.GetState() != api.Verity_STATE_OK || !strings.Contains(st.GetKernelCmdline(), v.GetRootHash()) {
			t.Errorf("%s: verity %v", n.Name, v)
		}
		if d := st.GetData(); !d.GetMounted() || d.GetFilesystem() != "ext4" || !d.GetFormattedThisBoot() {
			t.Errorf("%s: data %v", n.Name, d)
		}
		if st.GetBootCount() != 1 || !st.GetMembership().GetJoined() {
			t.Errorf("%s: boot count %d, membership %v", n.Name, st.GetBootCount(), st.GetMembership())
		}
		if !slices.Contains(st.GetAddresses(), n.Address.String()+"/24") {
			t.Errorf("%s: addresses %v, planned %s/24", n.Name, st.GetAddresses(), n.Address)
		}
		tpm := st.GetTpm()
		if !tpm.GetPresent() || tpm.GetError() != "" || !tpm.GetEkCertificateMatches() {
			t.Errorf("%s: TPM present %v, error %q, EK certificate matches %v", n.Name, tpm.GetPresent(), tpm.GetError(), tpm.GetEkCertificateMatches())
		}
		if _, err := ca.VerifyEK(tpm.GetEkCertificateDer()); err != nil {
			t.Errorf("%s: %v", n.Name, err)
		}
		// The certificate the guest read from its TPM is the one the
		// launcher manufactured for it.
		if !bytes.Equal(tpm.GetEkCertificateDer(), n.EKCertificate) {
			t.Errorf("%s: the EK certificate in the TPM is not the one manufactured for it", n.Name)
		}
		sum := sha256.Sum256(tpm.GetEkPublicDer())
		if hex.EncodeToString(sum[:]) != tpm.GetEkPublicSha256() {
			t.Errorf("%s: ek_public_sha256 is not the SHA-256 of ek_public_der", n.Name)
		}
		if other, ok := eks[tpm.GetEkPublicSha256()]; ok {
			t.Errorf("%s has the same EK as %s", n.Name, other)
		}
		eks[tpm.GetEkPublicSha256()] = n.Name
	}

	// Names resolve, through the switch's resolver, to the node that holds
	// the certificate for that name. (The agent has no API to resolve a
	// name inside the guest; the switch's DNS server, which the guests
	// use, answers from the same leases.)
	for _, n := range c.Nodes {
		for _, name := range []string{n.Name, n.FQDN} {
			if err := handshake(c, name, c.ClientTLS(n.Name)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn, err := c.DialContext(ctx, "tcp", "node9:7443"); err == nil {
		conn.Close()
		t.Error("node9, which the cluster does not have, resolved")
	}
}

// handshake connects to name's agent port through the switch and completes
// a TLS handshake and one read with cfg (so that a refusal of the client's
// certificate, sent after the handshake in TLS 1.3, is seen).
func handshake(c *cluster.Cluster, name string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	raw, err := c.DialContext(ctx, "tcp", net.JoinHostPort(name, fmt.Sprint(profile.DefaultPort)))
	if err != nil {
		return err
	}
	defer raw.Close()
	dl, _ := ctx.Deadline()
	raw.SetDeadline(dl)
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"} // gRPC servers insist on ALPN h2
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		return err
	}
	// An HTTP/2 client preface; the server answers with its SETTINGS frame
	// if it accepted us, or a TLS alert if it did not.
	if _, err := io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		return err
	}
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		return err
	}
	return nil
}

// testSecurity: no client certificate, or one of another CA, is refused by
// every node; SOCKS5 without the credentials is refused; nothing listens
// beyond loopback; state is private.
func testSecurity(t *testing.T, c *cluster.Cluster) {
	foreign := foreignCertificate(t)
	for _, n := range c.Nodes {
		pool := c.ClientTLS(n.Name).RootCAs
		for _, tc := range []struct {
			what string
			cfg  *tls.Config
		}{
			{"no client certificate", &tls.Config{RootCAs: pool, ServerName: n.Name, MinVersion: tls.VersionTLS13}},
			{"a certificate of another CA", &tls.Config{RootCAs: pool, ServerName: n.Name, MinVersion: tls.VersionTLS13,
				// Sent even though the server asks for its own CA's.
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }}},
		} {
			err := handshake(c, n.Name, tc.cfg)
			// The server's refusal arrives as a TLS alert, not a timeout
			// or a reset.
			if err == nil || !strings.Contains(err.Error(), "remote error: tls:") {
				t.Errorf("%s with %s: %v, want a TLS alert", n.Name, tc.what, err)
			} else {
				t.Logf("%s with %s: %v", n.Name, tc.what, err)
			}
		}
		// The owner's certificate is accepted over the same path.
		if err := handshake(c, n.Name, c.ClientTLS(n.Name)); err != nil {
			t.Errorf("%s with the owner's certificate: %v", n.Name, err)
		}
	}

	testSOCKS5(t, c)
	testListeners(t)
	testModes(t, c)
}

// foreignCertificate is a client certificate of a CA the cluster never saw.
func foreignCertificate(t *testing.T) tls.Certificate {
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "foreign CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "owner"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// testSOCKS5: the proxy refuses a client that offers no authentication and
// one with a wrong password (RFC 1928, RFC 1929).
func testSOCKS5(t *testing.T, c *cluster.Cluster) {
	addr := c.SOCKS5.Address
	if c.SOCKS5.Username == "" || c.SOCKS5.Password == "" {
		t.Fatalf("SOCKS5 on %s has no credentials", addr)
	}
	// Only "no authentication required" offered: the reply must be
	// "no acceptable methods" (0xFF).
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 2)
	if _, err := io.ReadFull(conn, reply); err != nil {
		t.Errorf("SOCKS5 without authentication: reading the reply: %v", err)
	} else if !bytes.Equal(reply, []byte{5, 0xff}) {
		t.Errorf("SOCKS5 without authentication: reply %x, want 05ff (no acceptable methods)", reply)
	}
	conn.Close()

	for _, auth := range []*proxy.Auth{
		nil,
		{User: c.SOCKS5.Username, Password: c.SOCKS5.Password + "x"},
		{User: "x" + c.SOCKS5.Username, Password: c.SOCKS5.Password},
	} {
		d, err := proxy.SOCKS5("tcp", addr, auth, &net.Dialer{Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", c.Nodes[0].Address.String()+":7443")
		cancel()
		if err == nil {
			conn.Close()
			t.Errorf("SOCKS5 with auth %+v reached node0", auth)
		}
	}
	// The right credentials work over the same path.
	d, _ := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: c.SOCKS5.Username, Password: c.SOCKS5.Password}, &net.Dialer{Timeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", c.Nodes[0].Address.String()+":7443"); err != nil {
		t.Errorf("SOCKS5 with the credentials: %v", err)
	} else {
		conn.Close()
	}
}

// testListeners: this process and its helpers (nanoswitch, every QEMU and
// swtpm) listen on loopback only.
func testListeners(t *testing.T) {
	self := proc{PID: os.Getpid(), Comm: "e2e.test"}
	procs := append([]proc{self}, descendants(os.Getpid())...)
	count := map[string]int{}
	for _, p := range procs {
		count[role(p)]++
	}
	// A test that found no helper would pass for nothing.
	for comm, want := range map[string]int{"qemu": 3, "swtpm": 3, "nanoswitch": 1} {
		if count[comm] < want {
			t.Errorf("found %d %s processes below the test, want %d: %v", count[comm], comm, want, count)
		}
	}
	ls, err := tcpListeners(procs)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) == 0 {
		t.Error("no listening TCP socket found (the SOCKS5 proxy listens on loopback): is /proc/net/tcp read right?")
	}
	for _, l := range ls {
		if !l.Addr.Addr().Unmap().IsLoopback() {
			t.Errorf("%s listens on %s", l.Proc, l.Addr)
		} else {
			t.Logf("%s (pid %d) listens on %s", l.Proc.Comm, l.Proc.PID, l.Addr)
		}
	}
}

// testModes: the state, log and socket directories are 0700 and every
// private key and credential is 0600 (no access for group and others).
func testModes(t *testing.T, c *cluster.Cluster) {
	dirs := []string{c.StateDir, c.LogDir, filepath.Dir(c.SOCKS5.CredentialsFile), filepath.Join(c.StateDir, "tpm-ca")}
	for _, n := range c.Nodes {
		dirs = append(dirs, n.Dir, filepath.Join(n.Dir, "tpm"))
	}
	for _, d := range dirs {
		if fi, err := os.Stat(d); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700", d, fi.Mode().Perm())
		}
	}
	// Files that must exist and be private, besides whatever holds a PEM
	// private key anywhere in the state directory.
	private := map[string]bool{
		c.Files.ClientKey:        false,
		c.Files.Env:              false, // holds the SOCKS5 password
		c.SOCKS5.CredentialsFile: false,
		filepath.Join(c.StateDir, "tpm-ca", "signkey.pem"): false,
	}
	for _, n := range c.Nodes {
		private[filepath.Join(n.Dir, "parameters")] = false // the node's TLS key
		// The TPM's state holds its endorsement key's private part.
		states, err := filepath.Glob(filepath.Join(n.Dir, "tpm", "*"))
		if err != nil || len(states) == 0 {
			t.Errorf("%s: no TPM state files: %v", n.Name, err)
		}
		for _, p := range states {
			private[p] = false
		}
	}
	err := filepath.WalkDir(c.StateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if fi, _ := d.Info(); fi != nil && fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: directory mode %v gives access to group or others", p, fi.Mode().Perm())
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > 1<<20 {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("PRIVATE KEY-----")) {
			if _, listed := private[p]; !listed {
				private[p] = false
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range private {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			t.Error(err)
		case fi.Mode().Perm()&0o077 != 0:
			t.Errorf("%s: mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	t.Logf("%d directories 0700, %d private files checked", len(dirs), len(private))
}

// testReboot: node1 comes back with boot count 2, the same identity, its
// DATA file and the same EK, and the leader lists it healthy again.
func testReboot(t *testing.T, c *cluster.Cluster) {
	const i = 1
	before := status(t, c, i)
	conn, err := c.GRPC(i, profile.DefaultPort)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte(fmt.Sprintf("written by %s before the reboot\n", t.Name()))
	if _, err := api.NewNodeServiceClient(conn).WriteDataFile(rpcContext(t), &api.WriteDataFileRequest{Path: "e2e/reboot.txt", Content: content}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Reboot(context.Background(), i); err != nil {
		t.Fatal(err)
	}
	t.Logf("node%d rebooted and ready in %s", i, time.Since(start).Round(time.Millisecond))
	after := status(t, c, i)
	if after.GetBootCount() != before.GetBootCount()+1 || after.GetBootCount() != 2 {
		t.Errorf("boot count %d after %d, want 2", after.GetBootCount(), before.GetBootCount())
	}
	if after.GetNodeId() != before.GetNodeId() || after.GetNodeName() != before.GetNodeName() {
		t.Errorf("identity changed: %s/%s → %s/%s", before.GetNodeName(), before.GetNodeId(), after.GetNodeName(), after.GetNodeId())
	}
	if after.GetTpm().GetEkPublicSha256() != before.GetTpm().GetEkPublicSha256() || after.GetTpm().GetEkPublicSha256() == "" {
		t.Errorf("EK changed: %s → %s", before.GetTpm().GetEkPublicSha256(), after.GetTpm().GetEkPublicSha256())
	}
	if after.GetData().GetFormattedThisBoot() {
		t.Error("DATA was formatted again")
	}
	conn, err = c.GRPC(i, profile.DefaultPort)
	if err != nil {
		t.Fatal(err)
	}
	r, err := api.NewNodeServiceClient(conn).ReadDataFile(rpcContext(t), &api.ReadDataFileRequest{Path: "e2e/reboot.txt"})
	if err != nil || !bytes.Equal(r.GetContent(), content) {
		t.Errorf("DATA file after the reboot: %q, %v", r.GetContent(), err)
	}
	waitHealth(t, c, "node1", true, healthWithin)
	m, err := members(rpcContext(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if got := m["node1"]; got.GetBootCount() != 2 || got.GetNodeId() != before.GetNodeId() {
		t.Errorf("the leader lists %v", got)
	}
}

// testKillStart: killing node2 hard makes the leader mark it unhealthy
// within a few heartbeats while node1 stays healthy; starting it again
// makes it healthy.
func testKillStart(t *testing.T, c *cluster.Cluster) {
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	if s := c.Nodes[2].State(); s != cluster.StateStopped {
		t.Errorf("node2 state after Kill: %s", s)
	}
	took := waitHealth(t, c, "node2", false, healthWithin, "node1")
	t.Logf("kill → unhealthy at the leader: %s", took.Round(10*time.Millisecond))
	start := time.Now()
	if err := c.Start(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	t.Logf("node2 started and ready in %s", time.Since(start).Round(time.Millisecond))
	waitHealth(t, c, "node2", true, healthWithin, "node1")
	if st := status(t, c, 2); st.GetBootCount() != 2 {
		t.Errorf("node2 boot count %d after a kill and start, want 2", st.GetBootCount())
	}
}

// testPartition: cutting node0 from node2 makes node2 unhealthy at the
// leader while node1 stays healthy; healing recovers it.
func testPartition(t *testing.T, c *cluster.Cluster) {
	testFault(t, c, func(ctx context.Context) error { return c.Partition(ctx, 0, 2) })
}

// testIsolate: isolating node2 likewise; the host still reaches it.
func testIsolate(t *testing.T, c *cluster.Cluster) {
	testFault(t, c, func(ctx context.Context) error { return c.Isolate(ctx, 2) })
}

func testFault(t *testing.T, c *cluster.Cluster, fault func(context.Context) error) {
	waitHealth(t, c, "node2", true, healthWithin, "node1")
	if err := fault(rpcContext(t)); err != nil {
		t.Fatal(err)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			c.Heal(context.Background())
		}
	})
	took := waitHealth(t, c, "node2", false, healthWithin, "node1")
	t.Logf("fault → node2 unhealthy at the leader: %s", took.Round(10*time.Millisecond))
	// The host reaches node2 whatever is cut between the nodes.
	if st := status(t, c, 2); st.GetNodeName() != "node2" {
		t.Errorf("Status of node2 during the fault: %v", st)
	}
	if err := c.Heal(rpcContext(t)); err != nil {
		t.Fatal(err)
	}
	healed = true
	took = waitHealth(t, c, "node2", true, healthWithin, "node1")
	t.Logf("heal → node2 healthy at the leader: %s", took.Round(10*time.Millisecond))
}
