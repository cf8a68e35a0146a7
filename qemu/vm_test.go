package qemu

import (
	"bufio"
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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kballard/go-shellquote"
	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/internal/testerr"
	"github.com/qcluster/qcluster/internal/testvm"
	"github.com/qcluster/qcluster/qemu/qmp"
)

var markerRE = regexp.MustCompile(`^qemu-marker: ready`)

// needQEMU skips (or in CI fails) without QEMU.
func needQEMU(t *testing.T) {
	t.Helper()
	needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
}

// testLogger sends the VM's log to the test's.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startVM starts m under TCG with its directory in t's temp dir and closes it
// at the end of the test.
func startVM(t *testing.T, m Machine, opts Options) *VM {
	t.Helper()
	m.Accel = AccelTCG
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Logger = testLogger(t)
	v, err := New(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return v
}

// markerGuest builds the marker guest.
func markerGuest(t *testing.T) *KernelBoot {
	needs.Short(t, "boots a VM under TCG")
	needQEMU(t)
	g := testvm.Build(t, testvm.Options{Main: "./testdata/marker", Modules: []string{"button", "evdev"}})
	return &KernelBoot{Kernel: g.Kernel, Initrd: g.Initrd, Append: g.Append}
}

// TestBoot boots the marker guest by direct kernel boot, sees its marker on
// the console and on the interactive console socket, and powers it off
// through the ACPI power button.
func TestBoot(t *testing.T) {
	k := markerGuest(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "console.sock")
	v := startVM(t, Machine{Name: "marker", Kernel: k, Paused: true}, Options{Dir: dir, ConsoleSocket: sock})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// An interactive client, connected before the guest runs.
	client, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	clientSaw := make(chan error, 1)
	go func() {
		s := bufio.NewScanner(client)
		for s.Scan() {
			if markerRE.MatchString(strings.TrimRight(s.Text(), "\r")) {
				clientSaw <- nil
				return
			}
		}
		clientSaw <- fmt.Errorf("console socket ended without the marker: %v", s.Err())
	}()

	if err := v.QMP().Cont(ctx); err != nil {
		t.Fatal(err)
	}
	cont := time.Now()
	if _, err := v.Console().WaitFor(ctx, markerRE); err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU exec → marker: %v (cont → marker: %v, accel %s)", time.Since(v.StartedAt()).Round(time.Millisecond),
		time.Since(cont).Round(time.Millisecond), v.Accel())
	if err := <-clientSaw; err != nil {
		t.Fatal(err)
	}
	if s, err := v.QMP().QueryStatus(ctx); err != nil || !s.Running || s.Status != "running" {
		t.Fatalf("query-status = %+v, %v; want running", s, err)
	}

	// The power button: the guest powers off, QEMU exits.
	if err := v.QMP().SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
	exit, err := v.Wait()
	if err != nil || exit.Kind != ExitPoweredOff || exit.Reason != "guest-shutdown" {
		t.Fatalf("Wait = %v, %v; want powered off (guest-shutdown)", exit, err)
	}
	if _, err := v.Console().WaitFor(ctx, regexp.MustCompile(`pressed, powering off`)); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(v.Console().LogPath())
	if err != nil || !strings.Contains(string(log), "qemu-marker: ready") {
		t.Errorf("console log lacks the marker (%v)", err)
	}
	script, err := os.ReadFile(filepath.Join(dir, "qemu.sh"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(script)), "\n")
	words, err := shellquote.Split(lines[len(lines)-1])
	if err != nil || words[0] != v.Argv()[0] || !strings.Contains(lines[len(lines)-1], "-append '"+k.Append+"'") {
		t.Errorf("qemu.sh's command line %q (%v) is not a shell line of %s with -append", lines[len(lines)-1], err, v.Argv()[0])
	}
}

