package control

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRegistry(t *testing.T) {
	dir := t.TempDir()
	r := Registry{Dir: filepath.Join(dir, "reg")}
	if all, err := r.List(); err != nil || len(all) != 0 {
		t.Fatalf("empty registry: %v %v", all, err)
	}
	if _, err := r.Lookup(""); !errors.Is(err, ErrNoSuchCluster) || !strings.Contains(err.Error(), "no cluster is running") {
		t.Errorf("lookup in an empty registry: %v", err)
	}
	sock := filepath.Join(dir, "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	live := Entry{Name: "alpha", PID: os.Getpid(), Socket: sock, StateDir: dir, Started: time.Now()}
	if err := r.Register(live); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(r.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("registry dir %v %v", fi.Mode(), err)
	}
	// A launcher that died: its process has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(Entry{Name: "beta", PID: dead.Process.Pid, Socket: sock}); err != nil {
		t.Fatal(err)
	}
	// Another live launcher may not take a live name.
	if err := r.Register(Entry{Name: "alpha", PID: os.Getpid() + 1, Socket: sock}); err == nil {
		t.Error("a second live alpha was registered")
	}
	all, err := r.List()
	if err != nil || len(all) != 1 || all[0].Name != "alpha" {
		t.Fatalf("list: %v %v", all, err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "beta.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dead entry left behind: %v", err)
	}
	if e, err := r.Lookup(""); err != nil || e.Name != "alpha" {
		t.Errorf("lookup of the only cluster: %v %v", e, err)
	}
	if _, err := r.Lookup("gamma"); !errors.Is(err, ErrNoSuchCluster) || !strings.Contains(err.Error(), "running: alpha") {
		t.Errorf("lookup of a missing name: %v", err)
	}
	// A live process whose socket no longer answers is dead too.
	ln.Close()
	if all, _ := r.List(); len(all) != 0 {
		t.Errorf("entry without a socket listed: %v", all)
	}
	if err := r.Unregister("alpha", os.Getpid()); err != nil {
		t.Error(err)
	}
	// The last entry out removes the directory; until then it stays.
	if _, err := os.Stat(r.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty registry directory left behind: %v", err)
	}
	for _, name := range []string{"one", "two"} {
		if err := r.Register(Entry{Name: name, PID: os.Getpid(), Socket: sock}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Unregister("one", os.Getpid()); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "two.json")); err != nil {
		t.Errorf("unregistering one took two with it: %v", err)
	}
	if err := r.Unregister("two", os.Getpid()); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(r.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty registry directory left behind: %v", err)
	}
	// A directory others can read is refused.
	open := Registry{Dir: filepath.Join(dir, "open")}
	if err := os.Mkdir(open.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := open.Register(live); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Errorf("registry in a 0755 dir: %v", err)
	}
}

func TestProcessAlive(t *testing.T) {
	if !ProcessAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	// Until Wait reaps it, the child is a zombie: exited. (WNOWAIT waits
	// for the exit without reaping.)
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(cmd.Process.Pid) {
		t.Error("a killed, unreaped child counts as alive")
	}
	cmd.Wait()
	if ProcessAlive(cmd.Process.Pid) || ProcessAlive(0) {
		t.Error("reaped child or pid 0 alive")
	}
}
