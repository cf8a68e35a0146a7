package qemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/qcluster/qcluster/resolve"
)

// ErrNoFirmware is wrapped by FindOVMF's error when no firmware was found.
var ErrNoFirmware = errors.New("no UEFI firmware found")

// FirmwareQuery says which UEFI firmware FindOVMF looks for.
type FirmwareQuery struct {
	// Code and VarsTemplate are explicit paths of the firmware image and of
	// its variable store template: both or neither. Default: search.
	Code, VarsTemplate string
	// SecureBoot asks for a Secure Boot build. Default false: builds with the
	// secure-boot or enrolled-keys features are passed over (an unsigned UKI
	// would get "Access Denied").
	SecureBoot bool
}

// OVMF is a UEFI firmware for x86_64 q35 machines.
type OVMF struct {
	Code         string // firmware image, mapped read-only
	VarsTemplate string // variable store template, copied per machine by PrepareVars
	RequiresSMM  bool   // set Firmware.SMM (secure-boot builds)
	Source       string // where it was found, for logs: "explicit", a descriptor file, "known path"
}

// Firmware returns the Machine.Firmware for this OVMF with vars as the
// machine's own variable store.
func (o OVMF) Firmware(vars string) *Firmware {
	return &Firmware{Code: o.Code, Vars: vars, SMM: o.RequiresSMM}
}

// fwSearch is where FindOVMF looks; a field so that tests can use fakes.
type fwSearch struct {
	// dirs hold QEMU firmware descriptors (docs/interop/firmware.json), in
	// ascending priority: a file in a later directory replaces a file of the
	// same name in an earlier one.
	dirs []string
	// known are distributions' usual file pairs, tried in order after the
	// descriptors; relative paths are taken from the repository root.
	known []knownPair
}

type knownPair struct {
	code, vars string
	secure     bool // a Secure Boot build (needs SMM)
}

var hostFirmware = fwSearch{
	dirs: []string{"/usr/share/qemu/firmware", "/etc/qemu/firmware"},
	known: []knownPair{
		{code: "/usr/share/OVMF/OVMF_CODE_4M.fd", vars: "/usr/share/OVMF/OVMF_VARS_4M.fd"},           // Debian, Ubuntu
		{code: "/usr/share/OVMF/OVMF_CODE.fd", vars: "/usr/share/OVMF/OVMF_VARS.fd"},                 // older Debian, Ubuntu
		{code: "/usr/share/edk2/ovmf/OVMF_CODE.fd", vars: "/usr/share/edk2/ovmf/OVMF_VARS.fd"},       // Fedora
		{code: "/usr/share/edk2/x64/OVMF_CODE.4m.fd", vars: "/usr/share/edk2/x64/OVMF_VARS.4m.fd"},   // Arch
		{code: "/usr/share/qemu/ovmf-x86_64-code.bin", vars: "/usr/share/qemu/ovmf-x86_64-vars.bin"}, // openSUSE
		// The Debian package unpacked by third_party/fetch.sh.
		{code: "third_party/cache/root/usr/share/OVMF/OVMF_CODE_4M.fd", vars: "third_party/cache/root/usr/share/OVMF/OVMF_VARS_4M.fd"},
		{code: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", vars: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", secure: true},
		{code: "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", vars: "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd", secure: true},
	},
}

// FindOVMF finds a UEFI firmware for x86_64 q35 machines, in this order:
//
//  1. the explicit paths of q;
//  2. the pinned Debian OVMF, through package resolve: Bazel's runfiles
//     (resolve.OVMFCode and OVMFVars; with SecureBoot, OVMFCodeSecureBoot
//     and OVMFVarsMS), then $QCLUSTER_OVMF_CODE and $QCLUSTER_OVMF_VARS
//     (paths or runfile paths). When these name a file that does not exist,
//     FindOVMF fails rather than boot the host's firmware instead;
//  3. QEMU's firmware descriptors in /usr/share/qemu/firmware and
//     /etc/qemu/firmware (the latter overriding files of the same name),
//     taken in file name order as QEMU does: the first with interface type
//     uefi, target x86_64 on a pc-q35-* machine, a split flash mapping of raw
//     images, and the wanted Secure Boot features, whose files exist;
//  4. the usual paths of Debian, Ubuntu, Fedora, Arch and openSUSE, then the
//     Debian package unpacked by third_party/fetch.sh.
//
// The per-user descriptor directory ($XDG_CONFIG_HOME/qemu/firmware) is not
// read. The error lists what was tried and which package to install.
func FindOVMF(q FirmwareQuery) (OVMF, error) { return hostFirmware.find(q) }

