package swtpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/kballard/go-shellquote"
	"github.com/qcluster/qcluster/internal/child"
)

// maxSocketPath is the longest UNIX socket path: sun_path holds 108 bytes
// including the terminating NUL.
const maxSocketPath = 107

// Options configures Start. StateDir and CtrlSocket are required.
type Options struct {
	// Binary is the swtpm executable. Default: "swtpm" in PATH.
	Binary string
	// StateDir is the node's state directory, made by CA.Manufacture. swtpm
	// writes it (mode 0600 files) as the guest uses the TPM. Required.
	StateDir string
	// CtrlSocket is the path of the control channel's UNIX socket, the one
	// QEMU's -chardev socket connects to (at most 107 bytes, no ','; created
	// 0600). A stale socket file there is replaced; a socket some process
	// still serves is an error. Required.
	CtrlSocket string
	// DataSocket, if set, also serves TPM commands on this UNIX socket
	// (--server type=unixio), for host-side clients such as tests. QEMU does
	// not use it: it passes its own data channel over the control channel.
	// Closing a connection to it ends swtpm (--terminate). Default: none.
	DataSocket string
	// LogFile, if set, receives swtpm's stdout and stderr, appended; created
	// 0600. Default: none (only the last 8 KiB are kept, for errors and Stderr).
	LogFile string
	// LogLevel is swtpm's --log level: 0 logs errors only, 1–4 add swtpm's
	// own tracing (2 and up dump every command), 5 and up add libtpms' log.
	// Default: 0.
	LogLevel int
	// StartTimeout bounds Start's wait for the control channel when ctx has
	// no earlier deadline. Default: 10 s.
	StartTimeout time.Duration
	// StopTimeout is how long Close waits after SIGTERM before SIGKILL.
	// Default: 5 s.
	StopTimeout time.Duration
	// Logger receives the argv and readiness records (debug level). Default: discard.
	Logger *slog.Logger
	// Incoming starts a TPM with an empty StateDir (created 0700 if
	// missing) for a state that arrives through the control channel: QEMU
	// loading a snapshot sends it, and swtpm then writes its own state
	// files. Start checks only that the control channel answers; it does
	// not initialise the TPM. Default false: the state dir must hold a
	// manufactured TPM.
	Incoming bool
}

// TPM is a running `swtpm socket` process serving one node's TPM.
type TPM struct {
	argv []string
	proc *child.Process
	out  *child.Tail
	log  *slog.Logger
	// wait is the process's result as a *ProcessError, made once.
	wait func() error
}

// Start starts swtpm for opts.StateDir and returns once its control channel
// has answered (see the package documentation). ctx bounds only the start-up;
// the process runs until Close, until its data connection closes, or until
// the calling process dies. If swtpm exits or fails during start-up, the error
// carries its argv and output.
func Start(ctx context.Context, opts Options) (*TPM, error) {
	t, err := start(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("swtpm: start TPM of %s: %w", opts.StateDir, err)
	}
	return t, nil
}

func start(ctx context.Context, opts Options) (*TPM, error) {
	if opts.StateDir == "" {
		return nil, errors.New("no state directory given")
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	if err := swtpmArgSafe("state directory", stateDir); err != nil {
		return nil, err
	}
	if opts.Incoming {
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return nil, err
		}
		// swtpm creates its lock file group-readable; made first, it
		// stays private like the state files (--tpmstate mode=0600).
		if f, err := os.OpenFile(filepath.Join(stateDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600); err != nil {
			return nil, err
		} else {
			f.Close()
		}
	} else {
		done, err := isManufactured(stateDir)
		if err != nil {
			return nil, err
		}
		if !done {
			return nil, fmt.Errorf("%s: %w (no %s; run CA.Manufacture first)", stateDir, ErrNotManufactured, permallFile)
		}
	}
	bin, err := lookBinary(opts.Binary, "swtpm")
	if err != nil {
		return nil, err
	}
	if opts.CtrlSocket == "" {
		return nil, errors.New("no control socket path given")
	}
	if err := prepareSocket("control socket", opts.CtrlSocket); err != nil {
		return nil, err
	}
	if opts.DataSocket != "" {
		if err := prepareSocket("data socket", opts.DataSocket); err != nil {
			return nil, err
		}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 5 * time.Second
	}
	t := &TPM{
		out: &child.Tail{},
		log: opts.Logger,
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}

	t.argv = []string{bin, "socket", "--tpm2",
		// mode: swtpm rewrites its state files with this mode (default 0640).
		"--tpmstate", "dir=" + stateDir + ",mode=0600",
		"--ctrl", "type=unixio,path=" + opts.CtrlSocket + ",mode=0600",
	}
	if opts.DataSocket != "" {
		t.argv = append(t.argv, "--server", "type=unixio,path="+opts.DataSocket+",mode=0600")
	}
	// End when the data channel (QEMU's) closes, so a dead VM leaves no swtpm.
	t.argv = append(t.argv, "--terminate")
	if opts.LogLevel > 0 {
		t.argv = append(t.argv, "--log", "fd=3,level="+strconv.Itoa(opts.LogLevel))
	}

	if err := t.spawn(opts); err != nil {
		return nil, err
	}
	t.log.Debug("swtpm: started", "pid", t.Pid(), "argv", shellquote.Join(t.argv...))

	startedAt := time.Now()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := t.awaitReady(ctx, opts.CtrlSocket, !opts.Incoming); err != nil {
		// Kill and drain, so the error holds everything swtpm said.
		t.proc.Kill()
		<-t.proc.Done()
		return nil, &ProcessError{Argv: t.argv, Output: t.out.String(), Err: err}
	}
	t.log.Debug("swtpm: control channel ready", "pid", t.Pid(), "after", time.Since(startedAt))
	return t, nil
}

// spawn starts the process with stdout and stderr (and fd 3 for --log) on
// one pipe, drained into the tail and the log file.
func (t *TPM) spawn(opts Options) error {
	var sink io.Writer = t.out
	var logFile *os.File
	if opts.LogFile != "" {
		f, err := openLog(opts.LogFile)
		if err != nil {
			return err
		}
		logFile = f
		sink = io.MultiWriter(t.out, f)
	}
	r, w, err := os.Pipe()
	if err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return err
	}
	cmd := exec.Command(t.argv[0], t.argv[1:]...)
	cmd.Stdout = w
	cmd.Stderr = w
	if opts.LogLevel > 0 {
		cmd.ExtraFiles = []*os.File{w} // fd 3
	}
	drained := make(chan struct{})
	// SIGTERM is how swtpm is asked to stop (Close).
	t.proc, err = child.Start(cmd, child.Options{Grace: opts.StopTimeout, Drained: drained})
	w.Close() // the child holds its own copies
	if err != nil {
		r.Close()
		if logFile != nil {
			logFile.Close()
		}
		return &ProcessError{Argv: t.argv, Err: err}
	}
	go func() {
		defer close(drained)
		_, _ = io.Copy(sink, r)
		r.Close()
		if logFile != nil {
			logFile.Close()
		}
	}()
	t.wait = sync.OnceValue(func() error {
		if err := t.proc.Wait(); err != nil {
			return &ProcessError{Argv: t.argv, Output: t.out.String(), Err: err}
		}
		return nil
	})
	return nil
}

