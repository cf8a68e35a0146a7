package nanoswitch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/internal/testvm"
	"github.com/qcluster/qcluster/nanoswitch/hostproxy"
)

// Tests with real QEMU guests under TCG. The guest (testdata/guest) takes a
// DHCP lease and serves a line protocol on port 7000 and a byte sink on
// port 7001; the test drives it through the switch's dialer.

const (
	guestCmdPort  = 7000
	guestSinkPort = 7001
	bootTimeout   = 5 * time.Minute // three TCG guests on a busy 2-core machine
)

// testVM is one QEMU process and its serial console.
type testVM struct {
	name    string
	cmd     *exec.Cmd
	started time.Time

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line
	done    bool          // console closed
	stderr  bytes.Buffer
	stdin   io.WriteCloser // the console's input
}

func buildGuest(t testing.TB) (string, testvm.Guest) {
	needs.Short(t, "boots VMs")
	qemu := needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	return qemu, testvm.Build(t, testvm.Options{
		Main:    "./testdata/guest",
		Modules: []string{"virtio_pci", "virtio_net", "virtio-rng"},
	})
}

// vmOpts describe one test VM.
type vmOpts struct {
	name   string
	netdev string           // the -netdev value; its id must be n0
	mac    net.HardwareAddr // the NIC's MAC
	files  []*os.File       // passed to QEMU as fd 3, 4, …
	append string           // added to the kernel command line
}

// unixNetdev connects the NIC to a switch port's socket.
func unixNetdev(sock string) string {
	return "stream,id=n0,server=off,addr.type=unix,addr.path=" + sock
}

// fdNetdev connects the NIC to an inherited connected socket.
func fdNetdev(fd int) string {
	return fmt.Sprintf("stream,id=n0,server=off,addr.type=fd,addr.str=%d", fd)
}

// bootVM starts a guest.
func bootVM(t testing.TB, qemu string, g testvm.Guest, o vmOpts) *testVM {
	t.Helper()
	args := []string{
		// A small q35 machine under TCG: KVM is unusable here.
		"-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		// Console on stdin/stdout: markers are scanned, commands written.
		"-serial", "stdio",
		// Entropy: without it the DHCP client blocks in getrandom().
		"-device", "virtio-rng-pci",
		"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", strings.TrimSpace(g.Append + " " + o.append),
		// The NIC.
		"-netdev", o.netdev,
		"-device", "virtio-net-pci,netdev=n0,mac=" + o.mac.String(),
	}
	v := &testVM{name: o.name, changed: make(chan struct{})}
	v.cmd = exec.Command(qemu, args...)
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	v.cmd.Stderr = lockedWriter{&v.mu, &v.stderr}
	v.cmd.ExtraFiles = o.files
	out, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("%s: start qemu: %v", o.name, err)
	}
	console := make(chan struct{})
	go func() {
		defer close(console)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			v.mu.Lock()
			v.lines = append(v.lines, sc.Text())
			close(v.changed)
			v.changed = make(chan struct{})
			v.mu.Unlock()
		}
		v.mu.Lock()
		v.done = true
		close(v.changed)
		v.mu.Unlock()
	}()
	t.Cleanup(func() {
		v.kill()
		<-console
		_ = v.cmd.Wait()
		if t.Failed() {
			t.Logf("%s console:\n%s\nstderr: %s", o.name, v.console(), v.stderrText())
		}
	})
	return v
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (v *testVM) kill() { _ = syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL) }

func (v *testVM) console() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.lines, "\n")
}

func (v *testVM) stderrText() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stderr.String()
}

// waitFor returns the first console line containing substr, failing the
// test if the console ends or timeout passes first.
func (v *testVM) waitFor(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	line, _ := v.waitFrom(t, 0, substr, timeout)
	return line
}

