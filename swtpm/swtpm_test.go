package swtpm_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/internal/testerr"
	"github.com/qcluster/qcluster/swtpm"
)

// NV indices of the TCG EK credential profile (2.2.1.4, "Low Range").
const (
	nvEKCertRSA    = 0x01c00002
	nvEKCertECC    = 0x01c00016
	nvPlatformCert = 0x01c08000 // where swtpm_setup puts the platform certificate
	ekHandleRSA    = 0x81010001 // persistent RSA EK made by swtpm_setup
)

func needSwtpm(t testing.TB) {
	t.Helper()
	needs.Tool(t, "swtpm", "swtpm")
	needs.Tool(t, "swtpm_setup", "swtpm-tools")
	needs.Tool(t, "swtpm_localca", "swtpm-tools")
	needs.Tool(t, "swtpm_cert", "swtpm-tools")
}

func newCA(t testing.TB) *swtpm.CA {
	t.Helper()
	ca, err := swtpm.NewCA(context.Background(), filepath.Join(t.TempDir(), "ca"), swtpm.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func manufacture(t testing.TB, ca *swtpm.CA, name string) *swtpm.Manufactured {
	t.Helper()
	m, err := ca.Manufacture(context.Background(), filepath.Join(t.TempDir(), name), swtpm.ManufactureOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestNewCA(t *testing.T) {
	needSwtpm(t)
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := swtpm.NewCA(context.Background(), dir, swtpm.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("CA dir mode %v, want 0700", got)
	}
	if got := mode(t, filepath.Join(dir, "signkey.pem")); got != 0o600 {
		t.Errorf("CA key mode %v, want 0600", got)
	}
	conf, err := os.ReadFile(ca.SetupConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"create_certs_tool = /",
		"create_certs_tool_config = " + filepath.Join(dir, "swtpm-localca.conf"),
		"create_certs_tool_options = " + filepath.Join(dir, "swtpm-localca.options"),
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("swtpm_setup.conf lacks %q:\n%s", want, conf)
		}
	}
	if !ca.Certificate().IsCA || !bytes.Contains(ca.CertPEM(), []byte("BEGIN CERTIFICATE")) {
		t.Errorf("CA certificate: IsCA %v, PEM %q", ca.Certificate().IsCA, ca.CertPEM())
	}

	// Opening the directory again keeps the CA.
	again, err := swtpm.NewCA(context.Background(), dir, swtpm.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Certificate().Equal(ca.Certificate()) {
		t.Error("second NewCA made a new CA certificate")
	}
}

func TestNewCABadInput(t *testing.T) {
	needSwtpm(t)
	base := t.TempDir()
	for _, tc := range []struct {
		name, dir string
		opts      swtpm.CAOptions
		want      string
	}{
		{"hash in path", filepath.Join(base, "a#b"), swtpm.CAOptions{}, "config files cannot hold"},
		{"missing swtpm_setup", filepath.Join(base, "x"), swtpm.CAOptions{SetupBinary: "/nonexistent/swtpm_setup"}, "Debian package swtpm-tools"},
		{"missing swtpm", filepath.Join(base, "y"), swtpm.CAOptions{TPMBinary: "/nonexistent/swtpm"}, "Debian package swtpm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := swtpm.NewCA(context.Background(), tc.dir, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tc.want)
			}
			t.Log(err)
			if _, err := os.Stat(tc.dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was created (stat: %v)", tc.dir, err)
			}
		})
	}
	// A file where the directory should be.
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := swtpm.NewCA(context.Background(), file, swtpm.CAOptions{}); err == nil {
		t.Error("NewCA on a regular file succeeded")
	}
}

// TestManufactureAndRun manufactures a node, runs its swtpm, and talks TPM 2.0
// to it the way QEMU and the firmware would: CMD_INIT on the control channel,
// then TPM2_Startup and friends on the data channel.
func TestManufactureAndRun(t *testing.T) {
	needSwtpm(t)
	ca := newCA(t)
	m := manufacture(t, ca, "node1")
	if !m.Created {
		t.Error("first Manufacture: Created = false")
	}
	for _, der := range [][]byte{m.EKCertRSA, m.EKCertECC} {
		cert, err := ca.VerifyEK(der)
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.CommonName != "node1" {
			t.Errorf("EK certificate subject %q, want CN=node1", cert.Subject)
		}
	}
	if got := mode(t, m.StateDir); got != 0o700 {
		t.Errorf("state dir mode %v, want 0700", got)
	}
	if got := mode(t, filepath.Join(m.StateDir, "tpm2-00.permall")); got != 0o600 {
		t.Errorf("state file mode %v, want 0600", got)
	}
	permall, err := os.ReadFile(filepath.Join(m.StateDir, "tpm2-00.permall"))
	if err != nil {
		t.Fatal(err)
	}

	// Idempotent: a second Manufacture keeps the state.
	again, err := ca.Manufacture(context.Background(), m.StateDir, swtpm.ManufactureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || !bytes.Equal(again.EKCertRSA, m.EKCertRSA) {
		t.Errorf("second Manufacture: Created %v, same EK cert %v", again.Created, bytes.Equal(again.EKCertRSA, m.EKCertRSA))
	}
	if b, _ := os.ReadFile(filepath.Join(m.StateDir, "tpm2-00.permall")); !bytes.Equal(b, permall) {
		t.Error("second Manufacture changed the state")
	}

	sockets := t.TempDir()
	logFile := filepath.Join(sockets, "swtpm.log")
	tpm, err := swtpm.Start(context.Background(), swtpm.Options{
		StateDir:   m.StateDir,
		CtrlSocket: filepath.Join(sockets, "ctrl"),
		DataSocket: filepath.Join(sockets, "data"),
		LogFile:    logFile,
		LogLevel:   2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })

	ctrlInit(t, filepath.Join(sockets, "ctrl"))
	conn, err := net.Dial("unix", filepath.Join(sockets, "data"))
	if err != nil {
		t.Fatal(err)
	}
	tp := transport.FromReadWriter(framed{conn})
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(tp); err != nil {
		t.Fatalf("TPM2_Startup: %v", err)
	}
	rnd, err := tpm2.GetRandom{BytesRequested: 16}.Execute(tp)
	if err != nil || len(rnd.RandomBytes.Buffer) != 16 {
		t.Fatalf("TPM2_GetRandom: %v (%d bytes)", err, len(rnd.RandomBytes.Buffer))
	}

	// The EK certificates in NV memory are the ones Manufacture returned,
	// chain to the CA, are write-locked, and certify the TPM's own EK.
	rsaCert := readNV(t, tp, nvEKCertRSA)
	if !bytes.Equal(rsaCert, m.EKCertRSA) {
		t.Error("RSA EK certificate in NV differs from Manufactured.EKCertRSA")
	}
	if !bytes.Equal(readNV(t, tp, nvEKCertECC), m.EKCertECC) {
		t.Error("ECC EK certificate in NV differs from Manufactured.EKCertECC")
	}
	cert, err := ca.VerifyEK(rsaCert)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(ekHandleRSA)}.Execute(tp)
	if err != nil {
		t.Fatalf("TPM2_ReadPublic(EK): %v", err)
	}
	ek, err := pub.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	modulus, err := ek.Unique.RSA()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(modulus.Buffer, cert.PublicKey.(*rsa.PublicKey).N.Bytes()) {
		t.Error("the EK certificate does not certify the TPM's RSA EK")
	}
	if _, ok := mustVerify(t, ca, m.EKCertECC).PublicKey.(*ecdsa.PublicKey); !ok {
		t.Error("ECC EK certificate holds no ECDSA key")
	}
	if _, err := (tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(nvPlatformCert)}).Execute(tp); err != nil {
		t.Errorf("platform certificate index: %v", err)
	}

	// Closing the data connection ends swtpm (--terminate); every waiter sees
	// the same clean exit.
	conn.Close()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = tpm.Wait() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Wait #%d: %v", i, err)
		}
	}
	<-tpm.Exited()
	if err := tpm.Close(); err != nil {
		t.Errorf("Close after exit: %v", err)
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "Ctrl Cmd") {
		t.Errorf("log file lacks the level-2 trace; it holds:\n%s", log)
	}
	if got := mode(t, logFile); got != 0o600 {
		t.Errorf("log file mode %v, want 0600", got)
	}
}

