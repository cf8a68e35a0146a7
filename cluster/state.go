package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/atomicfile"
)

// prepareState makes the state, log and socket directories and the plan.
func (c *Cluster) prepareState(ctx context.Context) error {
	o := c.opts
	// The lock says "in use" to any other launch pointed at this directory.
	var lock *os.File
	var err error
	if o.StateDir == "" {
		dir, err := os.MkdirTemp(o.TempDir, "qcluster-"+o.Name+"-")
		if err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
		if lock, _, err = lockDir(dir); err != nil {
			os.RemoveAll(dir) // fresh, so ours alone
			return err
		}
		c.StateDir = dir
	} else {
		dir, err := filepath.Abs(o.StateDir)
		if err != nil {
			return fmt.Errorf("state directory %s: %w", o.StateDir, err)
		}
		if lock, err = claimDir(dir); err != nil {
			return err
		}
		c.StateDir = dir
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
		c.LogDir = filepath.Join(c.StateDir, "logs")
	}
	if err := os.MkdirAll(c.LogDir, 0o700); err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	// UNIX socket paths are limited to 108 bytes: keep sockets in a short
	// directory of their own, whatever TempDir is.
	if c.sockDir, err = os.MkdirTemp("/tmp", "qc-"+o.Name+"-"); err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	c.onUndo("remove socket directory", removeAll(c.sockDir))

	if c.manifest != nil {
		c.Plan, err = c.manifest.plan()
	} else {
		c.Plan, err = makePlan(o)
	}
	if err != nil {
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
		n.ram, n.ramShared = filepath.Join(n.Dir, "ram"), true
		if err := os.MkdirAll(n.Dir, 0o700); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if m := c.manifest; m != nil {
			// The guest already read its parameters: it gets the
			// template's (copyDisks), and carries on from the snapshot.
			src := filepath.Join(o.Snapshot, n.Name)
			n.ram, n.ramShared = filepath.Join(src, snapRAM), false
			n.incoming = filepath.Join(src, snapState)
			n.EKCertificate = m.Nodes[n.Index].EKCertificate
			c.Nodes = append(c.Nodes, n)
			continue
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

// claimDir makes dir (0700) or accepts it if it is empty, and returns its
// lock; a directory that another cluster holds, or that holds anything, is
// refused. The lock is taken before the directory is judged, so that of two
// launches given one directory the loser finds it in use and touches nothing.
func claimDir(dir string) (*os.File, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state directory %s: %w", dir, err)
		}
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return nil, fmt.Errorf("state directory %s is not writable: %w", dir, err)
	}
	lock, created, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err == nil && len(entries) > 1 {
		err = fmt.Errorf("state directory %s is not empty: remove it or choose another (--state-dir)", dir)
	}
	if err == nil {
		err = os.Chmod(dir, 0o700)
	}
	if err != nil {
		if created { // leave the directory as it was
			os.Remove(lock.Name())
		}
		lock.Close()
		return nil, err
	}
	return lock, nil
}

// checkStateDir says, changing nothing, whether claimDir would refuse dir,
// so that a launch with work to do first (making a template) fails before.
func checkStateDir(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		// MkdirAll needs the nearest existing ancestor to be writable.
		p := filepath.Dir(dir)
		for {
			if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
				break
			}
			p = filepath.Dir(p)
		}
		if err := unix.Access(p, unix.W_OK); err != nil {
			return fmt.Errorf("state directory %s cannot be made in %s: %w", dir, p, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s is not a directory", dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("state directory %s is not writable: %w", dir, err)
	}
	if f, err := os.Open(filepath.Join(dir, lockName)); err == nil {
		defer f.Close() // and so unlocked
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("state directory %s is in use by another cluster", dir)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Name() != lockName {
			return fmt.Errorf("state directory %s is not empty: remove it or choose another (--state-dir)", dir)
		}
	}
	return nil
}

// lockDir takes an exclusive lock on dir's lock file, and says whether it
// made the file.
func lockDir(dir string) (f *os.File, created bool, err error) {
	name := filepath.Join(dir, lockName)
	f, err = os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	created = err == nil
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(name, os.O_RDWR, 0o600)
	}
	if err != nil {
		return nil, false, fmt.Errorf("state directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, fmt.Errorf("state directory %s is in use by another cluster", dir)
		}
		return nil, false, fmt.Errorf("state directory %s: lock: %w", dir, err)
	}
	return f, created, nil
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