// waitFrom is waitFor from console line number from on; it also returns
// the number of the line after the one found.
func (v *testVM) waitFrom(t testing.TB, from int, substr string, timeout time.Duration) (string, int) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := from
	for {
		v.mu.Lock()
		lines, changed, done := v.lines[min(seen, len(v.lines)):], v.changed, v.done
		v.mu.Unlock()
		for _, l := range lines {
			seen++
			if strings.Contains(l, "nsguest: fatal") || strings.Contains(l, "testvm-guest: fatal") {
				t.Fatalf("%s: %s", v.name, l)
			}
			if strings.Contains(l, substr) {
				return l, seen
			}
		}
		if done {
			t.Fatalf("%s: console ended before %q (qemu: %s)", v.name, substr, v.stderrText())
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s: no %q within %s", v.name, substr, timeout)
		}
	}
}

// consoleAsk runs a command on the guest's console and returns its answer
// without "ok ", failing the test on "err".
func (v *testVM) consoleAsk(t testing.TB, command string) string {
	t.Helper()
	v.mu.Lock()
	from := len(v.lines)
	v.mu.Unlock()
	if _, err := fmt.Fprintln(v.stdin, command); err != nil {
		t.Fatalf("%s: console: %v", v.name, err)
	}
	line, _ := v.waitFrom(t, from, "nsguest: reply ", 5*time.Minute)
	_, reply, _ := strings.Cut(line, "nsguest: reply ")
	r, ok := strings.CutPrefix(reply, "ok ")
	if !ok {
		t.Fatalf("%s: %q: %s", v.name, command, reply)
	}
	return r
}

// leaseLine is the guest's report of its lease.
var leaseLine = regexp.MustCompile(`nsguest: lease ip=(\S+) gw=(\S+) dns=\[(\S*)\] domain=(\S+) search=(\S+) hostname=(\S+) dhcp_ms=(\d+)`)

// ask sends one command to a guest's command port through dial and returns
// the answer without "ok ", failing the test on "err".
func ask(t *testing.T, dial func(context.Context, string, string) (net.Conn, error), guest, command string) string {
	t.Helper()
	reply, err := tryAsk(dial, guest, command)
	if err != nil {
		t.Fatalf("%s: %q: %v", guest, command, err)
	}
	return reply
}

// tryAsk is ask returning the guest's "err" answer as an error.
func tryAsk(dial func(context.Context, string, string) (net.Conn, error), guest, command string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := dial(ctx, "tcp", net.JoinHostPort(guest, strconv.Itoa(guestCmdPort)))
	if err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Minute))
	if _, err := fmt.Fprintln(c, command); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	line = strings.TrimSpace(line)
	if r, ok := strings.CutPrefix(line, "ok"); ok {
		return strings.TrimSpace(r), nil
	}
	return "", fmt.Errorf("guest: %s", line)
}

// askFails runs a command that must fail on the guest and returns the
// guest's error.
func askFails(t *testing.T, sw *Switch, guest, command string) string {
	t.Helper()
	reply, err := tryAsk(sw.DialContext, guest, command)
	if err == nil {
		t.Fatalf("%s: %q succeeded (%s), want an error", guest, command, reply)
	}
	if !strings.Contains(err.Error(), "guest: err") {
		t.Fatalf("%s: %q: %v (the command did not reach the guest)", guest, command, err)
	}
	return err.Error()
}

