package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// tlsConfigs returns the gRPC server's TLS configuration and, with
// parameters, the client configuration members use towards the leader.
// Without TLS parameters the server uses a fresh self-signed certificate and
// accepts any client.
func tlsConfigs(cfg *config) (server, client *tls.Config, err error) {
	if cfg.caPEM == "" {
		cert, err := selfSigned(cfg.nodeName)
		if err != nil {
			return nil, nil, err
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil, nil
	}
	cert, err := tls.X509KeyPair([]byte(cfg.certPEM), []byte(cfg.keyPEM))
	if err != nil {
		return nil, nil, fmt.Errorf("tls: node certificate and key from the parameters: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cfg.caPEM)) {
		return nil, nil, errors.New("tls: ca_cert_pem holds no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("tls: parse node certificate: %w", err)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		CurrentTime: leaf.NotBefore.Add(time.Second)}); err != nil {
		return nil, nil, fmt.Errorf("tls: node certificate %q does not chain to the cluster CA: %w", leaf.Subject.CommonName, err)
	}
	server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   cfg.leaderName,
		MinVersion:   tls.VersionTLS13,
	}
	return server, client, nil
}

// selfSigned makes an Ed25519 certificate for name, valid for a year.
func selfSigned(name string) (tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: self-signed key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// requirePeerName checks that the caller's verified client certificate
// names name (CommonName or a DNS SAN). Without client certificates (no
// parameters) anyone may call.
func requirePeerName(ctx context.Context, name string) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	if len(ti.State.VerifiedChains) == 0 {
		if len(ti.State.PeerCertificates) == 0 {
			return nil // no client authentication configured
		}
		return status.Error(codes.Unauthenticated, "client certificate not verified")
	}
	leaf := ti.State.VerifiedChains[0][0]
	if leaf.Subject.CommonName == name || slices.Contains(leaf.DNSNames, name) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "name %q does not match the client certificate (CN %q, DNS %v)", name, leaf.Subject.CommonName, leaf.DNSNames)
}
