package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/testos/api"
)

// pki is a test CA that issues node certificates.
type pki struct {
	cert *x509.Certificate
	key  ed25519.PrivateKey
	pem  string
}

func newPKI(t *testing.T, cn string) *pki {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &pki{cert: c, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// config returns a node config with TLS material issued by the CA.
func (p *pki) config(t *testing.T, name, leader string) *config {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, pub, p.key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	params := &api.Parameters{NodeName: name, ClusterName: "c", LeaderAddress: leader, LeaderName: "leader",
		Tls: &api.TLS{CaCertPem: p.pem, CertPem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			KeyPem: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}))}}
	c, err := newConfig(params, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveLeader runs a Membership server with mTLS on loopback.
func serveLeader(t *testing.T, cfg *config, r *roster) string {
	t.Helper()
	serverTLS, _, err := tlsConfigs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	api.RegisterMembershipServer(srv, &membershipServer{r: r})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestTLSConfigs(t *testing.T) {
	ca := newPKI(t, "ca")
	if _, _, err := tlsConfigs(ca.config(t, "leader", "")); err != nil {
		t.Fatal(err)
	}
	// A node certificate of another CA is refused at once.
	cfg := ca.config(t, "leader", "")
	cfg.caPEM = newPKI(t, "other").pem
	if _, _, err := tlsConfigs(cfg); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Errorf("foreign certificate: err = %v", err)
	}
	// Without TLS parameters: a self-signed identity, no client checks.
	s, c, err := tlsConfigs(&config{nodeName: "bare"})
	if err != nil || c != nil || len(s.Certificates) != 1 || s.ClientCAs != nil {
		t.Errorf("self-signed: %v %v %v", s, c, err)
	}
}

// TestMemberJoinsLeader runs a member's loop against a leader over mTLS:
// it joins, heartbeats, and joins again when the leader forgets it.
func TestMemberJoinsLeader(t *testing.T) {
	ca := newPKI(t, "ca")
	leaderCfg := ca.config(t, "leader", "")
	r := newRoster(time.Now, "c", rosterEntry{name: "leader", address: "127.0.0.1:1"})
	addr := serveLeader(t, leaderCfg, r)

	memberCfg := ca.config(t, "m1", addr)
	_, clientTLS, err := tlsConfigs(memberCfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &memberState{cfg: memberCfg, tlsConfig: clientTLS, self: func() *api.JoinRequest {
		return &api.JoinRequest{Name: "m1", Address: "10.0.0.2:7443", NodeId: "id-m1", BootCount: 1, ClusterName: "c"}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (member status %v, roster %v)", what, m.status(), r.list())
			}
			<-tick.C
		}
	}
	joined := func() bool {
		mm := member(r.list(), "m1")
		return mm != nil && mm.Healthy && m.status().GetJoined()
	}
	waitFor("the join", joined)
	// The leader forgets the member (as after a leader restart): the next
	// heartbeat gets NOT_FOUND and the member joins again.
	r.mu.Lock()
	delete(r.members, "m1")
	r.mu.Unlock()
	waitFor("the re-join", joined)
}

// TestJoinNameMustMatchCertificate: a node may only join under the name in
// its certificate.
func TestJoinNameMustMatchCertificate(t *testing.T) {
	ca := newPKI(t, "ca")
	r := newRoster(time.Now, "c", rosterEntry{name: "leader"})
	addr := serveLeader(t, ca.config(t, "leader", ""), r)
	_, clientTLS, err := tlsConfigs(ca.config(t, "m1", addr))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = api.NewMembershipClient(conn).Join(ctx, &api.JoinRequest{Name: "m2", Address: "10.0.0.3:7443", ClusterName: "c"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("join as another name: %v, want PermissionDenied", err)
	}
	_, err = api.NewMembershipClient(conn).Join(ctx, &api.JoinRequest{Name: "m1", Address: "10.0.0.3:7443", ClusterName: "c"})
	if err != nil {
		t.Errorf("join under its own name: %v", err)
	}
}