func mustVerify(t *testing.T, ca *swtpm.CA, der []byte) *x509.Certificate {
	t.Helper()
	c, err := ca.VerifyEK(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestParallelManufacture manufactures three nodes at once against one fresh
// CA: distinct EKs and serials, all certified by the CA.
func TestParallelManufacture(t *testing.T) {
	needSwtpm(t)
	ca := newCA(t)
	dir := t.TempDir()
	ms := make([]*swtpm.Manufactured, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range ms {
		wg.Go(func() {
			ms[i], errs[i] = ca.Manufacture(context.Background(), filepath.Join(dir, fmt.Sprintf("node%d", i)), swtpm.ManufactureOptions{})
		})
	}
	wg.Wait()
	serials := map[string]bool{}
	keys := map[string]bool{}
	for i, m := range ms {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		cert := mustVerify(t, ca, m.EKCertRSA)
		serials[cert.SerialNumber.String()] = true
		keys[cert.PublicKey.(*rsa.PublicKey).N.String()] = true
		if want := fmt.Sprintf("node%d", i); cert.Subject.CommonName != want {
			t.Errorf("node %d: EK certificate CN %q, want %q", i, cert.Subject.CommonName, want)
		}
	}
	if len(serials) != 3 || len(keys) != 3 {
		t.Errorf("%d distinct serials and %d distinct EKs among 3 nodes", len(serials), len(keys))
	}
}

// TestManufactureSameDirTwice races two Manufacture calls for one directory:
// both succeed with the same state, exactly one made it.
func TestManufactureSameDirTwice(t *testing.T) {
	needSwtpm(t)
	ca := newCA(t)
	dir := filepath.Join(t.TempDir(), "node")
	var ms [2]*swtpm.Manufactured
	var errs [2]error
	var wg sync.WaitGroup
	for i := range ms {
		wg.Go(func() { ms[i], errs[i] = ca.Manufacture(context.Background(), dir, swtpm.ManufactureOptions{}) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs[0], errs[1])
	}
	if ms[0].Created == ms[1].Created || !bytes.Equal(ms[0].EKCertRSA, ms[1].EKCertRSA) {
		t.Errorf("Created %v/%v, same EK cert %v", ms[0].Created, ms[1].Created, bytes.Equal(ms[0].EKCertRSA, ms[1].EKCertRSA))
	}
	entries, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("scratch directories left beside the state: %v", entries)
	}
}

func TestManufactureBadInput(t *testing.T) {
	needSwtpm(t)
	ca := newCA(t)
	base := t.TempDir()
	foreign := filepath.Join(base, "foreign")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "keep-me"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir, want string }{
		{"foreign files", foreign, "not a TPM 2 state directory"},
		{"missing parent", filepath.Join(base, "nope", "node"), "parent directory"},
		{"comma", filepath.Join(base, "a,b"), "option syntax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.Manufacture(context.Background(), tc.dir, swtpm.ManufactureOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tc.want)
			}
			t.Log(err)
		})
	}
	if b, err := os.ReadFile(filepath.Join(foreign, "keep-me")); err != nil || string(b) != "x" {
		t.Errorf("foreign file touched: %q, %v", b, err)
	}
	entries, _ := os.ReadDir(base)
	if len(entries) != 1 {
		t.Errorf("left behind in %s: %v", base, entries)
	}
}