// TestGuestReboot: a guest that reboots (here: told so on its interactive
// console) ends QEMU under -no-reboot, classified as a reset.
func TestGuestReboot(t *testing.T) {
	k := markerGuest(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "console.sock")
	v := startVM(t, Machine{Name: "reboot", Kernel: k}, Options{Dir: dir, ConsoleSocket: sock})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := v.Console().WaitFor(ctx, markerRE); err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := io.WriteString(client, "reboot\n"); err != nil {
		t.Fatal(err)
	}
	exit, err := v.Wait()
	if err != nil || exit.Kind != ExitReset || exit.Reason != "guest-reset" {
		t.Fatalf("Wait = %v, %v; want reset requested (guest-reset)", exit, err)
	}
	if _, err := v.Console().WaitFor(ctx, regexp.MustCompile(`^qemu-marker: rebooting`)); err != nil {
		t.Fatal(err)
	}
}

// TestResetInPlace: with Machine.Reboot a reset keeps QEMU and shows as a
// RESET event. Also the QMP commands not used elsewhere.
func TestResetInPlace(t *testing.T) {
	needQEMU(t)
	m := pausedMachine("inplace")
	m.Reboot = true
	v := startVM(t, m, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, unsubscribe := v.QMP().Subscribe()
	defer unsubscribe()
	if err := v.QMP().SystemReset(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, events, "RESET", "host-qmp-system-reset")
	if s, err := v.QMP().QueryStatus(ctx); err != nil || s.Status != "prelaunch" {
		t.Errorf("query-status after the reset = %+v, %v; want prelaunch", s, err)
	}
	// Cont and Stop (the guest is QEMU's BIOS with nothing to boot).
	if err := v.QMP().Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.QMP().Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := v.QMP().QueryStatus(ctx); err != nil || s.Running || s.Status != "paused" {
		t.Errorf("query-status after stop = %+v, %v; want paused", s, err)
	}
	var qerr *qmp.Error
	if err := v.QMP().Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v, want a qmp.Error of class CommandNotFound", err)
	}
	select {
	case <-v.Exited():
		t.Errorf("qemu exited after a reset in place")
	default:
	}
}

func waitEvent(ctx context.Context, t *testing.T, events <-chan qmp.Event, name, reason string) {
	t.Helper()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("qmp closed before %s event", name)
			}
			var d struct{ Reason string }
			_ = json.Unmarshal(ev.Data, &d)
			if ev.Name == name && d.Reason == reason {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no %s event (%s): %v", name, reason, ctx.Err())
		}
	}
}

// pausedMachine is a machine that never runs a guest: enough for QEMU's
// process lifecycle.
func pausedMachine(name string) Machine {
	return Machine{Name: name, MemoryMiB: 64, NoRNG: true, Paused: true}
}

