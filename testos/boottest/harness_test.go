package boottest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/qcluster/qcluster/imagebuild/disk"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/needs"
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
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	needs.Tool(t, "swtpm", "swtpm")
	needs.Tool(t, "swtpm_setup", "swtpm-tools")
	needs.File(t, ovmfCode, "apt-get install ovmf, or make deps")
	root, err := resolve.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	needs.File(t, filepath.Join(root, "third_party", "cache", "kernel"), "run make fetch")
}

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// fileBlob is a file as a disk.Blob.
type fileBlob struct {
	path string
	size int64
}

func (b fileBlob) Size() int64                  { return b.size }
func (b fileBlob) Open() (io.ReadCloser, error) { return os.Open(b.path) }

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
	st, err := os.Stat(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".img")
	if _, err := disk.Write(context.Background(), p, disk.Options{Seed: name, Loader: fileBlob{paths[1], st.Size()},
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
	disk      string
	params    string // -fw_cfg file, "" for none
	tpmSocket string // swtpm control socket, "" for no TPM
	hostPort  int    // forwarded to the agent's port
	guestPort int
	smp       int
}

// vm is a running QEMU with its console captured line by line.
type vm struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
	waitErr error

	mu    sync.Mutex
	lines []string
	at    []time.Duration // when each line arrived, since started
	added chan struct{}   // closed and replaced on every new line
}

// startVM boots QEMU (q35, OVMF, TCG) and returns at once.
func startVM(t *testing.T, dir string, o vmOptions) *vm {
	t.Helper()
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	b, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vars, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if o.smp == 0 {
		o.smp = 1
	}
	args := []string{
		// Machine: q35 under TCG (no usable KVM here), nothing implicit.
		"-nodefaults", "-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", strconv.Itoa(o.smp),
		"-display", "none", "-no-user-config",
		// Firmware: OVMF code read-only, a private copy of the variables.
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + vars,
		// The node disk and an entropy source (nothing may block on randomness).
		"-drive", "if=virtio,format=raw,file=" + o.disk,
		"-device", "virtio-rng-pci",
		// SLIRP NIC with the agent's gRPC port forwarded to loopback.
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:%d", o.hostPort, o.guestPort),
		"-device", "virtio-net-pci,netdev=n0",
		// Serial console on stdout.
		"-serial", "stdio",
	}
	if o.params != "" {
		args = append(args, "-fw_cfg", "name="+api.ParametersFwCfgName+",file="+o.params)
	}
	if o.tpmSocket != "" {
		args = append(args, "-chardev", "socket,id=tpm,path="+o.tpmSocket,
			"-tpmdev", "emulator,id=tpm0,chardev=tpm", "-device", "tpm-tis,tpmdev=tpm0")
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	v := &vm{cmd: cmd, exited: make(chan struct{}), added: make(chan struct{})}
	v.started = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stdout)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			v.addLine(strings.TrimRight(s.Text(), "\r"))
		}
		v.waitErr = cmd.Wait()
		if stderr.Len() > 0 {
			v.addLine("qemu stderr: " + strings.TrimSpace(stderr.String()))
		}
		close(v.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-v.exited
		if t.Failed() || testing.Verbose() {
			t.Logf("console of %s:\n%s", o.disk, v.timedConsole())
		}
	})
	return v
}

func (v *vm) addLine(l string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lines = append(v.lines, l)
	v.at = append(v.at, time.Since(v.started))
	close(v.added)
	v.added = make(chan struct{})
}

// timedConsole is the console with each line's arrival time.
func (v *vm) timedConsole() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var b strings.Builder
	for i, l := range v.lines {
		fmt.Fprintf(&b, "%7.3f %s\n", v.at[i].Seconds(), l)
	}
	return b.String()
}

func (v *vm) console() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.lines...)
}

// errExited says QEMU exited before the awaited line.
var errExited = errors.New("qemu exited")

// mark is the number of console lines so far, for waitLine.
func (v *vm) mark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.lines)
}

// waitLine waits for a console line containing substr, looking at lines from
// index from on, and returns it with the time since QEMU started; it fails
// early when QEMU exits.
func (v *vm) waitLine(substr string, from int, timeout time.Duration) (string, time.Duration, error) {
	deadline := time.After(timeout)
	seen := from
	for {
		v.mu.Lock()
		lines, added := v.lines, v.added
		v.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if strings.Contains(lines[seen], substr) {
				return lines[seen], time.Since(v.started), nil
			}
		}
		select {
		case <-added:
		case <-v.exited:
			v.mu.Lock()
			n := len(v.lines)
			v.mu.Unlock()
			if n > seen {
				continue
			}
			return "", 0, fmt.Errorf("waiting for %q: %w (%v)", substr, errExited, v.waitErr)
		case <-deadline:
			return "", 0, fmt.Errorf("waiting for %q: no such console line within %v", substr, timeout)
		}
	}
}

// waitExit waits for QEMU to exit and returns its wait error.
func (v *vm) waitExit(timeout time.Duration) (error, bool) {
	select {
	case <-v.exited:
		return v.waitErr, true
	case <-time.After(timeout):
		return nil, false
	}
}
