package cluster

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/qcluster/qcluster/internal/atomicfile"
)

// PKI is a cluster's own certificate authority: it signs every node's serving
// certificate and the owner's client certificate, so that nodes and the
// launcher authenticate each other with mutual TLS. Keys are ed25519, made at
// launch and never reused across clusters.
type PKI struct {
	CACert *x509.Certificate
	CAPEM  []byte
	caKey  ed25519.PrivateKey
}

// Identity is a certificate with its key, in PEM.
type Identity struct {
	CertPEM, KeyPEM []byte
}

// TLSCertificate returns the identity for crypto/tls.
func (id Identity) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(id.CertPEM, id.KeyPEM)
}

// defaultValidity spans the life of any test cluster with margin for clock
// skew between host and guests (a guest's clock starts from the RTC).
// Templates for snapshots live longer (Options.CertValidity).
const defaultValidity = 7 * 24 * time.Hour

func newPKI(clusterName string, validity time.Duration) (*PKI, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "qcluster CA " + clusterName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &PKI{CACert: cert, CAPEM: pemBlock("CERTIFICATE", der), caKey: key}, nil
}

// loadPKI is the PKI of a snapshot's manifest.
func loadPKI(certPEM, keyPEM string) (*PKI, error) {
	id := Identity{CertPEM: []byte(certPEM), KeyPEM: []byte(keyPEM)}
	pair, err := id.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	key, ok := pair.PrivateKey.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("cluster CA: key is %T, want ed25519", pair.PrivateKey)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || !cert.IsCA {
		return nil, fmt.Errorf("cluster CA: not a CA certificate (%v)", err)
	}
	return &PKI{CACert: cert, CAPEM: []byte(certPEM), caKey: key}, nil
}

// caKeyPEM is the CA's key in PEM, for a snapshot's manifest.
func (p *PKI) caKeyPEM() []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(p.caKey) // an ed25519 key always marshals
	return pemBlock("PRIVATE KEY", der)
}

func serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return new(big.Int).SetBytes(b)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// Issue signs a certificate for name, usable as a TLS server and client (nodes
// are both: they serve the API and the members call the leader), valid for
// the given DNS names and addresses.
func (p *PKI) Issue(name string, dnsNames []string, addrs []netip.Addr) (Identity, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Identity{}, fmt.Errorf("generate key for %s: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     p.CACert.NotAfter, // as long as the CA
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CACert, pub, p.caKey)
	if err != nil {
		return Identity{}, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Identity{}, fmt.Errorf("encode key for %s: %w", name, err)
	}
	return Identity{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", pkcs8)}, nil
}

// CAPool returns a pool holding only the cluster's CA.
func (p *PKI) CAPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CACert)
	return pool
}

// Fingerprint is the SHA-256 of the CA certificate, for summaries.
func (p *PKI) Fingerprint() string {
	return fmt.Sprintf("%x", sha256.Sum256(p.CACert.Raw))
}

// writeIdentity stores id as name.crt (0644) and name.key (0600) in dir.
func writeIdentity(dir, name string, id Identity) error {
	if err := atomicfile.Write(filepath.Join(dir, name+".crt"), id.CertPEM, 0o644); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, name+".key"), id.KeyPEM, 0o600)
}