// pinned returns the specs of the pinned firmware: runfiles and environment.
func pinned(secure bool) (code, vars resolve.Spec) {
	if !secure {
		code, vars = resolve.OVMFCode(""), resolve.OVMFVars("")
		return code, vars
	}
	// Only the runfiles: the host's secure-boot builds are found below,
	// through QEMU's descriptors.
	code, vars = resolve.OVMFCodeSecureBoot(""), resolve.OVMFVarsMS("")
	code.Paths, code.Hint, vars.Paths, vars.Hint = nil, "", nil, ""
	return code, vars
}

func (s fwSearch) find(q FirmwareQuery) (OVMF, error) {
	if q.Code != "" || q.VarsTemplate != "" {
		if q.Code == "" || q.VarsTemplate == "" {
			return OVMF{}, fmt.Errorf("find uefi firmware: code %q and vars template %q: give both or neither", q.Code, q.VarsTemplate)
		}
		code, err := resolve.Find(resolve.Spec{What: "UEFI firmware code", Explicit: q.Code})
		if err != nil {
			return OVMF{}, fmt.Errorf("find uefi firmware: %w", err)
		}
		vars, err := resolve.Find(resolve.Spec{What: "UEFI vars template", Explicit: q.VarsTemplate})
		if err != nil {
			return OVMF{}, fmt.Errorf("find uefi firmware: %w", err)
		}
		return OVMF{Code: code, VarsTemplate: vars, RequiresSMM: q.SecureBoot, Source: "explicit"}, nil
	}
	var tried []string
	codeSpec, varsSpec := pinned(q.SecureBoot)
	code, codeErr := resolve.Find(codeSpec)
	vars, varsErr := resolve.Find(varsSpec)
	switch {
	case codeErr == nil && varsErr == nil:
		return OVMF{Code: code, VarsTemplate: vars, RequiresSMM: q.SecureBoot, Source: "pinned (runfiles or $QCLUSTER_OVMF_*)"}, nil
	case errors.Is(codeErr, resolve.ErrGivenMissing) || errors.Is(varsErr, resolve.ErrGivenMissing):
		// A pinned firmware was asked for: never boot the host's instead.
		return OVMF{}, fmt.Errorf("find uefi firmware: %w", errors.Join(codeErr, varsErr))
	case codeErr == nil || varsErr == nil:
		return OVMF{}, fmt.Errorf("find uefi firmware: found the code or the vars template but not both (runfiles, or set both $QCLUSTER_OVMF_CODE and $QCLUSTER_OVMF_VARS): %w", errors.Join(codeErr, varsErr))
	case !errors.Is(codeErr, resolve.ErrNotFound) || !errors.Is(varsErr, resolve.ErrNotFound):
		return OVMF{}, fmt.Errorf("find uefi firmware: %w", errors.Join(codeErr, varsErr))
	}
	tried = append(tried, "runfiles", "$QCLUSTER_OVMF_CODE")

	o, descTried, err := s.fromDescriptors(q.SecureBoot)
	if err != nil || o.Code != "" {
		return o, err
	}
	tried = append(tried, descTried...)

	root, rootErr := resolve.RepoRoot()
	for _, k := range s.known {
		if k.secure != q.SecureBoot {
			continue
		}
		code, vars := k.code, k.vars
		if !filepath.IsAbs(code) {
			if rootErr != nil {
				continue
			}
			code, vars = filepath.Join(root, code), filepath.Join(root, vars)
		}
		if isFile(code) && isFile(vars) {
			return OVMF{Code: code, VarsTemplate: vars, RequiresSMM: k.secure, Source: "known path"}, nil
		}
		tried = append(tried, code)
	}
	kind := "without Secure Boot"
	if q.SecureBoot {
		kind = "with Secure Boot"
	}
	return OVMF{}, fmt.Errorf("find uefi firmware %s for x86_64 q35: tried %s: install ovmf (Debian, Ubuntu), edk2-ovmf (Fedora, Arch) or qemu-ovmf-x86_64 (openSUSE), or run make fetch: %w",
		kind, strings.Join(tried, ", "), ErrNoFirmware)
}

// descriptor is the part of a QEMU firmware descriptor FindOVMF reads.
type descriptor struct {
	InterfaceTypes []string `json:"interface-types"`
	Mapping        struct {
		Device        string    `json:"device"`
		Mode          string    `json:"mode"` // "split" (the default), "combined", "stateless"
		Executable    flashFile `json:"executable"`
		NVRAMTemplate flashFile `json:"nvram-template"`
	} `json:"mapping"`
	Targets []struct {
		Architecture string   `json:"architecture"`
		Machines     []string `json:"machines"`
	} `json:"targets"`
	Features []string `json:"features"`
}

type flashFile struct {
	Filename string `json:"filename"`
	Format   string `json:"format"`
}

