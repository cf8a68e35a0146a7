package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kballard/go-shellquote"
	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/internal/child"
	"github.com/qcluster/qcluster/qemu/qmp"
	"github.com/qcluster/qcluster/resolve"
)

// Options say how a machine is supervised.
type Options struct {
	// QEMU is the qemu-system-x86_64 binary. Default: resolve.QEMU's search
	// (Bazel runfiles, $QCLUSTER_QEMU, PATH).
	QEMU string
	// Dir is the machine's directory, created (0700) if missing: console.log
	// (the serial output, appended) and qemu.sh (the command line, replaced
	// at every Start) live there. Required.
	Dir string
	// ConsoleSocket, if set, is a UNIX socket path where interactive clients
	// (socat, a terminal) get the raw serial output and send input. Default none.
	ConsoleSocket string
	// ConsoleLines is how many console lines Console().Tail keeps. Default 1000.
	ConsoleLines int
	// StopTimeout is how long Close waits after QMP quit, then after SIGTERM,
	// before it kills QEMU. Default 10s.
	StopTimeout time.Duration
	// Logger receives the command line, the accelerator notice, QEMU's
	// stderr and QMP events. Default: discard.
	Logger *slog.Logger
}

// ExitKind classifies how QEMU ended.
type ExitKind int

const (
	// ExitPoweredOff: the guest powered itself off (SHUTDOWN reason
	// guest-shutdown), e.g. after SystemPowerdown.
	ExitPoweredOff ExitKind = iota + 1
	// ExitReset: a reset under -no-reboot (Machine.Reboot false), asked for by
	// the guest (reason guest-reset; also a kernel panic with panic=-1) or by
	// the host (host-qmp-system-reset). A caller that wants the machine back
	// starts it again.
	ExitReset
	// ExitQuit: the host ended QEMU through QMP quit (Close does this).
	ExitQuit
	// ExitKilled: a signal ended QEMU, either handled (SIGTERM, SIGINT,
	// SIGHUP: reason host-signal, exit status 0) or not (SIGKILL).
	ExitKilled
	// ExitCrashed: QEMU failed: a non-zero exit status (a bad argument, a
	// host error), a guest panic event, or an exit without a SHUTDOWN event.
	ExitCrashed
)

var exitNames = map[ExitKind]string{ExitPoweredOff: "powered off", ExitReset: "reset requested",
	ExitQuit: "quit", ExitKilled: "killed", ExitCrashed: "crashed"}

func (k ExitKind) String() string {
	if s, ok := exitNames[k]; ok {
		return s
	}
	return fmt.Sprintf("ExitKind(%d)", int(k))
}

// Exit is how QEMU ended.
type Exit struct {
	Kind ExitKind
	// Reason is the reason of QEMU's last SHUTDOWN event ("guest-shutdown",
	// "guest-reset", "host-qmp-quit", "host-signal", …), "" if there was none.
	Reason string
	// Status is the exit status, -1 if a signal ended the process.
	Status int
	// Signal is the signal that ended the process, 0 if none did.
	Signal syscall.Signal
	// Stderr holds the last lines QEMU wrote to stderr (and stdout).
	Stderr []string
}

