//go:build linux

// Package child starts helper processes that die with their parent.
//
// A child gets its own process group (a terminal's Ctrl-C reaches the
// launcher alone, which then tears down in order) and SIGKILL when its parent
// dies (Pdeathsig). Pdeathsig follows the OS thread that forked the child,
// not the process, and Go retires a thread whose goroutine exits while locked
// to it; so Start forks from a goroutine locked to its thread that stays,
// blocked in wait(2), for the child's whole life. The thread then lives
// exactly as long as the child, and dies with the parent.
package child

import (
	"os/exec"
	"runtime"
	"syscall"
)

// Attr is the SysProcAttr Start uses when the command has none.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Start starts cmd as described in the package comment and returns a
// channel that yields cmd.Wait's result once, when the child has exited.
func Start(cmd *exec.Cmd) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = Attr()
	}
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}
