package swtpm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/qcluster/qcluster/internal/child"
)

const (
	// defaultPCRBanks is the PCR bank set activated by default: OVMF and the
	// kernel measure into sha256.
	defaultPCRBanks = "sha256"
	// permallFile is the permanent state swtpm keeps in a dir backend; its
	// presence marks a manufactured state directory.
	permallFile = "tpm2-00.permall"
	// EK certificate files as swtpm_setup --write-ek-cert-files names them (DER).
	ekCertRSAFile = "ek-rsa2048.crt"
	ekCertECCFile = "ek-secp384r1.crt"
)

// ErrNotManufactured is returned (wrapped) by Start for a state directory
// that Manufacture has not completed.
var ErrNotManufactured = errors.New("TPM state directory not manufactured")

// ManufactureOptions configures one node's manufacture. The zero value is usable.
type ManufactureOptions struct {
	// Name is the EK certificate's subject common name (swtpm_setup --vmid),
	// normally the node's name. Default: the state directory's base name.
	Name string
	// PCRBanks is the comma-separated list of PCR banks to activate, e.g.
	// "sha1,sha256". Default: "sha256".
	PCRBanks string
}

// Manufactured describes a node's manufactured TPM state.
type Manufactured struct {
	// StateDir is the state directory (absolute), for Options.StateDir.
	StateDir string
	// Created is true when this call manufactured the state, false when an
	// already manufactured state directory was kept.
	Created bool
	// EKCertRSA is the DER-encoded certificate of the RSA 2048 EK, the one in NV
	// index 0x01c00002; nil if the state directory holds no copy (it was not
	// made by Manufacture).
	EKCertRSA []byte
	// EKCertECC is the DER-encoded certificate of the ECC NIST P-384 EK, the one
	// in NV index 0x01c00016; nil as for EKCertRSA.
	EKCertECC []byte
}

// Manufacture makes stateDir a manufactured TPM 2.0: fresh primary seeds, an
// RSA and an ECC endorsement key with certificates issued by ca in NV
// memory, a platform certificate, NV locked. If stateDir already holds
// manufactured state it is kept and described (Created false). stateDir's
// parent must exist; stateDir must be absent, empty, or manufactured. On
// failure nothing is left behind and the error carries swtpm_setup's argv and
// output. Calls for different directories may run in parallel; calls for the
// same directory too (one wins, the others keep its result).
func (ca *CA) Manufacture(ctx context.Context, stateDir string, opts ManufactureOptions) (*Manufactured, error) {
	m, err := ca.manufacture(ctx, stateDir, opts)
	if err != nil {
		return nil, fmt.Errorf("swtpm: manufacture %s: %w", stateDir, err)
	}
	return m, nil
}