// sendToSink writes n bytes to a guest's sink through dial and returns the
// count the sink reports and the time taken.
func sendToSink(t *testing.T, dial func(context.Context, string, string) (net.Conn, error), guest string, n int) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := dial(t.Context(), "tcp", net.JoinHostPort(guest, strconv.Itoa(guestSinkPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 64<<10)
	for left := n; left > 0; left -= len(buf) {
		if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		t.Fatal(err)
	}
	return int(binary.BigEndian.Uint64(got[:])), time.Since(start)
}

func mbps(n int, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// hostAddr4 returns a non-loopback IPv4 address of the host, if it has one.
func hostAddr4() (netip.Addr, bool) {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// countingListener listens on addr and counts the connections it accepts.
func countingListener(t *testing.T, addr string) (net.Listener, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln, &n
}

func infoLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestGuests boots three guests on one switch and runs every check that
// needs real VMs against them, in an order that leaves them usable.
func TestGuests(t *testing.T) {
	qemu, g := buildGuest(t)
	tcpdump := needs.Tool(t, "tcpdump", "tcpdump")
	names := []string{"node0", "node1", "node2"}
	subnet := netip.MustParsePrefix("10.42.0.0/24")
	leases := nodeLeases(subnet, names)
	pcapDir := t.TempDir()
	sw := newTestSwitch(t, Config{Name: "vmtest", Leases: leases, SOCKS: true, PcapDir: pcapDir, Logger: infoLogger(t)})
	domain := sw.Domain()
	vms := make([]*testVM, len(names))
	socks := make([]string, len(names))
	for i, l := range leases {
		var err error
		if socks[i], err = sw.AddPort(l.Hostname, l.MAC); err != nil {
			t.Fatal(err)
		}
		vms[i] = bootVM(t, qemu, g, vmOpts{name: l.Hostname, netdev: unixNetdev(socks[i]), mac: l.MAC})
	}
	leaseLines := make([]string, len(vms))
	leaseSeen := make([]time.Duration, len(vms))
	for i, v := range vms {
		leaseLines[i] = v.waitFor(t, "nsguest: lease", bootTimeout)
		leaseSeen[i] = time.Since(v.started)
		v.waitFor(t, "nsguest: ready", bootTimeout)
	}

	t.Run("dhcp", func(t *testing.T) {
		for i, l := range leases {
			m := leaseLine.FindStringSubmatch(leaseLines[i])
			if m == nil {
				t.Fatalf("%s: lease line %q", l.Hostname, leaseLines[i])
			}
			want := []string{l.Addr.String() + "/24", "10.42.0.1", "10.42.0.1", domain, domain, l.Hostname}
			if got := m[1:7]; strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("%s: lease %v, want %v", l.Hostname, got, want)
			}
			t.Logf("%s: QEMU start → lease line %s (guest: link up → ACK %s ms)", l.Hostname, leaseSeen[i].Round(time.Millisecond), m[7])
		}
	})

	t.Run("guest-to-guest", func(t *testing.T) {
		ask(t, sw.DialContext, "node0", "dial node1:7000 10000")
		ask(t, sw.DialContext, "node1", "dial 10.42.0.10:7000 10000")
		ask(t, sw.DialContext, "node2", "dial node0."+domain+":7000 10000")
		if got := ask(t, sw.DialContext, "node0", "resolve node1"); got != "10.42.0.11" {
			t.Errorf("node0 resolves node1 to %q", got)
		}
		if got := ask(t, sw.DialContext, "node0", "resolve node2."+domain); got != "10.42.0.12" {
			t.Errorf("node0 resolves node2.%s to %q", domain, got)
		}
	})

	t.Run("dialer", func(t *testing.T) {
		for _, addr := range []string{"node0", "10.42.0.11", "node2." + domain} {
			if got := ask(t, sw.DialContext, addr, "echo hello "+addr); got != "hello "+addr {
				t.Errorf("echo through %s: %q", addr, got)
			}
		}
		_, err := sw.DialContext(t.Context(), "tcp", "node0:1")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial to a closed port: %v, want ECONNREFUSED", err)
		}
	})

	t.Run("socks5", func(t *testing.T) {
		info, _ := sw.SOCKS()
		d, err := proxy.SOCKS5("tcp", info.Addr.String(), &proxy.Auth{User: info.Username, Password: info.Password}, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		dial := d.(proxy.ContextDialer).DialContext
		for _, addr := range []string{"node1", "10.42.0.12", "node0." + domain} {
			if got := ask(t, dial, addr, "echo via socks"); got != "via socks" {
				t.Errorf("echo through socks to %s: %q", addr, got)
			}
		}
		bad, _ := proxy.SOCKS5("tcp", info.Addr.String(), &proxy.Auth{User: info.Username, Password: "wrong"}, proxy.Direct)
		if _, err := bad.(proxy.ContextDialer).DialContext(t.Context(), "tcp", "node1:7000"); err == nil {
			t.Error("socks5 with a wrong password connected")
		}
		none, _ := proxy.SOCKS5("tcp", info.Addr.String(), nil, proxy.Direct)
		if _, err := none.(proxy.ContextDialer).DialContext(t.Context(), "tcp", "node1:7000"); err == nil {
			t.Error("socks5 without credentials connected")
		}
		if _, err := dial(t.Context(), "tcp", "127.0.0.1:22"); err == nil {
			t.Error("socks5 connected to the host's loopback")
		}
	})

	t.Run("hermetic", func(t *testing.T) {
		lo, loAccepted := countingListener(t, "127.0.0.1:0")
		port := lo.Addr().(*net.TCPAddr).Port
		t.Log(askFails(t, sw, "node0", fmt.Sprintf("dial 10.42.0.1:%d 3000", port)))
		t.Log(askFails(t, sw, "node0", fmt.Sprintf("dial 127.0.0.1:%d 3000", port)))
		var hostAccepted *atomic.Int64
		if a, ok := hostAddr4(); ok {
			// A listener on the host's own address, for as long as the
			// test runs, to show that guests cannot reach it.
			ln, n := countingListener(t, net.JoinHostPort(a.String(), "0"))
			hostAccepted = n
			t.Log(askFails(t, sw, "node0", fmt.Sprintf("dial %s 3000", ln.Addr())))
		}
		t.Log(askFails(t, sw, "node0", "resolve example.com"))
		if n := loAccepted.Load(); n != 0 {
			t.Errorf("the host's loopback listener accepted %d connections from guests", n)
		}
		if hostAccepted != nil && hostAccepted.Load() != 0 {
			t.Errorf("the host-address listener accepted %d connections from guests", hostAccepted.Load())
		}
	})

	t.Run("partition", func(t *testing.T) {
		before, _ := sw.Counters("node1")
		if err := sw.Partition("node0", "node1"); err != nil {
			t.Fatal(err)
		}
		askFails(t, sw, "node0", "dial node1:7000 2000")
		askFails(t, sw, "node1", "dial node0:7000 2000")
		// Both still reach the gateway (DNS over UDP and TCP) and node2,
		// and the host reaches both.
		if got := ask(t, sw.DialContext, "node0", "resolve node1"); got != "10.42.0.11" {
			t.Errorf("node0 resolves node1 to %q", got)
		}
		ask(t, sw.DialContext, "node0", "dial gateway:53 10000")
		ask(t, sw.DialContext, "node1", "dial gateway:53 10000")
		ask(t, sw.DialContext, "node0", "dial node2:7000 10000")
		ask(t, sw.DialContext, "node1", "dial node2:7000 10000")
		if after, _ := sw.Counters("node1"); after.FaultDrops == before.FaultDrops {
			t.Error("the partition dropped no frame for node1")
		}
		sw.Heal()
		ask(t, sw.DialContext, "node0", "dial node1:7000 10000")
		ask(t, sw.DialContext, "node1", "dial node0:7000 10000")
	})

	t.Run("isolate", func(t *testing.T) {
		if err := sw.Isolate("node2"); err != nil {
			t.Fatal(err)
		}
		askFails(t, sw, "node2", "dial node0:7000 2000")
		askFails(t, sw, "node0", "dial node2:7000 2000")
		ask(t, sw.DialContext, "node2", "resolve node0")
		sw.Heal()
		ask(t, sw.DialContext, "node2", "dial node0:7000 10000")
	})

	t.Run("throughput", func(t *testing.T) {
		const n = 50_000_000
		reply := ask(t, sw.DialContext, "node0", fmt.Sprintf("send node1:%d %d", guestSinkPort, n))
		var got, ns int64
		if _, err := fmt.Sscanf(reply, "%d %d", &got, &ns); err != nil || got != n {
			t.Fatalf("guest→guest: %q", reply)
		}
		t.Logf("guest→guest: %d MB in %s: %.1f MB/s", n/1_000_000, time.Duration(ns).Round(time.Millisecond), mbps(n, time.Duration(ns)))
		// and through SOCKS5, as an outside tool would
		info, _ := sw.SOCKS()
		socks := &hostproxy.SOCKSDialer{Server: info.Addr.String(), Username: info.Username, Password: info.Password}
		cnt, d := sendToSink(t, socks.DialContext, "node1", n)
		if cnt != n {
			t.Fatalf("host→guest through SOCKS5: sink counted %d of %d bytes", cnt, n)
		}
		t.Logf("host→guest (SOCKS5): %d MB in %s: %.1f MB/s", n/1_000_000, d.Round(time.Millisecond), mbps(n, d))
		before, _ := sw.Counters("node1")
		cnt, d = sendToSink(t, sw.DialContext, "node1", n)
		if cnt != n {
			t.Fatalf("host→guest: sink counted %d of %d bytes", cnt, n)
		}
		after, _ := sw.Counters("node1")
		t.Logf("host→guest (in-process dialer): %d MB in %s: %.1f MB/s; frames to node1 %d, dropped %d",
			n/1_000_000, d.Round(time.Millisecond), mbps(n, d), after.TxFrames-before.TxFrames, after.TxDrops-before.TxDrops)
	})

	t.Run("pcap", func(t *testing.T) {
		for _, name := range []string{"node0", "node1"} {
			out, err := exec.Command(tcpdump, "-nn", "-r", filepath.Join(pcapDir, name+".pcap"),
				"tcp and src host 10.42.0.10 and dst host 10.42.0.11").Output()
			if err != nil {
				t.Fatalf("tcpdump %s: %v", name, err)
			}
			if n := bytes.Count(out, []byte("\n")); n == 0 {
				t.Errorf("%s.pcap has no node0 → node1 TCP packets", name)
			}
		}
	})

	t.Run("stall", func(t *testing.T) {
		stalled := vms[2]
		if err := syscall.Kill(stalled.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = syscall.Kill(stalled.cmd.Process.Pid, syscall.SIGCONT)
			}
		}
		defer resume()
		before, _ := sw.Counters("node2")
		// 28 MB of broadcasts: far more than node2's socket buffer and
		// queue hold while its QEMU does not read.
		ask(t, sw.DialContext, "node0", "flood 10.42.0.255:9 20000 1400")
		const n = 5_000_000
		if reply := ask(t, sw.DialContext, "node0", fmt.Sprintf("send node1:%d %d", guestSinkPort, n)); !strings.HasPrefix(reply, strconv.Itoa(n)+" ") {
			t.Errorf("node0 → node1 while node2 is stopped: %q", reply)
		}
		ask(t, sw.DialContext, "node1", "dial node0:7000 10000")
		ask(t, sw.DialContext, "node1", "resolve node0")
		after, _ := sw.Counters("node2")
		if after.TxDrops == before.TxDrops {
			t.Error("no frame for the stopped node2 was dropped: it never stalled")
		}
		t.Logf("frames dropped for stopped node2: %d", after.TxDrops-before.TxDrops)
		resume()
		if got := ask(t, sw.DialContext, "node2", "echo back"); got != "back" {
			t.Errorf("node2 after SIGCONT: %q", got)
		}
		ask(t, sw.DialContext, "node2", "dial node1:7000 10000")
	})

	t.Run("reboot", func(t *testing.T) {
		old := vms[2]
		old.kill()
		_ = old.cmd.Wait()
		v := bootVM(t, qemu, g, vmOpts{name: "node2", netdev: unixNetdev(socks[2]), mac: leases[2].MAC})
		line := v.waitFor(t, "nsguest: lease", bootTimeout)
		v.waitFor(t, "nsguest: ready", bootTimeout)
		if m := leaseLine.FindStringSubmatch(line); m == nil || m[1] != "10.42.0.12/24" {
			t.Errorf("node2 after restart: %q", line)
		}
		if c, _ := sw.Counters("node2"); c.Connects != 2 {
			t.Errorf("node2 connects %d, want 2", c.Connects)
		}
		ask(t, sw.DialContext, "node0", "dial node2:7000 10000")
		ask(t, sw.DialContext, "node2", "echo again")
	})
}

// TestOutbound is the hermetic test's control: with AllowOutbound, the same
// guest command reaches a listener on the host's address. Its guest is
// attached the other way, through an inherited socketpair (AttachConn).
func TestOutbound(t *testing.T) {
	a, ok := hostAddr4()
	if !ok {
		t.Skip("the host has no non-loopback IPv4 address")
	}
	qemu, g := buildGuest(t)
	leases := nodeLeases(netip.MustParsePrefix("10.42.0.0/24"), []string{"node0"})
	sw := newTestSwitch(t, Config{Name: "outbound", Leases: leases, AllowOutbound: true, Logger: infoLogger(t)})
	ours, theirs := socketPairFiles(t)
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.AttachConn("node0", conn); err != nil {
		t.Fatal(err)
	}
	v := bootVM(t, qemu, g, vmOpts{name: "node0", netdev: fdNetdev(3), mac: leases[0].MAC, files: []*os.File{theirs}})
	theirs.Close() // QEMU has its copy
	line := v.waitFor(t, "nsguest: lease", bootTimeout)
	if !strings.Contains(line, "ip=10.42.0.10/24") {
		t.Errorf("lease over an inherited socket: %q", line)
	}
	if m := leaseLine.FindStringSubmatch(line); m != nil {
		t.Logf("QEMU start → lease line %s (guest: link up → ACK %s ms)", time.Since(v.started).Round(time.Millisecond), m[7])
	}
	v.waitFor(t, "nsguest: ready", bootTimeout)
	// The forwarder completes a guest's connection only once its own
	// connection to the destination is made.
	ln, _ := countingListener(t, net.JoinHostPort(a.String(), "0"))
	ask(t, sw.DialContext, "node0", fmt.Sprintf("dial %s 10000", ln.Addr()))
}

// socketPairFiles returns the two ends of a UNIX stream socketpair as files.
func socketPairFiles(tb testing.TB) (*os.File, *os.File) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "socketpair"), os.NewFile(uintptr(fds[1]), "socketpair")
}

