package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A snapshot directory holds manifest.json, the swtpm CA (tpm-ca/) and one
// directory per node: disk.raw (the disk at the stopped moment), ram (guest
// RAM), state (the migration stream: devices, firmware flash, TPM) and
// parameters (what the guest read from fw_cfg). The manifest is written
// last and the directory is renamed into place after it, so a directory
// without a manifest was never finished.

// ManifestName is the snapshot's manifest file.
const ManifestName = "manifest.json"

// manifestFormat is the snapshot format's version.
const manifestFormat = 1

// Manifest describes a snapshot: what must match to restore it (Key), the
// plan the guests were made for, and every file with its size.
type Manifest struct {
	Format  int         `json:"format"`
	Created time.Time   `json:"created"`
	Key     SnapshotKey `json:"key"`
	// Cluster is the template's plan, which the guests know.
	Cluster ManifestCluster `json:"cluster"`
	Nodes   []ManifestNode  `json:"nodes"`
	// Profile is the OS profile's type and settings, as JSON.
	Profile ManifestProfile `json:"profile"`
	// TPMCA is the swtpm CA's certificate and key (PEM), "" without TPMs.
	TPMCACert string `json:"tpm_ca_cert,omitempty"`
	TPMCAKey  string `json:"tpm_ca_key,omitempty"`
}

// SnapshotKey is what the host and the options must match to restore a
// snapshot: a guest's device state only loads into the same QEMU, machine
// and firmware it was saved from.
type SnapshotKey struct {
	QEMU    string `json:"qemu"`    // qemu-system-x86_64 --version, e.g. "7.2.22"
	Swtpm   string `json:"swtpm"`   // swtpm --version, "" without TPMs
	Libtpms string `json:"libtpms"` // libtpms' version, "" without TPMs
	// OVMF is the SHA-256 of the firmware code and of the vars template.
	OVMFCode string `json:"ovmf_code"`
	OVMFVars string `json:"ovmf_vars"`
	Accel    string `json:"accel"` // kvm or tcg
	// Image is the OS image's manifest digest; Loader the loader's SHA-256.
	Image  string `json:"image"`
	Loader string `json:"loader"`
	Nodes  int    `json:"nodes"`
	// Machines are the nodes' machine options, one string each.
	Machines []string `json:"machines"`
}

// ManifestCluster is the template's plan.
type ManifestCluster struct {
	Name      string `json:"name"`
	Domain    string `json:"domain"`
	Subnet    string `json:"subnet"`
	Gateway   string `json:"gateway"`
	CACert    string `json:"ca_cert"`
	CAKey     string `json:"ca_key"`
	OwnerCert string `json:"owner_cert"`
	OwnerKey  string `json:"owner_key"`
	// NotAfter is when the cluster's certificates expire.
	NotAfter time.Time `json:"not_after"`
}

// ManifestNode is one node of the template.
type ManifestNode struct {
	Index   int         `json:"index"`
	Name    string      `json:"name"`
	FQDN    string      `json:"fqdn"`
	Address string      `json:"address"`
	MAC     string      `json:"mac"`
	Cert    string      `json:"cert"`
	Key     string      `json:"key"`
	Options NodeOptions `json:"options"`
	// EKCertificate is the TPM's EK certificate (DER), nil without a TPM.
	EKCertificate []byte `json:"ek_certificate,omitempty"`
	// Files are the node's files in the snapshot, by name.
	Files map[string]ManifestFile `json:"files"`
}

// ManifestFile is a file of the snapshot. Small files carry a SHA-256;
// large ones (RAM, disk) only their size, since hashing them would cost
// more than the restore.
type ManifestFile struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
}

// ManifestProfile records the profile a snapshot was made with.
type ManifestProfile struct {
	Type     string          `json:"type"`
	Settings json.RawMessage `json:"settings,omitempty"`
}

// Node files in a snapshot.
const (
	snapDisk   = "disk.raw"
	snapRAM    = "ram"
	snapState  = "state"
	snapParams = "parameters"
)