func (e Exit) String() string {
	s := e.Kind.String()
	switch {
	case e.Signal != 0:
		s += " by " + unix.SignalName(e.Signal) // "killed by SIGKILL", not "killed: killed"
	case e.Status != 0:
		s += fmt.Sprintf(": exit status %d", e.Status)
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// ExitError is Wait's error for an exit of kind ExitCrashed or ExitKilled.
type ExitError struct {
	Machine string
	Exit    Exit
	Argv    []string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("qemu %s: %s%s: argv: %s", e.Machine, e.Exit, stderrSuffix(e.Exit.Stderr), shellquote.Join(e.Argv...))
}

func stderrSuffix(lines []string) string {
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	if len(lines) == 0 {
		return ""
	}
	return ": stderr: " + strings.Join(lines, " | ")
}

// VM supervises one QEMU process. It is made by New, runs once from Start to
// its exit, and is cleaned up by Close; restarting a machine takes a new VM.
type VM struct {
	m      Machine
	opts   Options
	logger *slog.Logger

	stateMu   sync.Mutex
	state     vmState
	startDone chan struct{} // closed when Start has returned
	argv      []string
	cmd       *exec.Cmd
	proc      *child.Process
	execAt    time.Time
	accel     Accel
	qmp       *qmp.Client
	console   *Console
	stderr    *child.Tail

	evMu         sync.Mutex
	shutdownSeen string // reason of the last SHUTDOWN event
	shutdownOK   bool

	exited chan struct{}
	exit   Exit

	closeOnce sync.Once
	closeErr  error
}

// New checks m and opts and fills in their defaults; nothing starts yet.
func New(m Machine, opts Options) (*VM, error) {
	m, err := m.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, fmt.Errorf("machine %q: no directory given: %w", m.Name, ErrInvalid)
	}
	if opts.ConsoleLines == 0 {
		opts.ConsoleLines = 1000
	}
	if opts.ConsoleLines < 1 {
		return nil, fmt.Errorf("machine %q: console lines %d: want at least 1: %w", m.Name, opts.ConsoleLines, ErrInvalid)
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 10 * time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &VM{m: m, opts: opts, logger: logger.With("machine", m.Name), exited: make(chan struct{}), startDone: make(chan struct{})}, nil
}

// Start starts QEMU. ctx bounds the start-up only (finding files, exec, the
// QMP handshake, cont), not the life of the machine, which lasts until the
// guest ends it or Close. A second Start returns an error.
//
// QEMU runs in its own process group (a terminal's Ctrl-C does not reach it)
// and gets SIGKILL when the supervisor dies (internal/child explains how the
// death signal is kept tied to the process, not to one of its threads).
func (v *VM) Start(ctx context.Context) error {
	err := fmt.Errorf("start machine %s: already started", v.m.Name)
	v.stateMu.Lock()
	if v.state != vmNew {
		v.stateMu.Unlock()
		return err
	}
	v.state = vmStarting
	v.stateMu.Unlock()
	err = v.start(ctx)
	v.stateMu.Lock()
	v.state = vmStarted
	if err != nil {
		v.state = vmFailed
	}
	v.stateMu.Unlock()
	close(v.startDone)
	return err
}

type vmState int

const (
	vmNew vmState = iota
	vmStarting
	vmStarted
	vmFailed // Start failed; it cleaned up
	vmClosed // closed before Start
)

// settled waits for a Start in progress and reports whether QEMU was
// started; closing makes a VM that was never started unstartable.
func (v *VM) settled(closing bool) bool {
	v.stateMu.Lock()
	s := v.state
	if s == vmNew && closing {
		v.state = vmClosed
	}
	v.stateMu.Unlock()
	switch s {
	case vmNew, vmClosed:
		return false
	case vmStarting:
		<-v.startDone
		v.stateMu.Lock()
		defer v.stateMu.Unlock()
		return v.state == vmStarted
	}
	return s == vmStarted
}

func (v *VM) start(ctx context.Context) (err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	wrap := func(what string, err error) error { return fmt.Errorf("start machine %s: %s: %w", v.m.Name, what, err) }

	choice, err := DetectAccel(v.m.Accel)
	if err != nil {
		return wrap("accelerator", err)
	}
	if choice.Notice != "" {
		v.logger.Warn(choice.Notice)
	}
	v.accel = choice.Accel
	bin, err := resolve.Find(resolve.QEMU(v.opts.QEMU))
	if err != nil {
		return wrap("find qemu", err)
	}
	if err := os.MkdirAll(v.opts.Dir, 0o700); err != nil {
		return wrap("machine directory", err)
	}

	// The supervisor's channels: socketpairs whose far ends QEMU inherits.
	serialOurs, serialTheirs, err := socketpair("serial")
	if err != nil {
		return wrap("serial socket", err)
	}
	undo = append(undo, func() { serialOurs.Close(); serialTheirs.Close() })
	qmpOurs, qmpTheirs, err := socketpair("qmp")
	if err != nil {
		return wrap("qmp socket", err)
	}
	undo = append(undo, func() { qmpOurs.Close(); qmpTheirs.Close() })

	logPath := filepath.Join(v.opts.Dir, "console.log")
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return wrap("console log", err)
	}
	undo = append(undo, func() { log.Close() })
	var ln net.Listener
	if v.opts.ConsoleSocket != "" {
		// A socket left by a supervisor that died is in the way; anything else is an error below.
		if fi, err := os.Lstat(v.opts.ConsoleSocket); err == nil && fi.Mode().Type() == os.ModeSocket {
			os.Remove(v.opts.ConsoleSocket)
		}
		if ln, err = net.Listen("unix", v.opts.ConsoleSocket); err != nil {
			return wrap("console socket", err)
		}
		undo = append(undo, func() { ln.Close() })
	}
	// The readers start now and end when their sockets do: with QEMU, or
	// with the undo below if it never runs.
	c := newConsole(v.m.Name, serialOurs, log, ln, v.opts.ConsoleLines, v.exited, func() Exit { return v.exit }, v.logger)
	v.console, v.qmp = c, qmp.New(qmpOurs, v.onEvent)
	undo = append(undo, func() {
		serialOurs.Close()
		qmpOurs.Close()
		c.wg.Wait()
		<-v.qmp.Done()
	})

	args, nicFiles, _ := v.m.argv(v.accel, wiring{})
	v.argv = append([]string{bin}, args...)
	human, _, notes := v.m.argv(v.accel, wiring{human: true})
	if err := v.writeScript(append([]string{bin}, human...), notes); err != nil {
		return wrap("command line file", err)
	}
	v.logger.Info("qemu: starting", "argv", shellquote.Join(v.argv...))

	v.stderr = &child.Tail{Max: 16 << 10}
	out := io.MultiWriter(v.stderr, &stderrLog{logger: v.logger})
	cmd := exec.Command(bin, args...)
	cmd.Dir = v.opts.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = append([]*os.File{serialTheirs, qmpTheirs}, nicFiles...)
	// QEMU's stderr copier may be held open by a stray child; do not wait for it forever.
	cmd.WaitDelay = 5 * time.Second
	v.cmd = cmd

	v.execAt = time.Now()
	// Own process group, Pdeathsig: see Start's comment. Close asks with
	// QMP quit: QEMU stops at once without asking the guest.
	v.proc, err = child.Start(cmd, child.Options{Ask: v.qmp.Quit, Grace: v.opts.StopTimeout})
	if err != nil {
		return wrap("exec "+bin, err)
	}
	go func() { v.finish(v.proc.Wait()) }()
	// From here on the process exists: it is always waited for. Failures
	// below kill it and wait, so that nothing outlives a failed Start.
	serialTheirs.Close()
	qmpTheirs.Close()
	undo = append(undo, func() {
		v.proc.Kill()
		<-v.exited
	})
	if err := v.qmp.Handshake(ctx); err != nil {
		return v.startupError(err)
	}
	if !v.m.Paused {
		if err := v.qmp.Cont(ctx); err != nil {
			return v.startupError(err)
		}
	}
	v.logger.Info("qemu: started", "pid", cmd.Process.Pid, "accel", string(v.accel))
	return nil
}

// startupError describes a failure after exec: if QEMU exited, its exit
// status and stderr say why (a bad argument, a missing socket).
func (v *VM) startupError(err error) error {
	if errors.Is(err, qmp.ErrClosed) {
		// QEMU closed its end: it is exiting. Let its stderr arrive.
		t := time.NewTimer(v.opts.StopTimeout)
		defer t.Stop()
		select {
		case <-v.exited:
		case <-t.C:
		}
	}
	select {
	case <-v.exited:
		return fmt.Errorf("start machine %s: qemu exited during start-up: %s%s: argv: %s",
			v.m.Name, v.exit, stderrSuffix(v.exit.Stderr), shellquote.Join(v.argv...))
	default:
		return fmt.Errorf("start machine %s: %w: argv: %s", v.m.Name, err, shellquote.Join(v.argv...))
	}
}

// script is the copy-pasteable shell script of a machine's command line.
func (v *VM) script(argv []string, notes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n# Machine %s as qcluster started it (accelerator %s), to run by hand once it is stopped.\n", v.m.Name, v.accel)
	b.WriteString("# The serial console and a monitor are on the terminal: Ctrl-a c switches, Ctrl-a x quits.\n")
	for _, n := range notes {
		b.WriteString("# " + n + "\n")
	}
	b.WriteString(shellquote.Join(argv...) + "\n")
	return b.String()
}

// writeScript writes the script beside the console log, as qemu.sh.
func (v *VM) writeScript(argv []string, notes []string) error {
	return atomicfile.Write(filepath.Join(v.opts.Dir, "qemu.sh"), []byte(v.script(argv, notes)), 0o700)
}

// onEvent runs in the QMP reader for every event.
func (v *VM) onEvent(ev qmp.Event) {
	v.logger.Info("qemu: event", "event", ev.Name, "data", string(ev.Data))
	if ev.Name != "SHUTDOWN" {
		return
	}
	var d struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(ev.Data, &d)
	v.evMu.Lock()
	v.shutdownSeen, v.shutdownOK = d.Reason, true
	v.evMu.Unlock()
}

// finish runs once QEMU has been waited for: it lets the readers drain
// (the sockets end with the process), classifies the exit and publishes it.
func (v *VM) finish(waitErr error) {
	<-v.qmp.Done()
	<-v.console.ended
	v.evMu.Lock()
	reason, seen := v.shutdownSeen, v.shutdownOK
	v.evMu.Unlock()
	e := Exit{Reason: reason, Status: v.cmd.ProcessState.ExitCode(), Stderr: v.stderrLines()}
	if ws, ok := v.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal()
	}
	switch {
	case e.Signal != 0:
		e.Kind = ExitKilled
	case e.Status != 0 || !seen:
		e.Kind = ExitCrashed
	default:
		switch reason {
		case "guest-shutdown":
			e.Kind = ExitPoweredOff
		case "guest-reset", "host-qmp-system-reset", "subsystem-reset", "snapshot-load":
			e.Kind = ExitReset
		case "host-qmp-quit", "host-ui":
			e.Kind = ExitQuit
		case "host-signal":
			e.Kind = ExitKilled
		default: // host-error, guest-panic
			e.Kind = ExitCrashed
		}
	}
	if waitErr != nil && e.Signal == 0 && e.Status == 0 {
		v.logger.Warn("qemu: wait", "err", waitErr)
	}
	v.exit = e
	v.logger.Info("qemu: exited", "exit", e.String(), "pid", v.cmd.Process.Pid)
	close(v.exited)
}

