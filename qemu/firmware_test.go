package qemu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qcluster/qcluster/internal/testerr"
)

// descriptorJSON is a firmware descriptor in QEMU's format.
func descriptorJSON(code, vars string, features ...string) string {
	return fmt.Sprintf(`{
  "description": "test",
  "interface-types": ["uefi"],
  "mapping": {"device": "flash",
    "executable": {"filename": %q, "format": "raw"},
    "nvram-template": {"filename": %q, "format": "raw"}},
  "targets": [{"architecture": "x86_64", "machines": ["pc-i440fx-*", "pc-q35-*"]}],
  "features": [%s],
  "tags": []
}`, code, vars, `"acpi-s3"`+strings.Join(append([]string{""}, quoteAll(features)...), ", "))
}

func quoteAll(s []string) []string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return q
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeFirmware lays out firmware images and two descriptor directories as a
// distribution and an administrator would.
func fakeFirmware(t *testing.T) (dir string, s fwSearch) {
	dir = t.TempDir()
	for _, f := range []string{"CODE.fd", "VARS.fd", "CODE.secboot.fd", "VARS.ms.fd", "CODE.admin.fd", "CODE.arm.fd"} {
		writeFile(t, filepath.Join(dir, "fw", f), "x")
	}
	fw := filepath.Join(dir, "fw")
	dist, admin := filepath.Join(dir, "usr"), filepath.Join(dir, "etc")
	writeFile(t, filepath.Join(dist, "10-aarch64.json"), strings.Replace(descriptorJSON(fw+"/CODE.arm.fd", fw+"/VARS.fd"), "x86_64", "aarch64", 1))
	writeFile(t, filepath.Join(dist, "20-combined.json"), strings.Replace(descriptorJSON(fw+"/CODE.fd", fw+"/VARS.fd"), `"device": "flash"`, `"device": "flash", "mode": "combined"`, 1))
	writeFile(t, filepath.Join(dist, "30-missing.json"), descriptorJSON(fw+"/nope.fd", fw+"/VARS.fd"))
	writeFile(t, filepath.Join(dist, "35-masked.json"), descriptorJSON(fw+"/CODE.fd", fw+"/VARS.fd"))
	writeFile(t, filepath.Join(dist, "40-secure-enrolled.json"), descriptorJSON(fw+"/CODE.secboot.fd", fw+"/VARS.ms.fd", "enrolled-keys", "requires-smm", "secure-boot"))
	writeFile(t, filepath.Join(dist, "50-secure.json"), descriptorJSON(fw+"/CODE.secboot.fd", fw+"/VARS.fd", "requires-smm", "secure-boot"))
	writeFile(t, filepath.Join(dist, "60-plain.json"), descriptorJSON(fw+"/CODE.fd", fw+"/VARS.fd"))
	writeFile(t, filepath.Join(dist, "README"), "not a descriptor")
	// The administrator masks 35 and replaces 60.
	writeFile(t, filepath.Join(admin, "35-masked.json"), "")
	writeFile(t, filepath.Join(admin, "60-plain.json"), descriptorJSON(fw+"/CODE.admin.fd", fw+"/VARS.fd"))
	return dir, fwSearch{dirs: []string{dist, admin}}
}