func TestManufactureCancelled(t *testing.T) {
	needSwtpm(t)
	ca := newCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := filepath.Join(t.TempDir(), "node")
	if _, err := ca.Manufacture(ctx, dir, swtpm.ManufactureOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	if pids := swtpmProcesses(t, filepath.Dir(dir)); len(pids) > 0 {
		t.Errorf("processes left running: %v", pids)
	}
}

// TestStartBadState: a state swtpm cannot load fails Start with swtpm's own
// message, and leaves no process.
func TestStartBadState(t *testing.T) {
	needSwtpm(t)
	m := manufacture(t, newCA(t), "node")
	if err := os.WriteFile(filepath.Join(m.StateDir, "tpm2-00.permall"), bytes.Repeat([]byte{0x5a}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := swtpm.Start(context.Background(), swtpm.Options{StateDir: m.StateDir, CtrlSocket: filepath.Join(t.TempDir(), "ctrl")})
	var pe *swtpm.ProcessError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a *ProcessError", err)
	}
	testerr.Want(t, err, nil, "Could not initialize libtpms", "swtpm socket --tpm2", "CMD_INIT")
	t.Log(err)
	if pids := swtpmProcesses(t, m.StateDir); len(pids) > 0 {
		t.Errorf("swtpm left running: %v", pids)
	}
}

// TestStartExits: swtpm exiting during start-up (here: its socket directory
// does not exist) is reported with its stderr at once.
func TestStartExits(t *testing.T) {
	needSwtpm(t)
	m := manufacture(t, newCA(t), "node")
	_, err := swtpm.Start(context.Background(), swtpm.Options{StateDir: m.StateDir, CtrlSocket: filepath.Join(t.TempDir(), "missing", "ctrl")})
	var pe *swtpm.ProcessError
	if !errors.As(err, &pe) || pe.Output == "" || !strings.Contains(err.Error(), "exit status") {
		t.Fatalf("err = %v, want a *ProcessError with swtpm's exit status and output", err)
	}
	t.Log(err)
}

func TestStartBadInput(t *testing.T) {
	needSwtpm(t)
	m := manufacture(t, newCA(t), "node")
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	inUse := filepath.Join(dir, "inuse")
	l, err := net.Listen("unix", inUse)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name string
		opts swtpm.Options
		want string
	}{
		{"not manufactured", swtpm.Options{StateDir: t.TempDir(), CtrlSocket: filepath.Join(dir, "c1")}, "not manufactured"},
		{"long socket path", swtpm.Options{StateDir: m.StateDir, CtrlSocket: "/tmp/" + strings.Repeat("x", 103)}, "UNIX sockets allow 107"},
		{"regular file at socket path", swtpm.Options{StateDir: m.StateDir, CtrlSocket: regular}, "not a socket"},
		{"socket in use", swtpm.Options{StateDir: m.StateDir, CtrlSocket: inUse}, "in use"},
		{"missing binary", swtpm.Options{Binary: "/nonexistent/swtpm", StateDir: m.StateDir, CtrlSocket: filepath.Join(dir, "c2")}, "Debian package swtpm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := swtpm.Start(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tc.want)
			}
			t.Log(err)
		})
	}
	if !errors.Is(mustErr(swtpm.Start(context.Background(), swtpm.Options{StateDir: t.TempDir(), CtrlSocket: filepath.Join(dir, "c3")})), swtpm.ErrNotManufactured) {
		t.Error("an empty state directory does not give ErrNotManufactured")
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "x" {
		t.Errorf("regular file at the socket path touched: %q, %v", b, err)
	}
}