func (ca *CA) manufacture(ctx context.Context, stateDir string, opts ManufactureOptions) (*Manufactured, error) {
	stateDir, err := absPath("state directory", stateDir)
	if err != nil {
		return nil, err
	}
	// The path reaches swtpm as --tpmstate backend-uri=dir://PATH.
	if err := swtpmArgSafe("state directory", stateDir); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = filepath.Base(stateDir)
	}
	if strings.ContainsAny(opts.Name, "\n\x00") {
		return nil, fmt.Errorf("name %q contains a newline or NUL", opts.Name)
	}
	if opts.PCRBanks == "" {
		opts.PCRBanks = defaultPCRBanks
	}

	done, err := isManufactured(stateDir)
	if err != nil {
		return nil, err
	}
	if done {
		ca.log.Debug("swtpm: state already manufactured, kept", "dir", stateDir)
		return readManufactured(stateDir, false)
	}

	// Manufacture in a scratch directory beside stateDir (same file system),
	// then rename: stateDir is never seen half-made.
	parent := filepath.Dir(stateDir)
	if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("parent directory %s does not exist", parent)
	}
	work, err := os.MkdirTemp(parent, "."+filepath.Base(stateDir)+".manufacture-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	state := filepath.Join(work, "state")
	tmp := filepath.Join(work, "tmp") // TMPDIR: swtpm_setup's certificate scratch files
	for _, d := range []string{state, tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}

	argv := []string{ca.setup,
		"--tpm2",
		"--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert", // implies --createek
		"--lock-nvram",
		"--not-overwrite",
		"--pcr-banks", opts.PCRBanks,
		"--vmid", opts.Name,
		"--config", ca.SetupConfig(),
		// swtpm_setup splits this at spaces; without "socket" it runs the
		// program's CUSE flavour checks and fails with "does not support TPM 2".
		"--tpm", ca.tpm + " socket",
		"--write-ek-cert-files", state,
	}
	env := append(os.Environ(),
		"TMPDIR="+tmp,
		// swtpm_localca finds swtpm_cert in PATH; prefer the one installed with it.
		"PATH="+filepath.Dir(ca.localca)+string(os.PathListSeparator)+os.Getenv("PATH"))
	start := time.Now()
	out, err := runTool(ctx, ca.log, argv, env)
	if err != nil {
		return nil, err
	}
	ca.log.Debug("swtpm: manufactured", "dir", stateDir, "name", opts.Name,
		"duration", time.Since(start), "output", oneLine(out))

	// swtpm creates its files 0640; they hold the TPM's secret seeds.
	entries, err := os.ReadDir(state)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if err := os.Chmod(filepath.Join(state, e.Name()), 0o600); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(state, permallFile)); err != nil {
		return nil, fmt.Errorf("swtpm_setup succeeded but wrote no %s: %w", permallFile, err)
	}

	// rename(2) replaces an absent or empty directory, and fails if another
	// Manufacture of the same directory got there first.
	if err := os.Rename(state, stateDir); err != nil {
		if done, _ := isManufactured(stateDir); done {
			return readManufactured(stateDir, false)
		}
		return nil, err
	}
	return readManufactured(stateDir, true)
}

// isManufactured reports whether dir holds manufactured state. An absent or
// empty directory is not manufactured; a directory holding other files is an
// error, since manufacturing over it would lose them.
func isManufactured(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s is not a directory", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, permallFile)); err == nil {
		return true, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	if len(entries) > 0 {
		return false, fmt.Errorf("%s holds %d entries (first %q) but no %s: not a TPM 2 state directory; remove it to manufacture anew",
			dir, len(entries), entries[0].Name(), permallFile)
	}
	return false, nil
}

func readManufactured(dir string, created bool) (*Manufactured, error) {
	m := &Manufactured{StateDir: dir, Created: created}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{ekCertRSAFile, &m.EKCertRSA}, {ekCertECCFile, &m.EKCertECC}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		*f.dst = b
	}
	return m, nil
}

// runTool runs argv to completion in a PID namespace of its own (see
// pidNamespaceAttr; without one where the system refuses it) and returns its
// combined output. Cancelling ctx kills it and everything it started.
func runTool(ctx context.Context, log *slog.Logger, argv []string, env []string) (string, error) {
	var (
		out child.Tail
		p   *child.Process
		err error
	)
	for _, attr := range []*syscall.SysProcAttr{pidNamespaceAttr(), child.Attr()} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		cmd.Stdout = &out
		cmd.Stderr = &out
		cmd.SysProcAttr = attr
		// A grandchild that outlived its parent and still holds the output
		// pipe must not hang Wait.
		cmd.WaitDelay = time.Second
		if p, err = child.Start(cmd, child.Options{}); err == nil {
			break
		}
		if attr.Cloneflags != 0 {
			log.Debug("swtpm: no PID namespace for swtpm_setup; its swtpm may outlive a killed launcher", "err", err)
		}
	}
	if err != nil {
		return "", &ProcessError{Argv: argv, Err: err}
	}
	select {
	case <-p.Done():
		err = p.Wait()
	case <-ctx.Done():
		p.Kill() // the process group: the swtpm it started goes too
		<-p.Done()
		err = context.Cause(ctx)
	}
	if err != nil {
		return out.String(), &ProcessError{Argv: argv, Output: out.String(), Err: err}
	}
	return out.String(), nil
}

// swtpmArgSafe rejects paths that cannot be passed inside swtpm's
// comma-separated option values, or written to a config file.
func swtpmArgSafe(what, path string) error {
	if strings.ContainsRune(path, ',') {
		return fmt.Errorf("%s %q contains ',', which swtpm's option syntax cannot hold", what, path)
	}
	return configSafe(what, path)
}