func TestFindOVMFDescriptors(t *testing.T) {
	dir, s := fakeFirmware(t)
	fw := filepath.Join(dir, "fw")
	o, err := s.find(FirmwareQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Code != fw+"/CODE.admin.fd" || o.VarsTemplate != fw+"/VARS.fd" || o.RequiresSMM || o.Source != filepath.Join(dir, "etc", "60-plain.json") {
		t.Errorf("find = %+v, want the administrator's 60-plain.json", o)
	}
	o, err = s.find(FirmwareQuery{SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	if o.Code != fw+"/CODE.secboot.fd" || o.VarsTemplate != fw+"/VARS.ms.fd" || !o.RequiresSMM {
		t.Errorf("find secure = %+v, want 40-secure-enrolled.json with SMM", o)
	}
	if f := o.Firmware("/vars"); f.Code != o.Code || f.Vars != "/vars" || !f.SMM {
		t.Errorf("Firmware = %+v", f)
	}

	// A descriptor that is not JSON stops the search, as it stops QEMU.
	writeFile(t, filepath.Join(dir, "etc", "05-broken.json"), "{")
	if _, err := s.find(FirmwareQuery{}); err == nil || !strings.Contains(err.Error(), "05-broken.json") {
		t.Errorf("find with a broken descriptor = %v, want an error naming it", err)
	}
}

func TestFindOVMFKnownPaths(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/b/CODE.fd", "x")
	writeFile(t, dir+"/b/VARS.fd", "x")
	writeFile(t, dir+"/c/CODE.fd", "x") // no VARS: skipped
	s := fwSearch{dirs: []string{dir + "/nodescriptors"}, known: []knownPair{
		{code: dir + "/a/CODE.fd", vars: dir + "/a/VARS.fd"},
		{code: dir + "/c/CODE.fd", vars: dir + "/c/VARS.fd"},
		{code: dir + "/b/CODE.fd", vars: dir + "/b/VARS.fd", secure: true},
		{code: dir + "/b/CODE.fd", vars: dir + "/b/VARS.fd"},
	}}
	o, err := s.find(FirmwareQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Code != dir+"/b/CODE.fd" || o.RequiresSMM || o.Source != "known path" {
		t.Errorf("find = %+v, want the fourth pair", o)
	}
	o, err = s.find(FirmwareQuery{SecureBoot: true})
	if err != nil || !o.RequiresSMM {
		t.Errorf("find secure = %+v, %v; want the third pair", o, err)
	}

	s.known = s.known[:2]
	_, err = s.find(FirmwareQuery{})
	testerr.Want(t, err, ErrNoFirmware, dir+"/a/CODE.fd", dir+"/c/CODE.fd", "nodescriptors", "$QCLUSTER_OVMF_CODE", "install ovmf")
}

func TestFindOVMFExplicitAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/CODE.fd", "x")
	writeFile(t, dir+"/VARS.fd", "x")
	s := fwSearch{}
	o, err := s.find(FirmwareQuery{Code: dir + "/CODE.fd", VarsTemplate: dir + "/VARS.fd"})
	if err != nil || o.Code != dir+"/CODE.fd" || o.Source != "explicit" {
		t.Errorf("explicit: %+v, %v", o, err)
	}
	if _, err := s.find(FirmwareQuery{Code: dir + "/CODE.fd"}); err == nil {
		t.Errorf("explicit code without vars: no error")
	}
	if _, err := s.find(FirmwareQuery{Code: dir + "/nope", VarsTemplate: dir + "/VARS.fd"}); err == nil || !strings.Contains(err.Error(), dir+"/nope") {
		t.Errorf("explicit code missing: %v", err)
	}
	t.Setenv("QCLUSTER_OVMF_CODE", dir+"/CODE.fd")
	if _, err := s.find(FirmwareQuery{}); err == nil {
		t.Errorf("only $QCLUSTER_OVMF_CODE set: no error")
	}
	t.Setenv("QCLUSTER_OVMF_VARS", dir+"/VARS.fd")
	if o, err := s.find(FirmwareQuery{}); err != nil || o.VarsTemplate != dir+"/VARS.fd" || !strings.HasPrefix(o.Source, "pinned") {
		t.Errorf("environment: %+v, %v", o, err)
	}
}

// TestFindOVMFPinnedNeverFallsBack: a pinned firmware that was asked for
// but is not there is an error, not the host's firmware; the runfiles' copy
// (Bazel's) comes before the host's.
func TestFindOVMFPinnedNeverFallsBack(t *testing.T) {
	dir := t.TempDir()
	host := fwSearch{known: []knownPair{{code: dir + "/host/CODE.fd", vars: dir + "/host/VARS.fd"}}}
	writeFile(t, dir+"/host/CODE.fd", "x")
	writeFile(t, dir+"/host/VARS.fd", "x")
	t.Setenv("RUNFILES_MANIFEST_FILE", "")
	t.Setenv("RUNFILES_DIR", dir+"/none")
	t.Setenv("QCLUSTER_OVMF_CODE", "debian_ovmf/usr/share/OVMF/OVMF_CODE_4M.fd")
	t.Setenv("QCLUSTER_OVMF_VARS", "debian_ovmf/usr/share/OVMF/OVMF_VARS_4M.fd")
	if o, err := host.find(FirmwareQuery{}); err == nil || !strings.Contains(err.Error(), "$QCLUSTER_OVMF_CODE=debian_ovmf") {
		t.Errorf("pinned firmware missing: got %+v, %v; want an error naming $QCLUSTER_OVMF_CODE", o, err)
	}

	rf := dir + "/runfiles"
	writeFile(t, rf+"/debian_ovmf/usr/share/OVMF/OVMF_CODE_4M.fd", "x")
	writeFile(t, rf+"/debian_ovmf/usr/share/OVMF/OVMF_VARS_4M.fd", "x")
	t.Setenv("RUNFILES_DIR", rf)
	o, err := host.find(FirmwareQuery{})
	if err != nil || o.Code != rf+"/debian_ovmf/usr/share/OVMF/OVMF_CODE_4M.fd" || o.VarsTemplate != rf+"/debian_ovmf/usr/share/OVMF/OVMF_VARS_4M.fd" {
		t.Errorf("pinned firmware in the runfiles: got %+v, %v", o, err)
	}
	t.Setenv("QCLUSTER_OVMF_CODE", "")
	t.Setenv("QCLUSTER_OVMF_VARS", "")
	if o, err := host.find(FirmwareQuery{}); err != nil || !strings.HasPrefix(o.Code, rf) {
		t.Errorf("runfiles without the variables: got %+v, %v", o, err)
	}
	if o, err := host.find(FirmwareQuery{SecureBoot: true}); err == nil {
		t.Errorf("secure boot asked for, only a plain build pinned: got %+v", o)
	}
}

// TestFindOVMFHost finds the host's OVMF through its real descriptors.
func TestFindOVMFHost(t *testing.T) {
	o, err := FindOVMF(FirmwareQuery{})
	if err != nil {
		t.Skipf("no OVMF on this host: %v", err)
	}
	t.Logf("found %+v", o)
	if o.RequiresSMM || strings.Contains(o.Code, "secboot") || strings.Contains(o.VarsTemplate, ".ms.") {
		t.Errorf("FindOVMF gave a Secure Boot build: %+v", o)
	}
}

func TestPrepareVars(t *testing.T) {
	dir := t.TempDir()
	// A template of 1 MiB: data, 512 KiB of zeroes, data, and a short tail.
	tmpl := bytes.Repeat([]byte{0xff}, 4096)
	tmpl = append(tmpl, make([]byte, 512<<10)...)
	tmpl = append(tmpl, bytes.Repeat([]byte{0x55}, 512<<10-4096)...)
	tmpl = append(tmpl, 1, 2, 3)
	writeFile(t, dir+"/VARS.fd", string(tmpl))
	dst := dir + "/node0/vars.fd"
	if err := os.MkdirAll(dir+"/node0", 0o700); err != nil {
		t.Fatal(err)
	}
	created, err := PrepareVars(dir+"/VARS.fd", dst)
	if err != nil || !created {
		t.Fatalf("PrepareVars = %v, %v", created, err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, tmpl) {
		t.Fatalf("copy differs from the template (%d vs %d bytes, %v)", len(got), len(tmpl), err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Blocks*512 > int64(len(tmpl))-256<<10 {
		t.Errorf("copy allocates %d bytes of %d: not sparse", st.Blocks*512, len(tmpl))
	}

	// The store persists: a second call keeps what the guest wrote.
	if err := os.WriteFile(dst, []byte("guest wrote this"), 0o600); err != nil {
		t.Fatal(err)
	}
	if created, err := PrepareVars(dir+"/VARS.fd", dst); err != nil || created {
		t.Fatalf("second PrepareVars = %v, %v; want kept", created, err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "guest wrote this" {
		t.Errorf("second PrepareVars replaced the store")
	}

	// Errors leave nothing behind.
	if _, err := PrepareVars(dir+"/nope.fd", dir+"/node1.fd"); err == nil {
		t.Errorf("missing template: no error")
	}
	if _, err := PrepareVars(dir+"/VARS.fd", dir+"/nodir/vars.fd"); err == nil {
		t.Errorf("missing directory: no error")
	}
	entries, _ := os.ReadDir(dir)
	more, _ := os.ReadDir(dir + "/node0")
	for _, e := range append(entries, more...) {
		if strings.HasPrefix(e.Name(), ".") || e.Name() == "node1.fd" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
