package swtpm_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/swtpm"
)

// helperEnv makes the test binary act as a parent process that runs swtpm
// and is then killed. Its value is "start STATEDIR CTRLSOCKET" (start swtpm,
// print its pid, wait for stdin to close) or "manufacture CADIR STATEDIR".
const helperEnv = "QCLUSTER_SWTPM_TEST_HELPER"

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		helper(strings.Fields(v))
		return
	}
	m.Run()
}

func helper(args []string) {
	ctx := context.Background()
	switch args[0] {
	case "start":
		tpm, err := swtpm.Start(ctx, swtpm.Options{StateDir: args[1], CtrlSocket: args[2]})
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Println(tpm.Pid())
		_, _ = io.Copy(io.Discard, os.Stdin)
		tpm.Close()
	case "manufacture":
		ca, err := swtpm.NewCA(ctx, args[1], swtpm.CAOptions{})
		if err == nil {
			_, err = ca.Manufacture(ctx, args[2], swtpm.ManufactureOptions{})
		}
		fmt.Println("done:", err)
	}
}

// TestPdeathsig: swtpm dies with the process that started it, even when that
// process is SIGKILLed and cannot clean up.
func TestPdeathsig(t *testing.T) {
	needSwtpm(t)
	m := manufacture(t, newCA(t), "node")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=start "+m.StateDir+" "+filepath.Join(t.TempDir(), "ctrl"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q", line)
	}
	// Hold the swtpm process by pidfd before killing its parent, so a reused
	// pid cannot fool the check; the pidfd turns readable when swtpm exits.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer killAndClose(pidfd)

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	awaitExit(t, pidfd, pid)
}

// killAndClose kills the process behind pidfd, in case a failed test left it
// running, and closes the pidfd.
func killAndClose(pidfd int) {
	_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
	unix.Close(pidfd)
}

// awaitExit waits (event-driven, through the pidfd) for the process to exit.
func awaitExit(t *testing.T, pidfd, pid int) {
	t.Helper()
	const deadlineMs = 30_000 // a bound for a hung test, not a timing assertion
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, deadlineMs)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("pid %d still alive 30 s after its parent was killed", pid)
		}
		return
	}
}

// TestManufactureKilledParent: a launcher SIGKILLed while swtpm_setup runs
// leaves no swtpm behind, though swtpm_setup's own swtpm is out of reach of
// Pdeathsig (see pidNamespaceAttr).
func TestManufactureKilledParent(t *testing.T) {
	needSwtpm(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=manufacture "+filepath.Join(dir, "ca")+" "+filepath.Join(dir, "node"))
	out := &strings.Builder{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	// Find the long-lived swtpm that swtpm_setup starts (it alone gets
	// --flags not-need-init) by scanning /proc until it appears.
	marker := "backend-uri=dir://" + filepath.Join(dir, ".node.manufacture-")
	var pid, pidfd int
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for pid == 0 {
		select {
		case <-exited:
			t.Fatalf("helper finished before its swtpm was seen: %s", out)
		case <-tick.C:
		}
		for _, p := range swtpmProcesses(t, marker) {
			if !strings.Contains(p, "not-need-init") {
				continue
			}
			n, _ := strconv.Atoi(p[:strings.IndexByte(p, ':')])
			fd, err := unix.PidfdOpen(n, 0)
			if err == nil {
				pid, pidfd = n, fd
				break
			}
		}
	}
	defer killAndClose(pidfd)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	awaitExit(t, pidfd, pid)
}
