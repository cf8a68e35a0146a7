package boottest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qcluster/qcluster/imagebuild/gpt"
	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/swtpm"
	"github.com/qcluster/qcluster/testos/api"
)

// bootNode boots one node named name with a fresh disk and parameters and
// waits for its ready line. It returns the VM, a gRPC connection (mTLS, test
// CA) and the time from QEMU's start to the ready line.
func bootNode(t *testing.T, name string, withTPM bool) (*qemu.VM, *grpc.ClientConn, *swtpm.CA, time.Duration) {
	t.Helper()
	prerequisites(t)
	dir := t.TempDir()
	diskPath := makeDisk(t, dir, name)
	ca := newCA(t)
	certPEM, keyPEM := ca.issue(t, name)
	params := writeParams(t, dir, &api.Parameters{
		NodeName:    name,
		ClusterName: "boottest",
		Role:        api.Role_ROLE_BOOTSTRAP,
		Tls:         &api.TLS{CaCertPem: ca.pem, CertPem: certPEM, KeyPem: keyPEM},
	})
	o := vmOptions{name: name, disk: diskPath, params: params, hostPort: freePort(t), guestPort: api.DefaultListenPort}
	var tpmCA *swtpm.CA
	if withTPM {
		o.tpmSocket, tpmCA = startTPM(t, dir)
	}
	v := startVM(t, dir, o)
	// SLIRP hands out 10.0.2.15.
	_, took, err := waitLine(v, 0, readyLine(name, "10.0.2.15"))
	if err != nil {
		t.Fatal(err)
	}
	return v, ca.dial(t, "127.0.0.1:"+strconv.Itoa(o.hostPort), name), tpmCA, took
}

func status(t *testing.T, conn *grpc.ClientConn) *api.StatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := api.NewNodeServiceClient(conn).Status(ctx, &api.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return st
}

