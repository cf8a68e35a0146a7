package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/imagebuild/disk"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/nanoswitch"
	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/resolve"
	"github.com/qcluster/qcluster/swtpm"
)

// hostTools are the programs and firmware found on the host.
type hostTools struct {
	qemu, swtpm, swtpmSetup, nanoswitch string
	ovmf                                qemu.OVMF
	image, loader                       string
}

// diskInputs are what every node's disk is made of.
type diskInputs struct {
	loader, kernel, system disk.Blob
	verified               bool // the payloads were checked once; the blobs are raw
}

// checkHost finds every program and file the launch needs, before anything
// is written, and decides the accelerator.
func (c *Cluster) checkHost(ctx context.Context) error {
	o := c.opts
	h := &c.host
	var err error
	if h.image, err = resolve.Find(resolve.Image(o.Image)); err != nil {
		return err
	}
	if h.loader, err = resolve.Find(resolve.Loader(o.Loader)); err != nil {
		return err
	}
	if h.qemu, err = resolve.Find(resolve.QEMU(o.QEMU)); err != nil {
		return err
	}
	if h.ovmf, err = qemu.FindOVMF(qemu.FirmwareQuery{Code: o.FirmwareCode, VarsTemplate: o.FirmwareVars}); err != nil {
		return err
	}
	if c.needsTPM() {
		if h.swtpm, err = resolve.Find(resolve.Swtpm(o.Swtpm)); err != nil {
			return err
		}
		if h.swtpmSetup, err = resolve.Find(resolve.SwtpmSetup(o.SwtpmSetup)); err != nil {
			return err
		}
	}
	if h.nanoswitch, err = findNanoswitch(ctx, o.Nanoswitch); err != nil {
		return err
	}
	accel, err := qemu.DetectAccel(qemu.Accel(o.Accel))
	if err != nil {
		return err
	}
	if accel.Notice != "" {
		o.Logger.Warn(accel.Notice)
	}
	c.Accel = string(accel.Accel)
	return nil
}

func (c *Cluster) needsTPM() bool {
	for i := 0; i < c.opts.Nodes; i++ {
		if n, _ := c.opts.nodeOptions(i); !n.NoTPM {
			return true
		}
	}
	return false
}

// findNanoswitch finds the nanoswitch command, building it from this
// repository with the go command as a last resort (go run / go test without
// make; make builds out/bin/nanoswitch).
func findNanoswitch(ctx context.Context, explicit string) (string, error) {
	p, err := resolve.Find(resolve.Nanoswitch(explicit))
	root, rerr := resolve.RepoRoot()
	out := filepath.Join(root, "out", "bin", "nanoswitch")
	if explicit != "" || (err == nil && (rerr != nil || p != out || !staleBinary(root, out))) {
		return p, err
	}
	gobin, gerr := exec.LookPath("go")
	if rerr != nil || gerr != nil {
		if err == nil {
			return p, nil // stale, but nothing to rebuild it with
		}
		return "", err
	}
	build := exec.CommandContext(ctx, gobin, "build", "-o", out, "./nanoswitch/cmd/nanoswitch")
	build.Dir = root
	if b, berr := build.CombinedOutput(); berr != nil {
		return "", fmt.Errorf("%w; building it failed too: %v: %s", err, berr, strings.TrimSpace(string(b)))
	}
	return out, nil
}

// staleBinary reports whether the repository's build of nanoswitch is older
// than any of its sources (or go.mod), so that a developer's edit is never
// run against an old binary.
func staleBinary(root, bin string) bool {
	st, err := os.Stat(bin)
	if err != nil {
		return true
	}
	stale := false
	for _, dir := range []string{"nanoswitch", "go.mod", "go.sum"} {
		filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".go") || strings.HasPrefix(d.Name(), "go.")) {
				if info, err := d.Info(); err == nil && info.ModTime().After(st.ModTime()) {
					stale = true
					return filepath.SkipAll
				}
			}
			return nil
		})
	}
	return stale
}