// Wait waits for QEMU to exit and returns how. The error is an *ExitError
// for ExitCrashed and ExitKilled, nil otherwise. Every caller, concurrent or
// later, gets the same answer. Without a successful Start it returns at
// once with an error (it waits for a Start in progress).
func (v *VM) Wait() (Exit, error) {
	if !v.settled(false) {
		return Exit{}, fmt.Errorf("wait for machine %s: not started", v.m.Name)
	}
	<-v.exited
	if v.exit.Kind == ExitCrashed || v.exit.Kind == ExitKilled {
		return v.exit, &ExitError{Machine: v.m.Name, Exit: v.exit, Argv: v.argv}
	}
	return v.exit, nil
}

// Exited is closed once QEMU has exited and its output has been read.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Console is the machine's serial console; nil before Start.
func (v *VM) Console() *Console { return v.console }

// QMP is the supervisor's QMP client; nil before Start. SystemPowerdown asks
// the guest to power off, SystemReset resets it (see Machine.Reboot), Quit
// ends QEMU, Subscribe shows events such as RESET.
func (v *VM) QMP() *qmp.Client { return v.qmp }

// Accel is the accelerator Start decided on ("" before Start).
func (v *VM) Accel() Accel { return v.accel }

// PID is QEMU's process ID (0 before Start).
func (v *VM) PID() int {
	if v.cmd == nil || v.cmd.Process == nil {
		return 0
	}
	return v.cmd.Process.Pid
}

