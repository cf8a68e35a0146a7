package swtpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/qcluster/qcluster/internal/atomicfile"
)

// File names inside the CA directory. The lock file's name is the one
// swtpm_localca derives from its statedir, so NewCA and swtpm_localca exclude
// each other.
const (
	caKeyFile       = "signkey.pem"
	caCertFile      = "issuercert.pem"
	caSerialFile    = "certserial"
	caLockFile      = ".lock.swtpm-localca"
	localCAConfFile = "swtpm-localca.conf"
	localCAOptsFile = "swtpm-localca.options"
	setupConfFile   = "swtpm_setup.conf"
	caCommonName    = "qcluster swtpm CA"
	caClockSkew     = time.Hour // the CA's NotBefore lies this far in the past
)

// noExpiry is RFC 5280's "no well-defined expiration date" (99991231235959Z),
// which swtpm_localca also puts in the EK certificates it issues.
var noExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// CAOptions configures NewCA. The zero value finds every program in PATH.
type CAOptions struct {
	// SetupBinary is the swtpm_setup executable. Default: "swtpm_setup" in PATH.
	SetupBinary string
	// LocalCABinary is the swtpm_localca executable that swtpm_setup calls to
	// sign certificates. Default: swtpm_localca beside SetupBinary, else in PATH.
	// (/usr/share/swtpm/swtpm-localca is only a shell wrapper around it.)
	LocalCABinary string
	// TPMBinary is the swtpm executable that swtpm_setup runs. Default: "swtpm" in PATH.
	TPMBinary string
	// Logger receives progress records (debug level). Default: discard.
	Logger *slog.Logger
	// CertPEM and KeyPEM, if set, are an existing CA (e.g. a snapshot's) that
	// a directory without one takes instead of a new one. Default: none.
	CertPEM, KeyPEM []byte
}

// CA is a cluster's local certificate authority for TPM endorsement key
// certificates, and the swtpm_setup configuration that uses it. It is safe
// for concurrent use.
type CA struct {
	dir     string
	cert    *x509.Certificate
	certPEM []byte
	setup   string // swtpm_setup
	localca string // swtpm_localca
	tpm     string // swtpm
	log     *slog.Logger
}

// NewCA opens the CA kept in dir, creating dir (0700), the CA key (0600) and
// certificate if they do not exist yet, and (re)writes the swtpm_setup and
// swtpm_localca configuration files in dir. Programs are looked up first, so a
// missing swtpm_setup fails before anything is written. ctx bounds waiting for
// the CA lock.
func NewCA(ctx context.Context, dir string, opts CAOptions) (*CA, error) {
	ca, err := newCA(ctx, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("swtpm: CA in %s: %w", dir, err)
	}
	return ca, nil
}

func newCA(ctx context.Context, dir string, opts CAOptions) (*CA, error) {
	dir, err := absPath("directory", dir)
	if err != nil {
		return nil, err
	}
	if err := configSafe("CA directory", dir); err != nil {
		return nil, err
	}
	ca := &CA{dir: dir, log: opts.Logger}
	if ca.log == nil {
		ca.log = slog.New(slog.DiscardHandler)
	}
	if ca.setup, err = lookBinary(opts.SetupBinary, "swtpm_setup"); err != nil {
		return nil, err
	}
	if ca.tpm, err = lookBinary(opts.TPMBinary, "swtpm"); err != nil {
		return nil, err
	}
	if opts.LocalCABinary == "" {
		if beside := filepath.Join(filepath.Dir(ca.setup), "swtpm_localca"); isExecutable(beside) {
			opts.LocalCABinary = beside
		}
	}
	if ca.localca, err = lookBinary(opts.LocalCABinary, "swtpm_localca"); err != nil {
		return nil, err
	}
	// The programs' paths go into a config file and into --tpm "PATH socket",
	// which swtpm_setup splits at spaces.
	for _, p := range []string{ca.setup, ca.tpm, ca.localca} {
		if err := configSafe("program path", p); err != nil {
			return nil, err
		}
		if strings.ContainsRune(p, ' ') {
			return nil, fmt.Errorf("program path %q contains a space, which swtpm_setup cannot handle", p)
		}
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockCA(ctx, filepath.Join(dir, caLockFile))
	if err != nil {
		return nil, err
	}
	defer unlock()

	if len(opts.CertPEM) > 0 {
		if err := ca.seed(opts.CertPEM, opts.KeyPEM); err != nil {
			return nil, err
		}
	}
	if err := ca.loadOrCreate(); err != nil {
		return nil, err
	}
	if err := ca.writeConfig(); err != nil {
		return nil, err
	}
	return ca, nil
}

// Dir returns the CA's directory (absolute).
func (ca *CA) Dir() string { return ca.dir }

// Certificate returns the CA certificate that every EK and platform
// certificate issued here chains to. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate, PEM-encoded.
func (ca *CA) CertPEM() []byte { return slices.Clone(ca.certPEM) }

// CertPath returns the path of the PEM-encoded CA certificate.
func (ca *CA) CertPath() string { return filepath.Join(ca.dir, caCertFile) }

// KeyPath returns the path of the PEM-encoded CA key (mode 0600). A CA
// directory seeded with this key and CertPath's certificate is the same CA.
func (ca *CA) KeyPath() string { return filepath.Join(ca.dir, caKeyFile) }

// SetupConfig returns the path of the swtpm_setup.conf written for this CA.
func (ca *CA) SetupConfig() string { return filepath.Join(ca.dir, setupConfFile) }

// oidSubjectAltName is id-ce-subjectAltName (RFC 5280, 4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEK parses a DER-encoded EK certificate (as read from NV index
// 0x01c00002 or 0x01c00016, or returned by Manufacture) and checks that this
// CA issued it.
//
// The TCG EK credential profile puts the TPM's manufacturer, model and version
// in a critical subjectAltName holding only a directoryName, which
// crypto/x509 counts as an unhandled critical extension; VerifyEK accepts it.
// EK certificates carry the extended key usage tcg-kp-EKCertificate
// (2.23.133.8.1), so any extended key usage is accepted.
func (ca *CA) VerifyEK(der []byte) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("swtpm: parse EK certificate: %w", err)
	}
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions,
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(oidSubjectAltName) })
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:     roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("swtpm: verify EK certificate %q (serial %s) against %s: %w",
			cert.Subject.CommonName, cert.SerialNumber, ca.CertPath(), err)
	}
	return cert, nil
}