// prepareState makes the state, log and socket directories and the plan.
func (c *Cluster) prepareState(ctx context.Context) error {
	o := c.opts
	if o.StateDir == "" {
		dir, err := os.MkdirTemp(defaultStateParent(), "qcluster-"+o.Name+"-")
		if err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
		c.StateDir = dir
	} else {
		dir, err := filepath.Abs(o.StateDir)
		if err != nil {
			return fmt.Errorf("state directory %s: %w", o.StateDir, err)
		}
		if err := claimDir(dir); err != nil {
			return err
		}
		c.StateDir = dir
	}
	// The lock says "in use" to any other launch pointed at this directory.
	lock, err := lockDir(c.StateDir)
	if err != nil {
		os.RemoveAll(c.StateDir)
		return err
	}
	keep := o.KeepState
	c.onUndo("remove state directory", func() error {
		lock.Close()
		if keep {
			return os.Remove(filepath.Join(c.StateDir, lockName))
		}
		return os.RemoveAll(c.StateDir)
	})
	c.LogDir = o.LogDir
	if c.LogDir == "" {
		c.LogDir = defaultLogDir(o.Name, c.StateDir)
	}
	if err := os.MkdirAll(c.LogDir, 0o700); err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	// UNIX socket paths are limited to 108 bytes: keep sockets in a short
	// directory of their own, whatever TMPDIR or TEST_TMPDIR is.
	if c.sockDir, err = os.MkdirTemp("/tmp", "qc-"+o.Name+"-"); err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	c.onUndo("remove socket directory", removeAll(c.sockDir))

	if c.Plan, err = makePlan(o); err != nil {
		return err
	}
	if err := c.writeUserFiles(); err != nil {
		return err
	}
	for _, np := range c.Plan.Nodes {
		n := &Node{NodePlan: np, c: c, Dir: c.nodeDir(np)}
		n.disk = filepath.Join(n.Dir, "disk.raw")
		n.vars = filepath.Join(n.Dir, "vars.fd")
		n.SerialLog = filepath.Join(c.LogDir, n.Name, "console.log")
		n.CommandLineFile = filepath.Join(c.LogDir, n.Name, "qemu.sh")
		n.tpmSock = filepath.Join(c.sockDir, n.Name+".tpm")
		if !np.Options.NoTPM {
			n.tpmState = filepath.Join(n.Dir, "tpm")
		}
		if err := os.MkdirAll(n.Dir, 0o700); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		params, err := o.Profile.Parameters(c.Plan, np)
		if err != nil {
			return fmt.Errorf("%s: parameters: %w", n.Name, err)
		}
		if params != nil {
			n.params = filepath.Join(n.Dir, "parameters")
			// They hold the node's private key.
			if err := atomicfile.Write(n.params, params, 0o600); err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
		}
		c.Nodes = append(c.Nodes, n)
	}
	return nil
}

const lockName = ".qcluster.lock"

// claimDir makes dir (0700) or accepts it if it is empty; a directory that
// another cluster holds, or that holds anything, is refused.
func claimDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("state directory %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Name() == lockName {
			if f, err := lockDir(dir); err != nil {
				return err
			} else {
				f.Close()
			}
		}
	}
	if len(entries) > 0 {
		return fmt.Errorf("state directory %s is not empty: remove it or choose another (--state-dir)", dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("state directory %s is not writable: %w", dir, err)
	}
	return os.Chmod(dir, 0o700)
}

// lockDir takes an exclusive lock on dir's lock file.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state directory %s is in use by another cluster", dir)
		}
		return nil, fmt.Errorf("state directory %s: lock: %w", dir, err)
	}
	return f, nil
}

// writeUserFiles writes the CA, the owner's certificate and an env file.
func (c *Cluster) writeUserFiles() error {
	c.Files = Files{
		CA:         filepath.Join(c.StateDir, "ca.crt"),
		ClientCert: filepath.Join(c.StateDir, "owner.crt"),
		ClientKey:  filepath.Join(c.StateDir, "owner.key"),
		Env:        filepath.Join(c.StateDir, "env"),
	}
	if err := atomicfile.Write(c.Files.CA, c.Plan.PKI.CAPEM, 0o644); err != nil {
		return err
	}
	return writeIdentity(c.StateDir, "owner", c.Plan.Owner)
}

// readImage opens the OS image and, unless told not to, verifies its
// payloads once here so that every node's disk can reflink the raw blobs.
func (c *Cluster) readImage(ctx context.Context) error {
	img, err := osimage.Open(c.host.image)
	if err != nil {
		return err
	}
	loader, err := os.Stat(c.host.loader)
	if err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	c.inputs.loader = fileBlob{path: c.host.loader, size: loader.Size()}
	kernel, system, err := disk.ImageBlobs(img, false)
	if errors.Is(err, osimage.ErrCompressed) {
		// Compressed payloads cannot be reflinked: every node decompresses
		// and verifies its own copy.
		kernel, system, err = disk.ImageBlobs(img, true)
		c.inputs.kernel, c.inputs.system = kernel, system
		return err
	}
	if err != nil {
		return err
	}
	if !c.opts.Unverified {
		vk, vs, err := disk.ImageBlobs(img, true)
		if err != nil {
			return err
		}
		for _, b := range []disk.Blob{vk, vs} {
			if err := drain(ctx, b); err != nil {
				return err
			}
		}
		c.inputs.verified = true
	}
	c.inputs.kernel, c.inputs.system = kernel, system
	return nil
}

// drain reads a verifying blob to the end, which checks every chunk.
func drain(ctx context.Context, b disk.Blob) error {
	r, err := b.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("verify payload: %w", err)
	}
	return ctx.Err()
}

// fileBlob is a host file as a disk.Blob; it opens as *os.File so that
// copies can take the fast paths.
type fileBlob struct {
	path string
	size int64
}

func (f fileBlob) Open() (io.ReadCloser, error) { return os.Open(f.path) }
func (f fileBlob) Size() int64                  { return f.size }