func mustErr(_ *swtpm.TPM, err error) error { return err }

func TestClose(t *testing.T) {
	needSwtpm(t)
	m := manufacture(t, newCA(t), "node")
	tpm, err := swtpm.Start(context.Background(), swtpm.Options{StateDir: m.StateDir, CtrlSocket: filepath.Join(t.TempDir(), "ctrl")})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tpm.Exited():
		t.Fatalf("swtpm exited after start: %v", tpm.Wait())
	default:
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = tpm.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close #%d: %v", i, err)
		}
	}
	if err := tpm.Wait(); err != nil {
		t.Errorf("Wait after Close: %v", err)
	}
	if pids := swtpmProcesses(t, m.StateDir); len(pids) > 0 {
		t.Errorf("swtpm still running after Close: %v", pids)
	}
	// The state survives for the next start (a node restart).
	tpm2, err := swtpm.Start(context.Background(), swtpm.Options{StateDir: m.StateDir, CtrlSocket: filepath.Join(t.TempDir(), "ctrl")})
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm2.Close(); err != nil {
		t.Error(err)
	}
}

// ctrlInit sends CMD_INIT on swtpm's control channel, as QEMU does.
func ctrlInit(t *testing.T, path string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{0, 0, 0, 2, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var res [4]byte
	if _, err := io.ReadFull(c, res[:]); err != nil {
		t.Fatal(err)
	}
	if r := binary.BigEndian.Uint32(res[:]); r != 0 {
		t.Fatalf("CMD_INIT: TPM result %#x", r)
	}
}

// framed adapts a stream connection to go-tpm's transport, which expects one
// Read to return one whole response: it reads the 10-byte header, then the
// size it gives.
type framed struct{ net.Conn }

func (f framed) Read(p []byte) (int, error) {
	if len(p) < 10 {
		return 0, io.ErrShortBuffer
	}
	if _, err := io.ReadFull(f.Conn, p[:10]); err != nil {
		return 0, err
	}
	size := int(binary.BigEndian.Uint32(p[2:6]))
	if size < 10 || size > len(p) {
		return 0, fmt.Errorf("TPM response size %d (buffer %d)", size, len(p))
	}
	if _, err := io.ReadFull(f.Conn, p[10:size]); err != nil {
		return 0, err
	}
	return size, nil
}

// readNV reads a whole NV index, checking it is write-locked (--lock-nvram).
func readNV(t *testing.T, tp transport.TPM, index uint32) []byte {
	t.Helper()
	pub, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(tp)
	if err != nil {
		t.Fatalf("TPM2_NV_ReadPublic(%#x): %v", index, err)
	}
	nv, err := pub.NVPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	if !nv.Attributes.WriteLocked {
		t.Errorf("NV index %#x is not write-locked", index)
	}
	h := tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: pub.NVName}
	var out []byte
	const chunk = 512
	for off := 0; off < int(nv.DataSize); off += chunk {
		n := min(chunk, int(nv.DataSize)-off)
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    h,
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(tp)
		if err != nil {
			t.Fatalf("TPM2_NV_Read(%#x, %d+%d): %v", index, off, n, err)
		}
		out = append(out, r.Data.Buffer...)
	}
	return out
}

// swtpmProcesses lists live swtpm* processes whose command line mentions s.
func swtpmProcesses(t *testing.T, s string) []string {
	t.Helper()
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.HasPrefix(cmdline, []byte("swtpm")) && !bytes.Contains(cmdline, []byte("/swtpm")) {
			continue
		}
		if stat, _ := os.ReadFile(filepath.Join(d, "stat")); bytes.Contains(stat, []byte(") Z ")) {
			continue // a zombie: dead, waiting for whoever inherited it
		}
		if bytes.Contains(cmdline, []byte(s)) {
			found = append(found, filepath.Base(d)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}