// hashedFiles are checked by content at restore; the others by size.
var hashedFiles = []string{snapState, snapParams}

// ErrBadSnapshot is wrapped by every error about a snapshot that cannot be
// restored: missing, unfinished, damaged or made for another host.
var ErrBadSnapshot = errors.New("bad snapshot")

// ReadManifest reads and checks the manifest of the snapshot in dir. It does
// not look at the node files; Restore does.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("snapshot %s: %w: the directory does not exist", dir, ErrBadSnapshot)
		}
		return nil, fmt.Errorf("snapshot %s: %w: no %s (not a snapshot, or one still being written)", dir, ErrBadSnapshot, ManifestName)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	return m, nil
}

// ParseManifest decodes a manifest and checks that it is complete and
// consistent: every field a restore uses is there and well formed.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s does not parse: %v", ErrBadSnapshot, ManifestName, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s has data after the manifest", ErrBadSnapshot, ManifestName)
	}
	bad := func(format string, args ...any) (*Manifest, error) {
		return nil, fmt.Errorf("%w: %s: %s", ErrBadSnapshot, ManifestName, fmt.Sprintf(format, args...))
	}
	if m.Format != manifestFormat {
		return bad("format %d, this qcluster reads format %d: make the snapshot again", m.Format, manifestFormat)
	}
	c := m.Cluster
	if !validName.MatchString(c.Name) || c.Domain != c.Name+".qcluster.test" {
		return bad("cluster name %q or domain %q is not valid", c.Name, c.Domain)
	}
	subnet, err := netip.ParsePrefix(c.Subnet)
	if err != nil || !subnet.Addr().Is4() || subnet != subnet.Masked() {
		return bad("subnet %q is not an IPv4 prefix", c.Subnet)
	}
	if gw, err := netip.ParseAddr(c.Gateway); err != nil || !subnet.Contains(gw) {
		return bad("gateway %q is not in subnet %s", c.Gateway, c.Subnet)
	}
	for what, pem := range map[string]string{"CA certificate": c.CACert, "CA key": c.CAKey, "owner certificate": c.OwnerCert, "owner key": c.OwnerKey} {
		if !strings.Contains(pem, "-----BEGIN ") {
			return bad("no %s", what)
		}
	}
	if m.Key.Nodes != len(m.Nodes) || len(m.Key.Machines) != len(m.Nodes) || len(m.Nodes) < 1 || len(m.Nodes) > MaxNodes {
		return bad("%d nodes, %d machines, key says %d nodes", len(m.Nodes), len(m.Key.Machines), m.Key.Nodes)
	}
	if m.Key.Accel != "kvm" && m.Key.Accel != "tcg" {
		return bad("accelerator %q: want kvm or tcg", m.Key.Accel)
	}
	if m.Key.QEMU == "" {
		return bad("no QEMU version")
	}
	if m.Profile.Type == "" {
		return bad("no profile type")
	}
	seen := map[string]bool{}
	for i, n := range m.Nodes {
		if n.Index != i || n.Name != fmt.Sprintf("node%d", i) || n.FQDN != n.Name+"."+c.Domain {
			return bad("node %d is named %q (%q), index %d", i, n.Name, n.FQDN, n.Index)
		}
		a, err := netip.ParseAddr(n.Address)
		if err != nil || !subnet.Contains(a) || seen[n.Address] {
			return bad("%s: address %q is not a unique address in %s", n.Name, n.Address, c.Subnet)
		}
		seen[n.Address] = true
		mac, err := net.ParseMAC(n.MAC)
		if err != nil || len(mac) != 6 || mac[0]&1 != 0 || seen[mac.String()] {
			return bad("%s: MAC %q is not a unique unicast address", n.Name, n.MAC)
		}
		seen[mac.String()] = true
		if !strings.Contains(n.Cert, "-----BEGIN ") || !strings.Contains(n.Key, "-----BEGIN ") {
			return bad("%s: no certificate or key", n.Name)
		}
		o := n.Options
		if o.CPUs < 1 || o.CPUs > MaxCPUs || o.MemoryMiB < MinMemoryMiB || o.MemoryMiB > MaxMemoryMiB || o.DiskSize <= 0 {
			return bad("%s: machine options out of range: %d CPUs, %d MiB, disk %d bytes", n.Name, o.CPUs, o.MemoryMiB, o.DiskSize)
		}
		for _, f := range []string{snapDisk, snapRAM, snapState} {
			if fi, ok := n.Files[f]; !ok || fi.Size <= 0 {
				return bad("%s: no %s listed", n.Name, f)
			}
		}
		for name, f := range n.Files {
			if !slices.Contains([]string{snapDisk, snapRAM, snapState, snapParams}, name) || f.Size < 0 {
				return bad("%s: unexpected file %q (size %d)", n.Name, name, f.Size)
			}
			if slices.Contains(hashedFiles, name) {
				if h, err := hex.DecodeString(f.SHA256); err != nil || len(h) != sha256.Size {
					return bad("%s: %s: no SHA-256", n.Name, name)
				}
			}
		}
		if m.Key.Machines[i] != machineKey(o) {
			return bad("%s: machine %q does not match its options %q", n.Name, m.Key.Machines[i], machineKey(o))
		}
	}
	if (m.TPMCACert == "") != (m.TPMCAKey == "") {
		return bad("TPM CA certificate without its key, or the reverse")
	}
	return &m, nil
}

