package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
)

// Detaching: `cluster up --detach` starts the launcher again as a
// background process in a session of its own (so the terminal's Ctrl-C
// and hang-up do not reach it), shows its progress until every node is
// ready, and exits. The background launcher is the parent of QEMU, swtpm
// and the switch, which die with it as always; cluster down ends it.
//
// The background launcher writes what a foreground one writes to stderr
// to fd 3 (a pipe the foreground reads), writes one byte to fd 4 once the
// cluster is up, and from then on logs to launcher.log in the log
// directory. Its fds 1 and 2 are /dev/null: nothing it writes later can
// fail on a closed terminal.

const (
	detachedEnv      = "QCLUSTER_DETACHED"       // set in the background launcher
	detachedFancyEnv = "QCLUSTER_DETACHED_FANCY" // the foreground's stderr takes spinner frames
)

// detachedChild is the background launcher's output: the pipe to the
// foreground until detach, the log file after.
type detachedChild struct {
	mu    sync.Mutex
	w     io.Writer
	pipe  *os.File
	ready *os.File
}

// detachedOutput returns the background launcher's output, or nil when
// this is not one.
func detachedOutput() *detachedChild {
	if os.Getenv(detachedEnv) == "" {
		return nil
	}
	os.Unsetenv(detachedEnv)
	// Inherited without close-on-exec: QEMU, swtpm and the switch must not
	// hold them open, or the foreground never sees their end.
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
	pipe, ready := os.NewFile(3, "progress"), os.NewFile(4, "ready")
	return &detachedChild{w: pipe, pipe: pipe, ready: ready}
}

func (d *detachedChild) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.w.Write(p); err != nil {
		d.w = io.Discard // the foreground went away early
	}
	return len(p), nil
}

// detach tells the foreground the cluster is up and moves the output to
// logDir/launcher.log.
func (d *detachedChild) detach(logDir string) {
	f, err := os.OpenFile(filepath.Join(logDir, "launcher.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	d.mu.Lock()
	defer d.mu.Unlock()
	_, _ = d.ready.Write([]byte{1})
	d.ready.Close()
	d.pipe.Close()
	d.w = io.Discard
	if err == nil {
		d.w = f
	}
}

// runDetached is the foreground of up --detach: args are the launch
// flags without --detach.
func runDetached(args []string, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "cluster: --detach: %v\n", err)
		return 1
	}
	progressR, progressW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "cluster: --detach: %v\n", err)
		return 1
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "cluster: --detach: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, append([]string{"up"}, args...)...)
	cmd.Env = append(slices.Clone(os.Environ()), detachedEnv+"=1")
	if f, ok := stderr.(*os.File); ok && capableTerminal(f) {
		cmd.Env = append(cmd.Env, detachedFancyEnv+"=1")
	}
	cmd.ExtraFiles = []*os.File{progressW, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Stdin, stdout and stderr are /dev/null (exec's default for nil).
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "cluster: --detach: start %s: %v\n", self, err)
		return 1
	}
	progressW.Close()
	readyW.Close()
	// Ctrl-C here cancels the launch in the background launcher, which is
	// in another session: pass it on and show the teardown.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			_ = cmd.Process.Signal(sig)
		}
	}()
	_, _ = io.Copy(stderr, progressR)
	b := make([]byte, 1)
	if k, _ := readyR.Read(b); k == 1 {
		// Up and running; the background launcher is reparented when we exit.
		return 0
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(stderr, "cluster: --detach: %v\n", err)
		return 1
	}
	return 1 // exited 0 without saying it was up: --help, say
}
