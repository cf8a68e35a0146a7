package boottest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/disk"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/resolve"
	"github.com/qcluster/qcluster/swtpm"
	"github.com/qcluster/qcluster/testos/api"
)

// bootDeadline bounds one boot to the ready line (or to QEMU's exit).
const bootDeadline = 3 * time.Minute

// builtImage runs the image build (a no-op when out/ is up to date) once per
// test binary and returns the OS image and loader paths.
var builtImage = sync.OnceValues(func() ([2]string, error) {
	root, err := resolve.RepoRoot()
	if err != nil {
		return [2]string{}, err
	}
	out := filepath.Join(root, "out")
	cmd := exec.Command("go", "run", "./testos/build", "--out", out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return [2]string{}, fmt.Errorf("go run ./testos/build: %w\n%s", err, b)
	}
	return [2]string{filepath.Join(out, "testos"), filepath.Join(out, "loader.efi")}, nil
})

// prerequisites skips (or, in CI, fails) when something to boot is missing.
func prerequisites(t *testing.T) {
	t.Helper()
	needs.Short(t, "boots the testos image in QEMU under TCG")
	// It builds the image from the checkout (builtImage): not under Bazel.
	root := needs.Checkout(t)
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	needs.Tool(t, "swtpm", "swtpm")
	needs.Tool(t, "swtpm_setup", "swtpm-tools")
	if _, err := qemu.FindOVMF(qemu.FirmwareQuery{}); err != nil {
		// Skips locally, fails in CI, with the package to install.
		needs.File(t, "/usr/share/OVMF/OVMF_CODE_4M.fd", "apt-get install ovmf, or make deps: "+err.Error())
	}
	needs.File(t, filepath.Join(root, "third_party", "cache", "kernel"), "run make fetch")
}

// makeDisk synthesizes a node disk from the built image in dir.
func makeDisk(t *testing.T, dir, name string) string {
	t.Helper()
	paths, err := builtImage()
	if err != nil {
		t.Fatal(err)
	}
	img, err := osimage.Open(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	kernel, system, err := disk.ImageBlobs(img, false)
	if err != nil {
		t.Fatal(err)
	}
	loader, err := blockdev.NewFileBlob(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".img")
	if _, err := disk.Write(context.Background(), p, disk.Options{Seed: name, Loader: loader,
		Kernel: kernel, System: system}); err != nil {
		t.Fatal(err)
	}
	return p
}

// testCA is a throw-away cluster CA.
type testCA struct {
	cert *x509.Certificate
	key  ed25519.PrivateKey
	pem  string
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "qcluster boottest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// issue returns PEM certificate and PKCS#8 key for name, usable for server
// and client auth.
func (ca *testCA) issue(t *testing.T, name string) (certPEM, keyPEM string) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}))
}

// dial connects to a node's gRPC port with a client certificate of ca,
// expecting the server certificate to name serverName.
func (ca *testCA) dial(t *testing.T, addr, serverName string) *grpc.ClientConn {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, "boottest-client")
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// writeParams writes p as protojson for -fw_cfg.
func writeParams(t *testing.T, dir string, p *api.Parameters) string {
	t.Helper()
	b, err := protojson.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "parameters.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startTPM manufactures a TPM (EK and platform certificates from a local CA
// of its own) and runs swtpm on a UNIX control socket in dir. It returns the
// socket and the CA the EK certificate must chain to.
func startTPM(t *testing.T, dir string) (string, *swtpm.CA) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca, err := swtpm.NewCA(ctx, filepath.Join(dir, "tpm-ca"), swtpm.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ca.Manufacture(ctx, filepath.Join(dir, "tpm"), swtpm.ManufactureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "swtpm.sock")
	tpm, err := swtpm.Start(ctx, swtpm.Options{StateDir: m.StateDir, CtrlSocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tpm.Close() })
	return sock, ca
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// vmOptions describe one boot.
type vmOptions struct {
	name      string
	disk      string
	params    string // -fw_cfg file, "" for none
	tpmSocket string // swtpm control socket, "" for no TPM
	hostPort  int    // forwarded to the agent's port
	guestPort int
}

// startVM boots the node disk in QEMU (q35, OVMF, TCG, virtio-rng, SLIRP)
// through package qemu and returns once QEMU runs.
func startVM(t *testing.T, dir string, o vmOptions) *qemu.VM {
	t.Helper()
	ovmf, err := qemu.FindOVMF(qemu.FirmwareQuery{})
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	if _, err := qemu.PrepareVars(ovmf.VarsTemplate, vars); err != nil {
		t.Fatal(err)
	}
	m := qemu.Machine{
		Name:     o.name,
		Accel:    qemu.AccelTCG, // the paravirtual KVM here hangs stock guests
		Firmware: ovmf.Firmware(vars),
		Disks:    []qemu.Disk{{Path: o.disk}},
		NICs: []qemu.NIC{{User: &qemu.UserNet{HostForwards: []qemu.HostForward{{
			Host: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(o.hostPort)), GuestPort: uint16(o.guestPort),
		}}}}},
		Reboot: true, // Management.Reboot restarts the guest in the same QEMU
	}
	if o.params != "" {
		m.FwCfg = []qemu.FwCfgFile{{Name: api.ParametersFwCfgName, File: o.params}}
	}
	if o.tpmSocket != "" {
		m.TPM = &qemu.TPM{CtrlSocket: o.tpmSocket}
	}
	v, err := qemu.New(m, qemu.Options{Dir: filepath.Join(dir, "vm"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = v.Close()
		if t.Failed() || testing.Verbose() {
			b, _ := os.ReadFile(v.Console().LogPath())
			t.Logf("console of %s:\n%s", o.name, b)
		}
	})
	return v
}

// waitLine waits for a console line at or after from that matches re and
// returns it with the time since QEMU started. The console also matches the
// line still being written, so re must not match a prefix of the line that
// is wanted (anchor it with $ on something only the whole line has).
func waitLine(v *qemu.VM, from qemu.Cursor, re string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	line, err := v.Console().WaitForFrom(ctx, from, regexp.MustCompile(re))
	return line, time.Since(v.StartedAt()), err
}

// readyLine is the pattern of a node's whole ready line.
func readyLine(name, addr string) string {
	return "^" + regexp.QuoteMeta(api.ReadyPrefix+"node="+name+" addr="+addr) + "$"
}

// waitExit waits for QEMU to exit, at most timeout.
func waitExit(v *qemu.VM, timeout time.Duration) (qemu.Exit, error) {
	select {
	case <-v.Exited():
		return v.Wait()
	case <-time.After(timeout):
		return qemu.Exit{}, fmt.Errorf("qemu %s still runs after %v", v.Argv()[0], timeout)
	}
}
