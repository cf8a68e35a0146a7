package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qcluster/qcluster/internal/atomicfile"
)

// ErrNoSuchCluster: no running cluster has the name asked for.
var ErrNoSuchCluster = errors.New("no such cluster")

// Entry is a running cluster as the registry knows it.
type Entry struct {
	Name string `json:"name"`
	// PID is the launcher's process, which serves the control API on
	// Socket.
	PID      int       `json:"pid"`
	Socket   string    `json:"socket"`
	StateDir string    `json:"state_dir"`
	Started  time.Time `json:"started"`
}

// Registry is a per-user directory of running clusters, one NAME.json file
// per cluster, written by the launcher and read by the cluster command's
// subcommands. Entries whose launcher has died are removed when seen.
type Registry struct {
	// Dir is the registry's directory; it is created mode 0700 and must
	// belong to the user. The cluster command uses
	// $XDG_RUNTIME_DIR/qcluster, or /tmp/qcluster-UID when that is unset.
	Dir string
}

// open creates the directory if need be and checks that it is private.
func (r Registry) open() error {
	if r.Dir == "" {
		return errors.New("registry: no directory")
	}
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	fi, err := os.Lstat(r.Dir)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("registry %s: want a directory of uid %d with mode 0700 (remove it to start afresh)", r.Dir, os.Getuid())
	}
	return nil
}

func (r Registry) path(name string) string { return filepath.Join(r.Dir, name+".json") }

// Register adds e. A live entry of the same name is an error; a dead one
// is replaced.
func (r Registry) Register(e Entry) error {
	if err := r.open(); err != nil {
		return err
	}
	if old, err := r.read(e.Name); err == nil && old.PID != e.PID && alive(old) {
		return fmt.Errorf("cluster %q is running already (pid %d, state %s)", e.Name, old.PID, old.StateDir)
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	err = atomicfile.Write(r.path(e.Name), append(b, '\n'), 0o600)
	if errors.Is(err, os.ErrNotExist) {
		// The last other entry's Unregister removed the directory between
		// open and Write: make it again, once.
		if err := r.open(); err != nil {
			return err
		}
		err = atomicfile.Write(r.path(e.Name), append(b, '\n'), 0o600)
	}
	return err
}

// Unregister removes the entry of name if it is the launcher pid's.
func (r Registry) Unregister(name string, pid int) error {
	if e, err := r.read(name); err == nil && e.PID != pid {
		return nil
	}
	if err := os.Remove(r.path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("registry: %w", err)
	}
	// The last cluster leaves no directory behind (rmdir fails while
	// others are listed).
	_ = os.Remove(r.Dir)
	return nil
}

func (r Registry) read(name string) (Entry, error) {
	var e Entry
	b, err := os.ReadFile(r.path(name))
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("registry entry %s: %w", r.path(name), err)
	}
	return e, nil
}

// List returns the running clusters, sorted by name, and removes the
// entries of launchers that died.
func (r Registry) List() ([]Entry, error) {
	if _, err := os.Stat(r.Dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err := r.open(); err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(r.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		e, err := r.read(name)
		if err != nil || !alive(e) {
			os.Remove(f)
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Lookup returns the running cluster called name, or, for an empty name,
// the only running cluster. Its errors say which clusters are running.
func (r Registry) Lookup(name string) (Entry, error) {
	all, err := r.List()
	if err != nil {
		return Entry{}, err
	}
	var names []string
	for _, e := range all {
		if e.Name == name {
			return e, nil
		}
		names = append(names, e.Name)
	}
	running := "none is running"
	if len(names) > 0 {
		running = "running: " + strings.Join(names, ", ")
	}
	switch {
	case name != "":
		return Entry{}, fmt.Errorf("%w %q (%s)", ErrNoSuchCluster, name, running)
	case len(all) == 1:
		return all[0], nil
	case len(all) == 0:
		return Entry{}, fmt.Errorf("%w: no cluster is running (start one with: cluster up --detach)", ErrNoSuchCluster)
	}
	return Entry{}, fmt.Errorf("%d clusters are running (%s): name one", len(all), strings.Join(names, ", "))
}

// alive reports whether e's launcher still runs and answers on its socket.
func alive(e Entry) bool {
	if !ProcessAlive(e.PID) {
		return false
	}
	var d net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "unix", e.Socket)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// ProcessAlive reports whether pid is a process that has not exited (a
// zombie, exited but not yet reaped by its parent, counts as exited).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// "pid (comm) S ...": the state follows the last parenthesis.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}
