//go:build linux

// Package child runs helper processes (QEMU, swtpm, the switch) for as long
// as the launcher lives: it starts them bound to the launcher's life, waits
// for them once on behalf of every caller, stops them by one ladder, and
// keeps the tail of what they write for error messages.
//
// A child gets its own process group (a terminal's Ctrl-C reaches the
// launcher alone, which then tears down in order) and SIGKILL when its parent
// dies (Pdeathsig). Pdeathsig follows the OS thread that forked the child,
// not the process, and Go retires a thread whose goroutine exits while locked
// to it; so Start forks from a goroutine locked to its thread that stays,
// blocked in wait(2), for the child's whole life. The thread then lives
// exactly as long as the child, and dies with the parent.
//
// Stop is the one way helpers end, and the contract every helper's Close
// follows: ask (Options.Ask: QMP quit, EOF on stdin, SIGTERM), wait
// Options.Grace, SIGTERM, wait, SIGKILL to the process group, wait. It
// returns nil if the child had exited or ended when asked, else a *StopError
// saying which signal ended it; Wait says how it ended. Repeated and
// concurrent calls get the same answer.
package child

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Attr is the SysProcAttr Start uses when the command has none.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Options say how a child is stopped and when it counts as ended.
type Options struct {
	// Ask asks the child to exit; Stop calls it first, with a context that
	// ends after Grace. Default: none — SIGTERM is the request.
	Ask func(ctx context.Context) error
	// Grace is how long Stop waits after each step before the next.
	// Default: 5 s.
	Grace time.Duration
	// Drained, if set, is waited for after the child was reaped and before
	// Wait returns: the reader of an output pipe the caller made itself.
	Drained <-chan struct{}
}

// Process is a running child.
type Process struct {
	cmd  *exec.Cmd
	opts Options
	done chan struct{}
	err  error // cmd.Wait's; written before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts cmd as described in the package comment.
func Start(cmd *exec.Cmd, opts Options) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = Attr()
	}
	if opts.Grace <= 0 {
		opts.Grace = 5 * time.Second
	}
	p := &Process{cmd: cmd, opts: opts, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		if opts.Drained != nil {
			<-opts.Drained
		}
		p.err = err
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Pid is the child's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the child has been reaped (and Options.Drained has
// closed).
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the child and returns cmd.Wait's result. Every caller,
// concurrent or later, gets the same result.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// State is the child's exit state; nil until Done is closed.
func (p *Process) State() *os.ProcessState {
	select {
	case <-p.done:
		return p.cmd.ProcessState
	default:
		return nil
	}
}

// StopError says that a child had to be signalled to stop.
type StopError struct {
	Name   string         // the program's base name
	Pid    int            //
	Signal syscall.Signal // SIGTERM or SIGKILL: what ended it
	Grace  time.Duration
	Asked  bool  // Options.Ask was called (else SIGTERM was the request)
	Ask    error // what it returned
}

func (e *StopError) Error() string {
	if !e.Asked {
		return fmt.Sprintf("%s (pid %d) ignored SIGTERM for %v: killed", e.Name, e.Pid, e.Grace)
	}
	s := fmt.Sprintf("%s (pid %d) did not exit within %v of being asked", e.Name, e.Pid, e.Grace)
	if e.Ask != nil {
		s += fmt.Sprintf(" (asking: %v)", e.Ask)
	}
	if e.Signal == syscall.SIGKILL {
		return s + ", nor of SIGTERM: killed"
	}
	return s + ": sent SIGTERM"
}

// Stop stops the child if it still runs: see the package comment.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	if p.within(0) {
		return nil
	}
	e := &StopError{Name: filepath.Base(p.cmd.Path), Pid: p.Pid(), Grace: p.opts.Grace}
	if p.opts.Ask != nil {
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.Grace)
		e.Asked, e.Ask = true, p.opts.Ask(ctx)
		cancel()
		if p.within(p.opts.Grace) {
			return nil
		}
		e.Signal = syscall.SIGTERM
	}
	// os.Process signals through a pidfd: no risk of hitting a reused pid.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.within(p.opts.Grace) {
		if e.Signal == 0 {
			return nil // SIGTERM was the request
		}
		return e
	}
	// The process group: anything the child started goes too. The leader
	// is not reaped yet, so the group id is still its own.
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil {
		_ = p.cmd.Process.Kill()
	}
	e.Signal = syscall.SIGKILL
	<-p.done
	return e
}

// Kill sends SIGKILL to the child's process group at once, without waiting.
func (p *Process) Kill() {
	select {
	case <-p.done:
	default:
		if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil {
			_ = p.cmd.Process.Kill()
		}
	}
}

// within reports whether the child is done within d.
func (p *Process) within(d time.Duration) bool {
	if d == 0 {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// Tail is an io.Writer that keeps the last Max bytes written to it (8 KiB
// when Max is 0), from a line boundary on, for error messages. It is safe
// for concurrent use.
type Tail struct {
	Max int
	mu  sync.Mutex
	buf []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	max := t.Max
	if max <= 0 {
		max = 8 << 10
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - max; over > 0 {
		t.buf = t.buf[over:]
		// Start at a line boundary so the first line is not a fragment.
		if i := bytes.IndexByte(t.buf, '\n'); i >= 0 {
			t.buf = t.buf[i+1:]
		}
	}
	return len(p), nil
}

// String returns what is kept.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// Lines returns the last n non-empty lines kept (all for n <= 0), trimmed.
func (t *Tail) Lines(n int) []string {
	var lines []string
	for l := range strings.SplitSeq(t.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