// loadOrCreate reads the CA key and certificate, or creates them when the
// certificate does not exist. The certificate is renamed into place last, so
// its presence means the pair is complete; a key without a certificate is
// what an interrupted creation leaves, and is replaced.
func (ca *CA) loadOrCreate() error {
	certPath := filepath.Join(ca.dir, caCertFile)
	keyPath := filepath.Join(ca.dir, caKeyFile)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		return ca.load(certPath, certPEM, keyPath)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("generate CA serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName, Organization: []string{"qcluster"}},
		NotBefore:             time.Now().Add(-caClockSkew).UTC().Truncate(time.Second),
		NotAfter:              noExpiry,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal CA key: %w", err)
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return err
	}
	ca.log.Debug("swtpm: created CA", "dir", ca.dir, "serial", serial)
	return ca.load(certPath, certPEM, keyPath)
}

// seed writes a given CA's key and certificate into a directory that has
// no certificate yet; load then checks that they belong together.
func (ca *CA) seed(certPEM, keyPEM []byte) error {
	if _, err := os.Stat(ca.CertPath()); err == nil {
		return nil
	}
	if err := atomicfile.Write(ca.KeyPath(), keyPEM, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(ca.CertPath(), certPEM, 0o644)
}

// load parses the CA certificate and checks that the key in keyPath belongs
// to it.
func (ca *CA) load(certPath string, certPEM []byte, keyPath string) error {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return fmt.Errorf("%s: no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", certPath, err)
	}
	if !cert.IsCA {
		return fmt.Errorf("%s: not a CA certificate", certPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return fmt.Errorf("%s: no PEM block", keyPath)
	}
	key, err := parsePrivateKey(kb)
	if err != nil {
		return fmt.Errorf("%s: %w", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("%s does not hold the key of %s", keyPath, certPath)
	}
	ca.cert, ca.certPEM = cert, certPEM
	return nil
}

func parsePrivateKey(b *pem.Block) (crypto.Signer, error) {
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (an encrypted key?)", b.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", k)
	}
	return s, nil
}

// writeConfig writes the three configuration files that point swtpm_setup
// and swtpm_localca at this directory.
func (ca *CA) writeConfig() error {
	p := func(name string) string { return filepath.Join(ca.dir, name) }
	files := []struct {
		name, content string
	}{
		{localCAConfFile, "# Written by qcluster (swtpm.NewCA); rewritten on every NewCA.\n" +
			"statedir = " + ca.dir + "\n" +
			"signingkey = " + p(caKeyFile) + "\n" +
			"issuercert = " + p(caCertFile) + "\n" +
			"certserial = " + p(caSerialFile) + "\n"},
		// swtpm_cert options for the platform certificate.
		{localCAOptsFile, "--platform-manufacturer qcluster\n" +
			"--platform-version 2.1\n" +
			"--platform-model QEMU\n"},
		{setupConfFile, "# Written by qcluster (swtpm.NewCA); rewritten on every NewCA.\n" +
			"create_certs_tool = " + ca.localca + "\n" +
			"create_certs_tool_config = " + p(localCAConfFile) + "\n" +
			"create_certs_tool_options = " + p(localCAOptsFile) + "\n" +
			"active_pcr_banks = " + defaultPCRBanks + "\n"},
	}
	for _, f := range files {
		if err := atomicfile.Write(p(f.name), []byte(f.content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// absPath returns path (what it is, for the error) made absolute; an empty
// path is an error.
func absPath(what, path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("no %s given", what)
	}
	return filepath.Abs(path)
}

// configSafe rejects paths that swtpm_setup's and swtpm_localca's config
// parsers would cut short ('#' starts a comment, a newline ends the value) or
// expand ('$' starts an environment variable reference).
func configSafe(what, path string) error {
	if i := strings.IndexAny(path, "#$\n"); i >= 0 {
		return fmt.Errorf("%s %q contains %q, which swtpm's config files cannot hold", what, path, path[i])
	}
	return nil
}

// lockCA takes swtpm_localca's lock on the CA directory, polling so that ctx
// can end the wait.
func lockCA(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(time.Millisecond),
		backoff.WithMaxInterval(50*time.Millisecond),
		backoff.WithMaxElapsedTime(0))
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the flock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// isExecutable reports whether path is a regular file with an execute bit.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