// machineKey is a node's machine options as one comparable string.
func machineKey(o NodeOptions) string {
	tpm := "on"
	if o.NoTPM {
		tpm = "off"
	}
	s := fmt.Sprintf("cpus=%d,memory=%dM,disk=%d,tpm=%s", o.CPUs, o.MemoryMiB, o.DiskSize, tpm)
	if len(o.ExtraQEMUArgs) > 0 {
		s += ",extra=" + strings.Join(o.ExtraQEMUArgs, " ")
	}
	return s
}

// mismatch names the first difference between the snapshot's key and the
// host's, in words a user can act on; "" if they match.
func (k SnapshotKey) mismatch(host SnapshotKey) string {
	switch {
	case k.QEMU != host.QEMU || k.Accel != host.Accel:
		return fmt.Sprintf("snapshot taken with QEMU %s under %s; this host runs QEMU %s under %s", k.QEMU, k.Accel, host.QEMU, host.Accel)
	case k.Swtpm != "" && (k.Swtpm != host.Swtpm || k.Libtpms != host.Libtpms):
		return fmt.Sprintf("snapshot taken with swtpm %s (libtpms %s); this host has swtpm %s (libtpms %s)", k.Swtpm, k.Libtpms, host.Swtpm, host.Libtpms)
	case k.OVMFCode != host.OVMFCode || k.OVMFVars != host.OVMFVars:
		return fmt.Sprintf("snapshot taken with other OVMF firmware (code sha256 %.12s, this host's %.12s)", k.OVMFCode, host.OVMFCode)
	}
	return ""
}

// fileInfo describes a snapshot file, hashing it if it is a small one.
func fileInfo(name, path string) (ManifestFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return ManifestFile{}, err
	}
	mf := ManifestFile{Size: fi.Size()}
	if slices.Contains(hashedFiles, name) {
		if mf.SHA256, err = hashFile(path); err != nil {
			return ManifestFile{}, err
		}
	}
	return mf, nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkFiles checks that node's files in the snapshot dir are there, of
// the sizes recorded, and that the small ones hash as recorded.
func (n ManifestNode) checkFiles(dir string) error {
	for name, want := range n.Files {
		p := filepath.Join(dir, n.Name, name)
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadSnapshot, n.Name, err)
		}
		if fi.Size() != want.Size {
			return fmt.Errorf("%w: %s is %d bytes, the manifest says %d (truncated or replaced)", ErrBadSnapshot, p, fi.Size(), want.Size)
		}
		if want.SHA256 != "" {
			got, err := hashFile(p)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
			}
			if got != want.SHA256 {
				return fmt.Errorf("%w: %s does not hash as the manifest says (damaged)", ErrBadSnapshot, p)
			}
		}
	}
	return nil
}