// synthesizeDisks writes every node's disk and firmware variables at once.
func (c *Cluster) synthesizeDisks(ctx context.Context) error {
	start := time.Now()
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		stats, err := disk.Write(ctx, n.disk, disk.Options{
			Size:   n.Options.DiskSize,
			Seed:   c.Name + "/" + n.Name,
			Loader: c.inputs.loader,
			Kernel: c.inputs.kernel,
			System: c.inputs.system,
			Logger: c.opts.Logger.With("node", n.Name),
		})
		if err != nil {
			return fmt.Errorf("%s: synthesize disk: %w", n.Name, err)
		}
		for _, cp := range stats.Copied {
			c.opts.Logger.Debug("disk", "node", n.Name, "copied", cp)
		}
		if _, err := qemu.PrepareVars(c.host.ovmf.VarsTemplate, n.vars); err != nil {
			return fmt.Errorf("%s: firmware variables: %w", n.Name, err)
		}
		n.mu.Lock()
		n.timings.DiskReady = time.Since(start)
		n.mu.Unlock()
		return nil
	})
}

// manufactureTPMs makes the cluster's TPM CA and every node's TPM state.
func (c *Cluster) manufactureTPMs(ctx context.Context) error {
	if !c.needsTPM() {
		return nil
	}
	ca, err := swtpm.NewCA(ctx, filepath.Join(c.StateDir, "tpm-ca"), swtpm.CAOptions{
		SetupBinary: c.host.swtpmSetup, TPMBinary: c.host.swtpm, Logger: c.opts.Logger,
	})
	if err != nil {
		return fmt.Errorf("TPM CA: %w", err)
	}
	c.tpmCA = ca
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		if n.tpmState == "" {
			return nil
		}
		m, err := ca.Manufacture(ctx, n.tpmState, swtpm.ManufactureOptions{Name: n.Name})
		if err != nil {
			return fmt.Errorf("%s: manufacture TPM: %w", n.Name, err)
		}
		n.EKCertificate = m.EKCertRSA
		return nil
	})
}

// startNetwork starts the nanoswitch helper and writes the env file.
func (c *Cluster) startNetwork(ctx context.Context) error {
	nw, err := startSwitch(ctx, c.host.nanoswitch, filepath.Join(c.sockDir, "net"), c.Plan, c.LogDir)
	if err != nil {
		return err
	}
	c.net = nw
	c.onUndo("stop nanoswitch", nw.close)
	for _, n := range c.Nodes {
		if n.netSock, err = nw.socket(n.Name); err != nil {
			return err
		}
	}
	c.SOCKS5 = SOCKS5{Address: nw.ready.SOCKSAddress, CredentialsFile: nw.ready.CredentialsFile}
	return c.writeEnv()
}

// writeEnv writes a shell file that points tools at the cluster.
func (c *Cluster) writeEnv() error {
	user, pass := "", ""
	if c.SOCKS5.CredentialsFile != "" {
		var err error
		if user, pass, err = nanoswitch.ReadCredentials(c.SOCKS5.CredentialsFile); err != nil {
			return err
		}
	}
	c.SOCKS5.Username, c.SOCKS5.Password = user, pass
	var b strings.Builder
	fmt.Fprintf(&b, "# qcluster %s: source this file to reach the nodes.\n", c.Name)
	fmt.Fprintf(&b, "export QCLUSTER_NAME=%s\n", c.Name)
	fmt.Fprintf(&b, "export QCLUSTER_CA=%s\nexport QCLUSTER_CERT=%s\nexport QCLUSTER_KEY=%s\n", c.Files.CA, c.Files.ClientCert, c.Files.ClientKey)
	fmt.Fprintf(&b, "export QCLUSTER_SOCKS5=%s\n", c.SOCKS5.Address)
	// socks5h: names are resolved by the switch (node0, node0.<domain>).
	fmt.Fprintf(&b, "export ALL_PROXY=socks5h://%s:%s@%s\n", user, pass, c.SOCKS5.Address)
	// grpc-go (so grpcurl) speaks HTTP CONNECT to whatever HTTPS_PROXY
	// names; the same port answers it.
	fmt.Fprintf(&b, "export HTTPS_PROXY=http://%s:%s@%s\n", user, pass, c.SOCKS5.Address)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "export QCLUSTER_%s=%s\n", strings.ToUpper(n.Name), n.Address)
	}
	return atomicfile.Write(c.Files.Env, []byte(b.String()), 0o600)
}

// bootNodes starts every node's swtpm and QEMU at once.
func (c *Cluster) bootNodes(ctx context.Context) error {
	c.onUndo("stop nodes", func() error {
		errs := make([]error, len(c.Nodes))
		var wg sync.WaitGroup
		for i, n := range c.Nodes {
			wg.Go(func() { errs[i] = n.halt() })
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		if err := n.start(ctx); err != nil {
			return n.fail(err)
		}
		return nil
	})
}
