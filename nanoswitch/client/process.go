package client

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/qcluster/qcluster/internal/child"
)

// Options describe a switch process for Start.
type Options struct {
	// Command is the argv prefix that runs the nanoswitch command (its
	// flags follow): the nanoswitch program, or a program that re-executes
	// itself as the switch (nanoswitch/switchmain). Required.
	Command []string
	// Dir is the switch's directory: port sockets, control socket, ready
	// file. Keep it short: UNIX socket paths are limited to 107 bytes.
	// Required.
	Dir string
	// Cluster name, Domain and Subnet of the network. Default: the
	// command's.
	Cluster, Domain string
	Subnet          netip.Prefix
	// Nodes get a port each and their static lease, as given.
	Nodes []Lease
	// LogFile receives the switch's stdout and stderr, appended (created
	// 0600). Default: none (only the last lines are kept, for errors).
	LogFile string
}

// Switch is a running nanoswitch process and its control client.
type Switch struct {
	*Client
	proc   *child.Process
	stdin  *os.File // the write end of its stdin: closing it stops the switch
	stderr *child.Tail
}

// Start runs the switch and returns once its ready file appears, racing
// against the process exiting and ctx, which bounds the start-up only. The
// switch runs until Close, or until the calling process dies.
func Start(ctx context.Context, o Options) (*Switch, error) {
	if len(o.Command) == 0 || o.Dir == "" {
		return nil, fmt.Errorf("nanoswitch: start: no command or directory given")
	}
	readyFile := filepath.Join(o.Dir, "ready.json")
	args := append(append([]string(nil), o.Command[1:]...), "--dir", o.Dir, "--ready-file", readyFile, "--log-level", "info")
	if o.Cluster != "" {
		args = append(args, "--cluster", o.Cluster)
	}
	if o.Domain != "" {
		args = append(args, "--domain", o.Domain)
	}
	if o.Subnet.IsValid() {
		args = append(args, "--subnet", o.Subnet.String())
	}
	for _, n := range o.Nodes {
		args = append(args, "--node", n.Hostname+"="+n.MAC.String()+"="+n.Addr.String())
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("nanoswitch stdin: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(o.Command[0], args...)
	// The switch stops when its stdin reaches EOF: the launcher holds the
	// write end, so even a launcher killed with SIGKILL takes it along.
	cmd.Stdin = r
	s := &Switch{stdin: w, stderr: &child.Tail{Max: 2000}}
	var out io.Writer = s.stderr
	var logFile *os.File
	if o.LogFile != "" {
		if logFile, err = os.OpenFile(o.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			w.Close()
			return nil, fmt.Errorf("nanoswitch log: %w", err)
		}
		cmd.Stdout = logFile
		out = io.MultiWriter(s.stderr, logFile)
	}
	cmd.Stderr = out
	s.proc, err = child.Start(cmd, child.Options{Ask: s.ask})
	if err != nil {
		if logFile != nil {
			logFile.Close()
		}
		w.Close()
		return nil, fmt.Errorf("exec %s: %w", o.Command[0], err)
	}
	if logFile != nil {
		go func() {
			<-s.proc.Done()
			logFile.Close()
		}()
	}

	// Options, not fields: a field set after NewExponentialBackOff leaves
	// the first interval at the default 500 ms.
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(5*time.Millisecond),
		backoff.WithMaxInterval(100*time.Millisecond),
		backoff.WithMaxElapsedTime(0))
	for {
		if _, err := os.Stat(readyFile); err == nil {
			break
		}
		select {
		case <-s.proc.Done():
			s.stdin.Close()
			return nil, fmt.Errorf("nanoswitch exited before it was ready: %v: %s", s.proc.Wait(), s.Stderr())
		case <-ctx.Done():
			s.Close()
			return nil, fmt.Errorf("nanoswitch not ready: %w", ctx.Err())
		case <-time.After(b.NextBackOff()):
		}
	}
	if s.Client, err = Open(readyFile); err != nil {
		s.Close()
		return nil, fmt.Errorf("nanoswitch control: %w", err)
	}
	return s, nil
}

// ask asks the switch to stop: EOF on its stdin.
func (s *Switch) ask(context.Context) error { return s.stdin.Close() }

// Socket returns the port socket of the named node.
func (s *Switch) Socket(name string) (string, error) {
	for _, p := range s.Ready().Ports {
		if p.Name == name {
			return p.Socket, nil
		}
	}
	return "", fmt.Errorf("nanoswitch has no port for %s", name)
}

// Stderr returns the last lines the switch wrote to stderr, on one line.
func (s *Switch) Stderr() string { return strings.Join(s.stderr.Lines(0), " | ") }

// Done is closed once the switch process has exited.
func (s *Switch) Done() <-chan struct{} { return s.proc.Done() }

// Wait waits for the switch to exit and returns how (exec's error).
func (s *Switch) Wait() error { return s.proc.Wait() }

// Close stops the switch as every helper's Close does (internal/child):
// EOF on its stdin, then SIGTERM, then SIGKILL to its process group, 5 s
// apart, and waits for it. It returns nil if the switch had exited or
// stopped at EOF, else an error saying it had to be signalled. Repeated and
// concurrent calls return the same result.
func (s *Switch) Close() error {
	if s.Client != nil {
		s.Client.Close()
	}
	if err := s.proc.Stop(); err != nil {
		return fmt.Errorf("nanoswitch: %w", err)
	}
	return nil
}
