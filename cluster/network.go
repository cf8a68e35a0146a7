package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/internal/child"
	"github.com/qcluster/qcluster/nanoswitch"
)

// network is the cluster's nanoswitch helper process and its control client.
type network struct {
	cmd    *exec.Cmd
	stdin  *os.File // the write end of its stdin: closing it stops the switch
	waited <-chan error
	exited chan struct{}
	err    error
	stderr *bytes.Buffer
	client *nanoswitch.Client
	ready  nanoswitch.Ready
	mu     sync.Mutex
}

// startSwitch runs the nanoswitch command for the plan and waits until its
// ready file appears, racing against the process exiting.
func startSwitch(ctx context.Context, bin, dir string, plan *Plan, logDir string) (*network, error) {
	readyFile := filepath.Join(dir, "ready.json")
	args := []string{"--dir", dir, "--cluster", plan.Name, "--domain", plan.Domain,
		"--subnet", plan.Subnet.String(), "--ready-file", readyFile, "--log-level", "info"}
	for _, n := range plan.Nodes {
		args = append(args, "--node", n.Name+"="+n.MAC.String())
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("nanoswitch stdin: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(bin, args...)
	// The switch stops when its stdin reaches EOF: the launcher holds the
	// write end, so even a launcher killed with SIGKILL takes it along.
	cmd.Stdin = r
	nw := &network{cmd: cmd, stdin: w, exited: make(chan struct{}), stderr: &bytes.Buffer{}}
	logFile, err := os.OpenFile(filepath.Join(logDir, "nanoswitch.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("nanoswitch log: %w", err)
	}
	cmd.Stdout = logFile
	cmd.Stderr = &syncWriter{w: nw.stderr, also: logFile, mu: &nw.mu}
	waited, err := child.Start(cmd)
	if err != nil {
		logFile.Close()
		w.Close()
		return nil, fmt.Errorf("exec %s: %w", bin, err)
	}
	nw.waited = waited
	go func() {
		nw.err = <-waited
		logFile.Close()
		close(nw.exited)
	}()

	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 5*time.Millisecond, 100*time.Millisecond, 0
	for {
		if _, err := os.Stat(readyFile); err == nil {
			break
		}
		select {
		case <-nw.exited:
			return nil, fmt.Errorf("nanoswitch exited before it was ready: %v: %s", nw.err, nw.stderrTail())
		case <-ctx.Done():
			nw.close()
			return nil, fmt.Errorf("nanoswitch not ready: %w", ctx.Err())
		case <-time.After(b.NextBackOff()):
		}
	}
	client, err := nanoswitch.Open(readyFile)
	if err != nil {
		nw.close()
		return nil, fmt.Errorf("nanoswitch control: %w", err)
	}
	nw.client, nw.ready = client, client.Ready()
	return nw, nil
}

func (nw *network) stderrTail() string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	s := strings.TrimSpace(nw.stderr.String())
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return strings.ReplaceAll(s, "\n", " | ")
}

// socket returns the port socket of the named node.
func (nw *network) socket(name string) (string, error) {
	for _, p := range nw.ready.Ports {
		if p.Name == name {
			return p.Socket, nil
		}
	}
	return "", fmt.Errorf("nanoswitch has no port for %s", name)
}

// DialContext reaches a cluster address through the switch's SOCKS5 server.
func (nw *network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nw.client.DialContext(ctx, network, addr)
}

// close stops the switch: EOF on its stdin, then SIGTERM, then SIGKILL.
func (nw *network) close() error {
	if nw.client != nil {
		nw.client.Close()
	}
	nw.stdin.Close()
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{0, time.Second}, {syscall.SIGTERM, time.Second}, {syscall.SIGKILL, 5 * time.Second}} {
		if step.sig != 0 {
			_ = syscall.Kill(-nw.cmd.Process.Pid, step.sig)
		}
		select {
		case <-nw.exited:
			if step.sig == syscall.SIGKILL {
				return errors.New("nanoswitch had to be killed")
			}
			return nil
		case <-time.After(step.wait):
		}
	}
	return errors.New("nanoswitch did not exit after SIGKILL")
}

// syncWriter copies a child's stderr to a buffer (for errors) and a file.
type syncWriter struct {
	w    *bytes.Buffer
	also *os.File
	mu   *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.w.Write(p)
	if s.w.Len() > 64<<10 {
		s.w.Next(s.w.Len() - 32<<10)
	}
	s.mu.Unlock()
	s.also.Write(p)
	return len(p), nil
}

// startNetwork starts the nanoswitch helper and writes the env file.
func (c *Cluster) startNetwork(ctx context.Context) error {
	nw, err := startSwitch(ctx, c.host.nanoswitch, filepath.Join(c.sockDir, "net"), c.Plan, c.LogDir)
	if err != nil {
		return err
	}
	c.net = nw
	c.onUndo("stop nanoswitch", nw.close)
	for _, n := range c.Nodes {
		if n.netSock, err = nw.socket(n.Name); err != nil {
			return err
		}
	}
	c.SOCKS5 = SOCKS5{Address: nw.ready.SOCKSAddress, CredentialsFile: nw.ready.CredentialsFile}
	return c.writeEnv()
}

// writeEnv writes a shell file that points tools at the cluster.
func (c *Cluster) writeEnv() error {
	user, pass := "", ""
	if c.SOCKS5.CredentialsFile != "" {
		var err error
		if user, pass, err = nanoswitch.ReadCredentials(c.SOCKS5.CredentialsFile); err != nil {
			return err
		}
	}
	c.SOCKS5.Username, c.SOCKS5.Password = user, pass
	var b strings.Builder
	fmt.Fprintf(&b, "# qcluster %s: source this file to reach the nodes.\n", c.Name)
	fmt.Fprintf(&b, "export QCLUSTER_NAME=%s\n", c.Name)
	fmt.Fprintf(&b, "export QCLUSTER_CA=%s\nexport QCLUSTER_CERT=%s\nexport QCLUSTER_KEY=%s\n", c.Files.CA, c.Files.ClientCert, c.Files.ClientKey)
	fmt.Fprintf(&b, "export QCLUSTER_SOCKS5=%s\n", c.SOCKS5.Address)
	// socks5h: names are resolved by the switch (node0, node0.<domain>).
	fmt.Fprintf(&b, "export ALL_PROXY=socks5h://%s:%s@%s\n", user, pass, c.SOCKS5.Address)
	// grpc-go (so grpcurl) speaks HTTP CONNECT to whatever HTTPS_PROXY
	// names; the same port answers it.
	fmt.Fprintf(&b, "export HTTPS_PROXY=http://%s:%s@%s\n", user, pass, c.SOCKS5.Address)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "export QCLUSTER_%s=%s\n", strings.ToUpper(n.Name), n.Address)
	}
	return atomicfile.Write(c.Files.Env, []byte(b.String()), 0o600)
}
