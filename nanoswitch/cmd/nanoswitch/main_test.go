package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qcluster/qcluster/nanoswitch/client"
	"github.com/qcluster/qcluster/nanoswitch/switchmain"
)

// TestMain lets the test binary run as the command (switchmain.Arg): the
// tests run it as a child, as a launcher does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == switchmain.Arg {
		os.Exit(switchmain.Main(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// build returns the command: this test binary, as the switch.
func build(t *testing.T) []string {
	t.Helper()
	argv, err := switchmain.Command()
	if err != nil {
		t.Fatal(err)
	}
	return argv
}

// start runs the command with a pipe on stdin and waits for its ready line
// on stderr.
func start(t *testing.T, bin []string, args ...string) (*exec.Cmd, io.WriteCloser, *strings.Builder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin[0], append(bin[1:], args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	log := &strings.Builder{}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "msg=ready") {
			go io.Copy(io.Discard, stderr)
			return cmd, stdin, log
		}
	}
	_ = cmd.Wait()
	t.Fatalf("nanoswitch exited before it was ready: %v\n%s", cmd.ProcessState, log)
	return nil, nil, nil
}

func TestCommand(t *testing.T) {
	bin := build(t)
	dir := filepath.Join(t.TempDir(), "ns")
	cmd, stdin, log := start(t, bin, "--dir", dir, "--cluster", "cmdtest", "--node", "node0",
		"--node", "node1=52:54:00:aa:bb:cc")
	r, err := client.ReadReady(filepath.Join(dir, "ready.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.PID != cmd.Process.Pid || r.Domain != "cmdtest.qcluster.test" || len(r.Ports) != 2 ||
		r.Ports[0].Address != "10.42.0.10" || r.Ports[0].MAC != switchmain.NodeMAC("cmdtest", 0).String() ||
		r.Ports[1].MAC != "52:54:00:aa:bb:cc" || r.Ports[1].Socket != filepath.Join(dir, "node1.sock") {
		b, _ := json.Marshal(r)
		t.Errorf("ready file: %s", b)
	}
	fi, err := os.Stat(r.CredentialsFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file: %v %v", fi, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v %v", fi, err)
	}
	c, err := client.Open(filepath.Join(dir, "ready.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ports, err := c.Ports(t.Context())
	if err != nil || len(ports) != 3 {
		t.Fatalf("ports %+v %v", ports, err)
	}

	// The launcher goes away: its end of the stdin pipe closes.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after stdin closed: %v\n%s", err, log)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		t.Errorf("state dir left behind with %v", entries)
	}
}

func TestCommandSIGTERM(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	cmd, _, log := start(t, bin, "--dir", dir, "--socks=false", "--pcap", "--node", "a")
	if r, err := client.ReadReady(filepath.Join(dir, "ready.json")); err != nil || r.SOCKSAddress != "" || r.CredentialsFile != "" {
		t.Errorf("ready without socks: %+v %v", r, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, log)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "pcap" {
		t.Errorf("left in the state dir: %v, want only pcap/", entries)
	}
}

func TestCommandBadInput(t *testing.T) {
	bin := build(t)
	for _, args := range [][]string{
		{},
		{"--dir", t.TempDir(), "--subnet", "10.42.0.0"},
		{"--dir", t.TempDir(), "--node", "Bad_Name"},
		{"--dir", t.TempDir(), "--node", "a=zz"},
		{"--dir", t.TempDir(), "extra"},
		{"--dir", strings.Repeat("d", 120), "--node", "a"},
	} {
		out, err := exec.Command(bin[0], append(bin[1:], args...)...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Errorf("%q: %v, want a non-zero exit", args, err)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "nanoswitch: ") && !strings.Contains(last, "Usage") &&
			!strings.HasPrefix(last, "  -") {
			t.Errorf("%q: last line %q", args, last)
		}
	}
	if _, err := os.Stat(strings.Repeat("d", 120)); err == nil {
		os.RemoveAll(strings.Repeat("d", 120))
		t.Error("a failed start left its state dir behind")
	}
}