// StartedAt is when QEMU was executed.
func (v *VM) StartedAt() time.Time { return v.execAt }

// Argv is QEMU's command line, the binary first.
func (v *VM) Argv() []string { return append([]string(nil), v.argv...) }

// Close stops QEMU if it still runs, as every helper's Close does
// (internal/child): QMP quit, then SIGTERM, then SIGKILL to its process
// group, each after Options.StopTimeout; then it waits for QEMU and every
// goroutine of the VM. It does not ask the guest (see QMP.SystemPowerdown
// for that). It returns nil if QEMU had exited or quit, else an error saying
// it had to be signalled; Wait tells how it ended. Repeated and concurrent
// calls return the same result.
func (v *VM) Close() error {
	v.closeOnce.Do(func() { v.closeErr = v.close() })
	return v.closeErr
}

func (v *VM) close() error {
	if !v.settled(true) {
		return nil
	}
	err := v.proc.Stop()
	<-v.exited
	v.console.wg.Wait()
	if err != nil {
		return fmt.Errorf("close machine %s: %w", v.m.Name, err)
	}
	return nil
}

// socketpair returns a connected pair of stream sockets: ours as a net.Conn,
// theirs as a file for a child to inherit.
func socketpair(name string) (net.Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), name)
	theirs := os.NewFile(uintptr(fds[1]), name)
	conn, err := net.FileConn(ours) // dups the fd
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return conn, theirs, nil
}

// stderrLog logs every line QEMU writes to stderr.
type stderrLog struct {
	mu     sync.Mutex
	split  lineSplitter
	logger *slog.Logger
}

func (w *stderrLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.split.write(p, func(raw []byte) { w.logger.Warn("qemu: stderr", "line", sanitize(raw)) })
	return len(p), nil
}

// stderrLines returns the last lines QEMU wrote to stderr, an unfinished
// last line included.
func (v *VM) stderrLines() []string {
	lines := v.stderr.Lines(100)
	for i, l := range lines {
		lines[i] = sanitize([]byte(l))
	}
	return lines
}