// BenchmarkGuestToGuest measures TCP throughput from one guest to another
// (50 MB per iteration, run with -benchtime=1x) through the switch, and,
// as the baseline, over a socketpair joining the two QEMUs directly: the
// difference is the switch's cost, the rest is TCG's.
//
//	go test -run '^$' -bench GuestToGuest -benchtime 1x ./nanoswitch/
func BenchmarkGuestToGuest(b *testing.B) {
	const n = 50_000_000
	qemu, g := buildGuest(b)
	leases := nodeLeases(netip.MustParsePrefix("10.42.0.0/24"), []string{"node0", "node1"})
	run := func(b *testing.B, vms []*testVM) {
		for _, v := range vms {
			v.waitFor(b, "nsguest: ready", bootTimeout)
		}
		b.SetBytes(n)
		b.ResetTimer()
		for range b.N {
			reply := vms[0].consoleAsk(b, fmt.Sprintf("send %s:%d %d", leases[1].Addr, guestSinkPort, n))
			var got, ns int64
			if _, err := fmt.Sscanf(reply, "%d %d", &got, &ns); err != nil || got != n {
				b.Fatalf("send: %q", reply)
			}
			b.ReportMetric(mbps(n, time.Duration(ns)), "guest-MB/s")
		}
	}
	b.Run("switch", func(b *testing.B) {
		sw := newTestSwitch(b, Config{Name: "bench", Leases: leases, Logger: slog.New(slog.DiscardHandler)})
		var vms []*testVM
		for _, l := range leases {
			sock, err := sw.AddPort(l.Hostname, l.MAC)
			if err != nil {
				b.Fatal(err)
			}
			vms = append(vms, bootVM(b, qemu, g, vmOpts{name: l.Hostname, netdev: unixNetdev(sock), mac: l.MAC}))
		}
		run(b, vms)
	})
	b.Run("direct", func(b *testing.B) {
		ends := [2]*os.File{}
		ends[0], ends[1] = socketPairFiles(b)
		var vms []*testVM
		for i, l := range leases {
			vms = append(vms, bootVM(b, qemu, g, vmOpts{name: l.Hostname, netdev: fdNetdev(3), mac: l.MAC,
				files: []*os.File{ends[i]}, append: "nsguest.addr=" + l.Addr.String() + "/24"}))
			ends[i].Close()
		}
		run(b, vms)
	})
}