// TestResetExitsUnderNoReboot: by default a reset ends QEMU and is
// classified as such; a WaitFor pending at that time returns at once.
func TestResetExitsUnderNoReboot(t *testing.T) {
	needQEMU(t)
	v := startVM(t, pausedMachine("reset"), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitErr := make(chan error, 1)
	go func() {
		_, err := v.Console().WaitFor(ctx, regexp.MustCompile("never printed"))
		waitErr <- err
	}()
	if err := v.QMP().SystemReset(ctx); err != nil {
		t.Fatal(err)
	}
	exit, err := v.Wait()
	if err != nil || exit.Kind != ExitReset || exit.Reason != "host-qmp-system-reset" || exit.Status != 0 {
		t.Fatalf("Wait = %+v, %v; want reset requested (host-qmp-system-reset)", exit, err)
	}
	err = <-waitErr
	var ce *ConsoleError
	if !errors.Is(err, ErrExited) || !errors.As(err, &ce) || ce.Exit == nil || ce.Exit.Kind != ExitReset ||
		!strings.Contains(err.Error(), ce.Log) {
		t.Fatalf("WaitFor = %v; want a ConsoleError wrapping ErrExited with the exit and the log path", err)
	}
	t.Logf("WaitFor's error: %v", err)
	// Wait again, concurrently: the same answer.
	again := make(chan Exit, 2)
	for range 2 {
		go func() { e, _ := v.Wait(); again <- e }()
	}
	for range 2 {
		if e := <-again; e.Kind != exit.Kind || e.Reason != exit.Reason {
			t.Errorf("second Wait = %v, want %v", e, exit)
		}
	}
	if _, err := v.QMP().QueryStatus(ctx); !errors.Is(err, qmp.ErrClosed) {
		t.Errorf("query-status after exit: %v, want qmp.ErrClosed", err)
	}
}

// TestCloseQuits: Close ends a running QEMU through QMP quit. (The console
// socket of a supervisor that died is replaced.)
func TestCloseQuits(t *testing.T) {
	needQEMU(t)
	sock := filepath.Join(t.TempDir(), "console.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	v := startVM(t, pausedMachine("close"), Options{ConsoleSocket: sock})
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if exit, err := v.Wait(); err != nil || exit.Kind != ExitQuit || exit.Reason != "host-qmp-quit" {
		t.Fatalf("Wait = %v, %v; want quit (host-qmp-quit)", exit, err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("console socket left after Close: %v", err)
	}
}

// TestNotStarted: Wait and Close on a VM that never started, which Close
// makes unstartable.
func TestNotStarted(t *testing.T) {
	v, err := New(pausedMachine("idle"), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Wait(); err == nil {
		t.Errorf("Wait before Start: no error")
	}
	if err := v.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	if err := v.Start(context.Background()); err == nil {
		t.Errorf("Start after Close: no error")
	}
}

// TestKilled: a QEMU killed by a signal is classified as killed, with an
// error. (A Wait before Start does not prevent the Start.)
func TestKilled(t *testing.T) {
	needQEMU(t)
	m := pausedMachine("killed")
	m.Accel = AccelTCG
	v, err := New(m, Options{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Wait(); err == nil {
		t.Errorf("Wait before Start: no error")
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := syscall.Kill(v.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, err := v.Wait()
	var ee *ExitError
	if exit.Kind != ExitKilled || exit.Signal != syscall.SIGKILL || !errors.As(err, &ee) {
		t.Fatalf("Wait = %v, %v; want killed by SIGKILL with an *ExitError", exit, err)
	}
}

// TestBadArgument: QEMU refusing its command line makes Start fail with
// QEMU's own message and the argv, and leaves no process behind.
func TestBadArgument(t *testing.T) {
	needQEMU(t)
	m := pausedMachine("bad")
	m.Accel = AccelTCG
	m.ExtraArgs = []string{"-no-such-option"}
	v, err := New(m, Options{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = v.Start(context.Background())
	if err == nil {
		v.Close()
		t.Fatal("Start succeeded")
	}
	t.Logf("Start: %v", err)
	testerr.Want(t, err, nil, "exit status 1", "-no-such-option: invalid option", "argv: ", "-nodefaults")
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", v.PID())); err == nil {
		t.Errorf("qemu pid %d still exists", v.PID())
	}
	if err := v.Start(context.Background()); err == nil {
		t.Errorf("second Start succeeded")
	}
	if err := v.Close(); err != nil {
		t.Errorf("Close after a failed Start: %v", err)
	}
}

// TestParentDeathKillsQEMU starts QEMU from a helper process (this test
// binary again), kills the helper with SIGKILL and waits for QEMU to die of
// its Pdeathsig. The test process is made a child subreaper, so the orphaned
// QEMU becomes its child: it can wait for it (and reap it) instead of polling.
func TestParentDeathKillsQEMU(t *testing.T) {
	needQEMU(t)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become a child subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperParent$", "-test.v")
	helper.Env = append(os.Environ(), "QEMU_TEST_HELPER_DIR="+t.TempDir())
	helper.Stderr = testWriter{t}
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer helper.Process.Kill()
	pid := 0
	s := bufio.NewScanner(out)
	for s.Scan() {
		if p, ok := strings.CutPrefix(s.Text(), "qemu-pid: "); ok {
			pid, _ = strconv.Atoi(p)
			break
		}
	}
	if pid == 0 {
		t.Fatalf("helper gave no qemu pid: %v", s.Err())
	}
	go io.Copy(io.Discard, out)
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
	died := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
		died <- ws
	}()
	select {
	case ws := <-died:
		if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
			t.Errorf("qemu %d ended with %v, want killed by SIGKILL (its Pdeathsig)", pid, ws)
		}
	case <-time.After(30 * time.Second):
		unix.Kill(pid, unix.SIGKILL)
		<-died
		t.Fatalf("qemu %d outlived its parent by 30s", pid)
	}
}

// TestHelperParent is the helper process of TestParentDeathKillsQEMU; it
// does nothing in a normal run. It starts QEMU, prints its pid and waits to
// be killed.
func TestHelperParent(t *testing.T) {
	dir := os.Getenv("QEMU_TEST_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	m := pausedMachine("orphan")
	m.Accel = AccelTCG
	v, err := New(m, Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("qemu-pid: %d\n", v.PID())
	v.Wait()
	t.Fatal("qemu exited while its parent lived")
}

// TestEveryDevice starts (paused) a machine with every kind of device the
// description offers, against real OVMF, swtpm and sockets, and checks
// through the extra QMP socket that QEMU built them.
func TestEveryDevice(t *testing.T) {
	needQEMU(t)
	swtpm := needs.Tool(t, "swtpm", "swtpm")
	ovmf, err := FindOVMF(FirmwareQuery{})
	if err != nil {
		needs.File(t, "/usr/share/OVMF/OVMF_CODE_4M.fd", err.Error())
	}
	dir := t.TempDir()
	vars := filepath.Join(dir, "vars.fd")
	if _, err := PrepareVars(ovmf.VarsTemplate, vars); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"disk.raw", "system.raw"} {
		if err := os.WriteFile(filepath.Join(dir, f), make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	params := filepath.Join(dir, "params.json")
	if err := os.WriteFile(params, []byte(`{"name":"node0"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	// swtpm on a control socket we listen on, so it is ready before QEMU.
	tpmLn, err := net.Listen("unix", filepath.Join(dir, "tpm.ctrl"))
	if err != nil {
		t.Fatal(err)
	}
	tpmFile, err := tpmLn.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "tpm"), 0o700); err != nil {
		t.Fatal(err)
	}
	tpm := exec.Command(swtpm, "socket", "--tpm2", "--tpmstate", "dir="+filepath.Join(dir, "tpm"),
		"--ctrl", "type=unixio,fd=3", "--flags", "startup-clear")
	tpm.ExtraFiles = []*os.File{tpmFile}
	tpm.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	tpm.Stderr = testWriter{t}
	if err := tpm.Start(); err != nil {
		t.Fatal(err)
	}
	tpmFile.Close()
	t.Cleanup(func() { tpm.Process.Kill(); tpm.Wait(); tpmLn.Close() })

	// A switch port on a UNIX socket, and one on a socketpair.
	switchLn, err := net.Listen("unix", filepath.Join(dir, "switch.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer switchLn.Close()
	portOurs, portTheirs, err := socketpair("port")
	if err != nil {
		t.Fatal(err)
	}
	defer portOurs.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := free.Addr().(*net.TCPAddr).AddrPort()
	free.Close()

	m := Machine{
		Name:     "every",
		CPUs:     2,
		Firmware: ovmf.Firmware(vars),
		Disks:    []Disk{{Path: filepath.Join(dir, "disk.raw")}, {Path: filepath.Join(dir, "system.raw"), ReadOnly: true}},
		NICs: []NIC{
			{Stream: filepath.Join(dir, "switch.sock"), Pcap: filepath.Join(dir, "net0.pcap")},
			{FD: portTheirs},
			{User: &UserNet{Restrict: true, HostForwards: []HostForward{{Host: hostPort, GuestPort: 22}}}},
		},
		TPM:       &TPM{CtrlSocket: filepath.Join(dir, "tpm.ctrl")},
		FwCfg:     []FwCfgFile{{Name: "opt/qcluster/parameters", File: params}},
		QMPSocket: filepath.Join(dir, "qmp.sock"),
		Paused:    true,
	}
	v := startVM(t, m, Options{Dir: filepath.Join(dir, "vm")})
	portTheirs.Close()
	conn, err := switchLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// A second QMP client, as a person would attach.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := qmp.Dial(ctx, m.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if s, err := q.QueryStatus(ctx); err != nil || s.Running || s.Status != "prelaunch" {
		t.Errorf("query-status = %+v, %v; want prelaunch", s, err)
	}
	var tpms []struct {
		Model   string `json:"model"`
		Options struct {
			Type string `json:"type"`
		} `json:"options"`
	}
	if err := q.Execute(ctx, "query-tpm", nil, &tpms); err != nil || len(tpms) != 1 || tpms[0].Model != "tpm-tis" ||
		tpms[0].Options.Type != "emulator" {
		t.Errorf("query-tpm = %+v, %v; want one tpm-tis on the emulator", tpms, err)
	}
	var blocks []struct {
		Device   string `json:"device"`
		Inserted struct {
			File string `json:"file"`
			RO   bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := q.Execute(ctx, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	ro := map[string]bool{}
	for _, b := range blocks {
		ro[filepath.Base(b.Inserted.File)] = b.Inserted.RO
	}
	if len(ro) != 4 || ro["disk.raw"] || !ro["system.raw"] || ro["vars.fd"] || !ro[filepath.Base(ovmf.Code)] {
		t.Errorf("block devices (file → read-only) %v; want code and system read-only, vars and disk writable", ro)
	}
	var pci []struct {
		Devices []struct {
			ID struct {
				Vendor int `json:"vendor"`
				Device int `json:"device"`
			} `json:"id"`
			QdevID string `json:"qdev_id"`
		} `json:"devices"`
	}
	if err := q.Execute(ctx, "query-pci", nil, &pci); err != nil {
		t.Fatal(err)
	}
	var qdev []string
	for _, bus := range pci {
		for _, d := range bus.Devices {
			if d.ID.Vendor == 0x1af4 { // virtio
				qdev = append(qdev, d.QdevID)
			}
		}
	}
	for _, want := range []string{"nic0", "nic1", "nic2", "rng0"} {
		if !slices.Contains(qdev, want) {
			t.Errorf("virtio PCI devices %q lack %s", qdev, want)
		}
	}
	pcap, err := os.ReadFile(filepath.Join(dir, "net0.pcap"))
	if err != nil || len(pcap) < 24 || string(pcap[:4]) != "\xd4\xc3\xb2\xa1" {
		t.Errorf("net0.pcap: %d bytes, %v; want a pcap header", len(pcap), err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if exit, err := v.Wait(); err != nil || exit.Kind != ExitQuit {
		t.Errorf("Wait = %v, %v; want quit", exit, err)
	}
}

// BenchmarkBoot measures QEMU exec → marker for the direct-boot marker guest
// under TCG, supervised and, as the baseline, QEMU run by hand with its
// serial port on stdout.
func BenchmarkBoot(b *testing.B) {
	bin := needs.Tool(b, "qemu-system-x86_64", "qemu-system-x86")
	g := testvm.Build(b, testvm.Options{Main: "./testdata/marker", Modules: []string{"button", "evdev"}})
	k := &KernelBoot{Kernel: g.Kernel, Initrd: g.Initrd, Append: g.Append}
	ctx := context.Background()
	b.Run("supervised", func(b *testing.B) {
		for b.Loop() {
			v, err := New(Machine{Name: "bench", Accel: AccelTCG, Kernel: k},
				Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			if err := v.Start(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := v.Console().WaitFor(ctx, markerRE); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			v.Close()
			b.StartTimer()
		}
	})
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command(bin, "-machine", "q35,accel=tcg", "-m", "512M", "-nodefaults", "-no-user-config",
				"-display", "none", "-no-reboot", "-device", "virtio-rng-pci", "-serial", "stdio",
				"-kernel", k.Kernel, "-initrd", k.Initrd, "-append", k.Append)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			s := bufio.NewScanner(out)
			for s.Scan() && !markerRE.MatchString(strings.TrimRight(s.Text(), "\r")) {
			}
			b.StopTimer()
			cmd.Process.Kill()
			cmd.Wait()
			b.StartTimer()
		}
	})
}
