package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qcluster/qcluster/internal/needs"
)

// startQEMU starts a paused QEMU whose QMP server listens on a socket this
// test made (so it is there before QEMU runs) and returns the socket's path.
func startQEMU(t *testing.T) string {
	t.Helper()
	bin := needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-machine", "q35,accel=tcg", "-m", "64M", "-nodefaults", "-no-user-config",
		"-display", "none", "-S", "-chardev", "socket,id=m,fd=3,server=on,wait=off", "-mon", "chardev=m,mode=control")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		ln.Close()
	})
	return path
}

func TestClient(t *testing.T) {
	path := startQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	// Concurrent commands each get their own answer.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := q.QueryStatus(ctx); err != nil || s.Running || s.Status != "prelaunch" {
				t.Errorf("query-status = %+v, %v; want prelaunch", s, err)
			}
		}()
	}
	wg.Wait()
	var machineType string
	if err := q.Execute(ctx, "qom-get", map[string]string{"path": "/machine", "property": "type"}, &machineType); err != nil ||
		!strings.Contains(machineType, "q35") {
		t.Errorf("qom-get /machine type = %q, %v; want a q35 machine", machineType, err)
	}

	var qerr *Error
	if err := q.Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" ||
		qerr.Command != "no-such-command" {
		t.Errorf("unknown command: %v, want an Error of class CommandNotFound", err)
	}
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if err := q.Cont(done); !errors.Is(err, context.Canceled) {
		t.Errorf("cont with a cancelled context: %v", err)
	}

	events, unsubscribe := q.Subscribe()
	defer unsubscribe()
	if err := q.SystemReset(ctx); err != nil {
		t.Fatal(err)
	}
	ev := <-events
	var data struct {
		Guest  bool   `json:"guest"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil || ev.Name != "RESET" || data.Reason != "host-qmp-system-reset" ||
		ev.Time.IsZero() {
		t.Errorf("event %s %s at %v, want RESET host-qmp-system-reset", ev.Name, ev.Data, ev.Time)
	}

	if err := q.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Done():
	case <-ctx.Done():
		t.Fatal("connection did not end after quit")
	}
	for ev := range events { // the SHUTDOWN event came before the end
		if ev.Name != "SHUTDOWN" {
			t.Errorf("event %s after quit", ev.Name)
		}
	}
	if _, err := q.QueryStatus(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("query-status after quit: %v, want ErrClosed", err)
	}
	if ch, _ := q.Subscribe(); ch != nil {
		if _, open := <-ch; open {
			t.Errorf("Subscribe after the end gave an open channel")
		}
	}
}

func TestDialNothing(t *testing.T) {
	if _, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Errorf("Dial of a missing socket: no error")
	}
}