// TestBootWithTPM boots a node with a swtpm TPM and checks what it reports:
// slot A, verity OK, DATA formatted, the TPM with its EK certificate.
func TestBootWithTPM(t *testing.T) {
	_, conn, tpmCA, took := bootNode(t, "node1", true)
	t.Logf("QEMU start → ready line, with TPM: %v", took.Round(10*time.Millisecond))
	st := status(t, conn)
	t.Logf("agent ready at %d ms after kernel start", st.GetReadyMs())

	if st.GetNodeName() != "node1" || st.GetClusterName() != "boottest" || st.GetRole() != api.Role_ROLE_BOOTSTRAP {
		t.Errorf("identity: name %q cluster %q role %v", st.GetNodeName(), st.GetClusterName(), st.GetRole())
	}
	if st.GetSlot() != "A" || st.GetSlotSource() != "efivar" || st.GetLoaderEntry() != "qcluster-a.efi" {
		t.Errorf("slot %q from %q (entry %q), want A from efivar (qcluster-a.efi)", st.GetSlot(), st.GetSlotSource(), st.GetLoaderEntry())
	}
	if v := st.GetVerity(); v.GetState() != api.Verity_STATE_OK || len(v.GetRootHash()) != 64 ||
		!strings.Contains(st.GetKernelCmdline(), v.GetRootHash()) {
		t.Errorf("verity: %v", v)
	}
	if d := st.GetData(); !d.GetFormattedThisBoot() || !d.GetMounted() || d.GetFilesystem() != "ext4" || d.GetSizeBytes() == 0 {
		t.Errorf("data: %v", d)
	}
	if st.GetBootCount() != 1 || len(st.GetNodeId()) != 36 {
		t.Errorf("boot count %d, node id %q", st.GetBootCount(), st.GetNodeId())
	}
	var names []string
	for _, p := range st.GetPartitions() {
		names = append(names, p.GetName())
	}
	if got := strings.Join(names, ","); got != "ESP,SYSTEM-A,SYSTEM-B,DATA" {
		t.Errorf("partitions %s", got)
	}
	if pi := st.GetProductInfo(); pi.GetId() != "testos" || pi.GetComponents()["kernel"] == "" ||
		!strings.HasPrefix(pi.GetComponents()["kernel"], st.GetKernelRelease()) {
		t.Errorf("product info %v, kernel %q", pi, st.GetKernelRelease())
	}
	if !containsPrefix(st.GetAddresses(), "10.0.2.15/") {
		t.Errorf("addresses %v", st.GetAddresses())
	}

	tpm := st.GetTpm()
	if !tpm.GetPresent() || tpm.GetError() != "" {
		t.Fatalf("tpm: present %v, error %q", tpm.GetPresent(), tpm.GetError())
	}
	cert, err := tpmCA.VerifyEK(tpm.GetEkCertificateDer())
	if err != nil {
		t.Fatalf("EK certificate read by the guest: %v", err)
	}
	if !tpm.GetEkCertificateMatches() {
		t.Error("the EK certificate's key is not the EK's")
	}
	sum := sha256.Sum256(tpm.GetEkPublicDer())
	if hex.EncodeToString(sum[:]) != tpm.GetEkPublicSha256() {
		t.Error("ek_public_sha256 is not the SHA-256 of ek_public_der")
	}
	if len(tpm.GetPcrs()) != 10 {
		t.Fatalf("%d PCRs, want 10", len(tpm.GetPcrs()))
	}
	for i, p := range tpm.GetPcrs() {
		if int(p.GetIndex()) != i || len(p.GetSha256()) != 32 {
			t.Errorf("PCR %d: index %d, %d bytes", i, p.GetIndex(), len(p.GetSha256()))
		}
	}
	// Measured boot: the firmware extended PCR 0 and the loader PCR 4.
	for _, i := range []int{0, 4} {
		if bytes.Equal(tpm.GetPcrs()[i].GetSha256(), make([]byte, 32)) {
			t.Errorf("PCR %d is zero: nothing measured", i)
		}
	}
	t.Logf("TPM %q (%s, firmware %s), EK certificate issuer %q", tpm.GetManufacturer(), tpm.GetVendor(), tpm.GetFirmwareVersion(), cert.Issuer.CommonName)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v, %v", h, err)
	}
	l, err := api.NewMembershipClient(conn).List(ctx, &api.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.GetMembers()) != 1 || l.GetMembers()[0].GetName() != "node1" || !l.GetMembers()[0].GetLeader() {
		t.Errorf("members %v", l.GetMembers())
	}
}