// fromDescriptors returns the first matching descriptor's firmware (Code
// empty if none matched) and what it passed over. A descriptor that is not
// valid JSON is an error: QEMU would stop at it too.
func (s fwSearch) fromDescriptors(secure bool) (OVMF, []string, error) {
	files := map[string]string{} // base name → path; later directories win
	for _, dir := range s.dirs {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, m := range matches {
			files[filepath.Base(m)] = m
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var tried []string
	for _, n := range names {
		path := files[n]
		data, err := os.ReadFile(path)
		if err != nil {
			return OVMF{}, nil, fmt.Errorf("find uefi firmware: read descriptor: %w", err)
		}
		if len(bytes.TrimSpace(data)) == 0 {
			continue // an empty file masks a descriptor of the same name
		}
		var d descriptor
		if err := json.Unmarshal(data, &d); err != nil {
			return OVMF{}, nil, fmt.Errorf("find uefi firmware: parse descriptor %s: %w", path, err)
		}
		if why := d.mismatch(secure); why != "" {
			tried = append(tried, fmt.Sprintf("%s (%s)", path, why))
			continue
		}
		return OVMF{Code: d.Mapping.Executable.Filename, VarsTemplate: d.Mapping.NVRAMTemplate.Filename,
			RequiresSMM: slices.Contains(d.Features, "requires-smm"), Source: path}, nil, nil
	}
	if len(s.dirs) > 0 && len(files) == 0 {
		tried = append(tried, "descriptors in "+strings.Join(s.dirs, " and ")+" (none)")
	}
	return OVMF{}, tried, nil
}

// mismatch says why d does not fit, or "" if it does.
func (d *descriptor) mismatch(secure bool) string {
	if !slices.Contains(d.InterfaceTypes, "uefi") {
		return "not uefi"
	}
	q35 := false
	for _, t := range d.Targets {
		if t.Architecture != "x86_64" {
			continue
		}
		for _, m := range t.Machines {
			// q35 is an alias of the newest pc-q35-X.Y; any pc-q35 pattern fits it.
			q35 = q35 || strings.HasPrefix(m, "pc-q35-")
		}
	}
	if !q35 {
		return "not x86_64 q35"
	}
	m := d.Mapping
	if m.Device != "flash" || (m.Mode != "" && m.Mode != "split") {
		return "not a split flash mapping"
	}
	if m.Executable.Filename == "" || m.NVRAMTemplate.Filename == "" {
		return "no executable or nvram template"
	}
	if m.Executable.Format != "raw" || m.NVRAMTemplate.Format != "raw" {
		return "not raw images"
	}
	isSecure := slices.Contains(d.Features, "secure-boot") || slices.Contains(d.Features, "enrolled-keys")
	if isSecure != secure {
		if secure {
			return "no secure boot"
		}
		return "secure boot"
	}
	if !isFile(m.Executable.Filename) || !isFile(m.NVRAMTemplate.Filename) {
		return "files missing"
	}
	return ""
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// PrepareVars makes a machine's own variable store at dst from template,
// unless dst exists already: variables (boot entries, systemd-boot's) persist
// across restarts of the machine. The copy is sparse where the template has
// zero blocks, written to a temporary name and renamed, mode 0600. It reports
// whether it created dst.
func PrepareVars(template, dst string) (created bool, err error) {
	if _, err := os.Stat(dst); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("prepare uefi vars %s: %w", dst, err)
	}
	src, err := os.Open(template)
	if err != nil {
		return false, fmt.Errorf("prepare uefi vars %s: %w", dst, err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return false, fmt.Errorf("prepare uefi vars %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := sparseCopy(tmp, src); err != nil {
		return false, fmt.Errorf("prepare uefi vars %s from %s: %w", dst, template, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return false, fmt.Errorf("prepare uefi vars %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("prepare uefi vars %s: %w", dst, err)
	}
	// Link rather than rename: a concurrent PrepareVars for the same dst
	// must not replace a store that already exists.
	if err := os.Link(tmp.Name(), dst); err != nil && !errors.Is(err, os.ErrExist) {
		return false, fmt.Errorf("prepare uefi vars %s: %w", dst, err)
	} else if err != nil {
		os.Remove(tmp.Name())
		return false, nil
	}
	os.Remove(tmp.Name())
	return true, nil
}

// sparseCopy copies src to dst, seeking over blocks of zeroes.
func sparseCopy(dst *os.File, src io.Reader) error {
	buf := make([]byte, 4096)
	zero := make([]byte, len(buf))
	var size int64
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if bytes.Equal(buf[:n], zero[:n]) {
				if _, err := dst.Seek(int64(n), io.SeekCurrent); err != nil {
					return err
				}
			} else if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
			size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return dst.Truncate(size)
		}
		if err != nil {
			return err
		}
	}
}