// awaitReady dials the control socket with backoff until it answers, racing
// against the process exiting and ctx.
func (t *TPM) awaitReady(ctx context.Context, path string, initialise bool) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(2*time.Millisecond),
		backoff.WithMaxInterval(50*time.Millisecond),
		backoff.WithMaxElapsedTime(0))
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			if initialise {
				err = checkInit(ctx, conn)
			}
			conn.Close()
			if err != nil {
				return err
			}
			return nil
		}
		timer := time.NewTimer(b.NextBackOff())
		select {
		case <-t.proc.Done():
			timer.Stop()
			if err := t.proc.Wait(); err != nil {
				return err // the exit status; the caller adds argv and output
			}
			return errors.New("exited before its control socket was ready")
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("waiting for control socket %s: %w (last: %v)", path, context.Cause(ctx), err)
		case <-timer.C:
		}
	}
}

// Control channel commands (swtpm's tpm_ioctl.h; big-endian on the wire,
// each response starts with a 4-byte TPM result).
const (
	ctrlInit = 0x02 // CMD_INIT, followed by 4 bytes of init flags
	ctrlStop = 0x0e // CMD_STOP
)

// checkInit sends CMD_INIT, which makes swtpm load the state (the step that
// fails for a corrupt or foreign state), then CMD_STOP, which returns the
// TPM to the uninitialised state QEMU expects. QEMU sends its own CMD_INIT.
func checkInit(ctx context.Context, conn net.Conn) error {
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	call := func(name string, req []byte) error {
		if _, err := conn.Write(req); err != nil {
			return fmt.Errorf("control channel %s: %w", name, err)
		}
		var res [4]byte
		if _, err := io.ReadFull(conn, res[:]); err != nil {
			return fmt.Errorf("control channel %s: %w", name, err)
		}
		if r := binary.BigEndian.Uint32(res[:]); r != 0 {
			return fmt.Errorf("control channel %s: TPM result %#x", name, r)
		}
		return nil
	}
	if err := call("CMD_INIT", binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, ctrlInit), 0)); err != nil {
		return fmt.Errorf("%w (the TPM state could not be loaded)", err)
	}
	return call("CMD_STOP", binary.BigEndian.AppendUint32(nil, ctrlStop))
}

// prepareSocket checks a socket path and removes a stale socket file there.
// swtpm itself would unlink whatever is at the path, even a regular file or a
// socket another swtpm serves.
func prepareSocket(what, path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("%s path %s is %d bytes, UNIX sockets allow %d: use a shorter directory", what, path, len(path), maxSocketPath)
	}
	if err := swtpmArgSafe(what, path); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s path %s exists and is not a socket", what, path)
	}
	conn, err := net.Dial("unix", path)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%s %s is in use by another process", what, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	return os.Remove(path)
}

// Pid returns swtpm's process id.
func (t *TPM) Pid() int { return t.proc.Pid() }

// Argv returns swtpm's command line.
func (t *TPM) Argv() []string { return append([]string(nil), t.argv...) }

// Stderr returns the last 8 KiB that swtpm wrote to stderr and stdout (and
// its --log when LogLevel is set).
func (t *TPM) Stderr() string { return t.out.String() }

// Exited returns a channel that is closed when swtpm has exited and its
// output has been read, for a supervisor to select on.
func (t *TPM) Exited() <-chan struct{} { return t.proc.Done() }

// Wait waits for swtpm to exit and returns nil for exit status 0, else a
// *ProcessError. It may be called any number of times, concurrently; every
// caller gets the same result.
func (t *TPM) Wait() error { return t.wait() }

// Close stops swtpm if it still runs, as every helper's Close does
// (internal/child): SIGTERM, which is how swtpm is asked, then SIGKILL after
// Options.StopTimeout, and waits for it and its output. It returns nil if
// swtpm had exited or ended on SIGTERM, else an error saying it had to be
// killed; Wait tells how it ended. Safe to call more than once and
// concurrently; every call returns the same result.
func (t *TPM) Close() error {
	if err := t.proc.Stop(); err != nil {
		return fmt.Errorf("swtpm: %w", err)
	}
	return nil
}
