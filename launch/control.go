package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/control"
)

// launcherControl is the launcher's side of the control API: the server
// on a socket in the state directory, the registry entry that lets other
// terminals find it, and teardown requests (cluster down).
type launcherControl struct {
	srv    *control.Server
	reg    control.Registry
	name   string
	down   chan struct{}
	once   sync.Once
	closed sync.Once
}

// checkName refuses a name a running cluster has, before anything starts.
func checkName(name string) error {
	if name == "" {
		return nil
	}
	if e, err := (control.Registry{Dir: registryDir()}).Lookup(name); err == nil {
		return fmt.Errorf("--name %s: a cluster of that name is running already (pid %d; cluster down %s stops it)", name, e.PID, name)
	}
	return nil
}

// startControl serves c's control API and registers it.
func startControl(c *cluster.Cluster, ready string, started time.Time, took time.Duration, logger *slog.Logger) (*launcherControl, error) {
	lc := &launcherControl{reg: control.Registry{Dir: registryDir()}, name: c.Name, down: make(chan struct{})}
	sock := filepath.Join(c.StateDir, "control.sock")
	if len(sock) > 100 { // UNIX socket paths are short; a deep state directory is not
		if err := os.MkdirAll(lc.reg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("control socket: %w", err)
		}
		sock = filepath.Join(lc.reg.Dir, c.Name+".sock")
	}
	srv, err := control.Serve(c, sock, control.Options{
		Info:   control.Info{Ready: ready, Started: started, LaunchTook: took},
		Down:   func() { lc.once.Do(func() { close(lc.down) }) },
		Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	lc.srv = srv
	if err := lc.reg.Register(control.Entry{Name: c.Name, PID: os.Getpid(), Socket: sock, StateDir: c.StateDir, Started: started}); err != nil {
		srv.Close()
		return nil, err
	}
	return lc, nil
}

// Down is closed when a client asks for teardown.
func (lc *launcherControl) Down() <-chan struct{} {
	if lc == nil {
		return nil
	}
	return lc.down
}

// Close unregisters the cluster and stops serving, before teardown: from
// then on no command finds it.
func (lc *launcherControl) Close() {
	if lc == nil {
		return
	}
	lc.closed.Do(func() {
		_ = lc.reg.Unregister(lc.name, os.Getpid())
		lc.srv.Close()
	})
}