// TestBootRebootWithoutTPM boots without a TPM, keeps a file on DATA across
// a Reboot and powers off through the Management API.
func TestBootRebootWithoutTPM(t *testing.T) {
	v, conn, _, took := bootNode(t, "node2", false)
	t.Logf("QEMU start → ready line, without TPM: %v", took.Round(10*time.Millisecond))
	st := status(t, conn)
	t.Logf("agent ready at %d ms after kernel start", st.GetReadyMs())
	if st.GetTpm().GetPresent() {
		t.Errorf("tpm present without a TPM: %v", st.GetTpm())
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	node := api.NewNodeServiceClient(conn)
	if _, err := node.WriteDataFile(ctx, &api.WriteDataFileRequest{Path: "test/hello.txt", Content: []byte("kept\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := node.WriteDataFile(ctx, &api.WriteDataFileRequest{Path: "../escape", Content: []byte("x")}); err == nil {
		t.Error("WriteDataFile outside DATA accepted")
	}

	mark := v.Console().Cursor()
	if _, err := api.NewManagementClient(conn).Reboot(ctx, &api.RebootRequest{}); err != nil {
		t.Fatalf("Reboot: %v", err)
	}
	if _, _, err := waitLine(v, mark, readyLine("node2", "10.0.2.15")); err != nil {
		t.Fatal(err)
	}
	st = status(t, conn)
	if st.GetBootCount() != 2 || st.GetData().GetFormattedThisBoot() {
		t.Errorf("after reboot: boot count %d, formatted this boot %v", st.GetBootCount(), st.GetData().GetFormattedThisBoot())
	}
	r, err := node.ReadDataFile(ctx, &api.ReadDataFileRequest{Path: "test/hello.txt"})
	if err != nil || string(r.GetContent()) != "kept\n" {
		t.Errorf("ReadDataFile after reboot: %q, %v", r.GetContent(), err)
	}

	if _, err := api.NewManagementClient(conn).PowerOff(ctx, &api.PowerOffRequest{}); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	if exit, err := waitExit(v, time.Minute); err != nil || exit.Kind != qemu.ExitPoweredOff {
		t.Errorf("after PowerOff: QEMU exit %v, %v; want powered off", exit, err)
	}
}

// TestBootVerityFailure flips one byte of SYSTEM-A: the boot must stop with
// a verity error on the console, and the node must power off.
func TestBootVerityFailure(t *testing.T) {
	prerequisites(t)
	dir := t.TempDir()
	diskPath := makeDisk(t, dir, "node3")
	f, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	tab, err := gpt.Read(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var sys *gpt.Partition
	for i := range tab.Partitions {
		if tab.Partitions[i].Name == "SYSTEM-A" {
			sys = &tab.Partitions[i]
		}
	}
	if sys == nil {
		t.Fatal("no SYSTEM-A in the disk's GPT")
	}
	// 1 MiB in: inside file data (the file system is ~15 MiB, nearly all
	// files), away from the superblock, so mounting works and stage 1's
	// read-back finds it.
	off := sys.Offset() + 1<<20 + 123
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	v := startVM(t, dir, vmOptions{name: "node3", disk: diskPath, hostPort: freePort(t), guestPort: api.DefaultListenPort})
	_, took, err := waitLine(v, 0, "^"+regexp.QuoteMeta(api.FatalPrefix)+"verity: ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fatal verity error after %v", took.Round(10*time.Millisecond))
	if exit, err := waitExit(v, time.Minute); err != nil || exit.Kind != qemu.ExitPoweredOff {
		t.Errorf("after the fatal error: QEMU exit %v, %v; want powered off", exit, err)
	}
	console := strings.Join(v.Console().Tail(0), "\n")
	for _, l := range v.Console().Tail(0) {
		if strings.HasPrefix(l, api.FatalPrefix) {
			t.Logf("%s", l)
		}
	}
	if !strings.Contains(console, "device-mapper: verity") {
		t.Errorf("no kernel verity message on the console")
	}
	if strings.Contains(console, api.ReadyPrefix) {
		t.Errorf("the node became ready on a corrupted system partition")
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// TestBootBare boots without parameters and without a TPM, as a bare QEMU
// would: the node names itself after its MAC address and serves with a
// self-signed certificate.
func TestBootBare(t *testing.T) {
	prerequisites(t)
	dir := t.TempDir()
	o := vmOptions{name: "bare", disk: makeDisk(t, dir, "bare"), hostPort: freePort(t), guestPort: api.DefaultListenPort}
	v := startVM(t, dir, o)
	// The agent names a node without parameters after its MAC address.
	name := "node-" + strings.ReplaceAll(qemu.DefaultMAC("bare", 0).String(), ":", "")
	_, took, err := waitLine(v, 0, readyLine(name, "10.0.2.15"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU start → ready line, bare: %v", took.Round(10*time.Millisecond))
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(o.hostPort),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := status(t, conn)
	if st.GetNodeName() != name || st.GetHostname() != name || st.GetRole() != api.Role_ROLE_BOOTSTRAP ||
		st.GetVerity().GetState() != api.Verity_STATE_OK {
		t.Errorf("status: name %q host %q role %v verity %v", st.GetNodeName(), st.GetHostname(), st.GetRole(), st.GetVerity())
	}
}
