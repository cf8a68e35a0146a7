// Package switchmain is the nanoswitch command: Main runs one cluster's
// virtual network (package nanoswitch) as a helper process: a port socket
// per node, DHCP, DNS, SOCKS5 for the host, and the gRPC control API on a
// UNIX socket. nanoswitch/cmd/nanoswitch is Main as a program of its own;
// the launcher and test binaries run it by re-executing themselves with Arg
// first (see Arg), so that they need no second binary.
//
// Once it serves it writes a ready file (JSON, client.Ready) naming the
// control socket, the SOCKS5 address and the credentials file. It stops on
// SIGTERM or SIGINT, when its parent dies (PR_SET_PDEATHSIG, set on itself
// at start), and, when its stdin is a pipe or a socket, when that reaches
// end of file: a launcher keeps the write end of a pipe to its stdin, so
// the switch follows it even where the death signal does not fire (the
// signal follows the parent thread, not the parent process). A terminal or
// /dev/null on stdin is not watched. On the way out it removes its sockets,
// the ready file and the credentials file.
package switchmain

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/nanoswitch"
	"github.com/qcluster/qcluster/nanoswitch/client"
)

// Arg, as a program's first argument, makes it the switch: a program that
// offers itself as the switch checks for it first thing in main (or
// TestMain) and then runs os.Exit(Main(os.Args[2:])). An argument rather
// than an environment variable: it shows in ps, and no child inherits it.
const Arg = "__nanoswitch"

// Command is the argv prefix that runs the calling program as the switch
// (cluster.Options.SwitchCommand): the program itself, then Arg. Only for
// programs that check for Arg as described there.
func Command() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("switch command: %w", err)
	}
	return []string{exe, Arg}, nil
}

const usage = `Usage: nanoswitch --dir DIR [flags]

Runs a cluster's virtual switch until SIGTERM, the death of its parent, or
end of file on its stdin (when stdin is a pipe). Each --node gets a port
socket DIR/NAME.sock and a static lease; DNS resolves NAME and
NAME.CLUSTER.qcluster.test. A node without an address, the i-th in --node
order, gets 10.42.0.(10+i) (with the default subnet).

Flags:
`

const example = `
Example: two VMs by hand (the MACs are in DIR/ready.json when not given):

  nanoswitch --dir /tmp/ns --cluster demo \
      --node node0=52:54:00:00:00:10 --node node1=52:54:00:00:00:11 &
  qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nodefaults -display none \
      -serial stdio -kernel vmlinuz -initrd initrd.img -append console=ttyS0 \
      -device virtio-rng-pci \
      -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/ns/node0.sock \
      -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:10
  # the same for node1 with node1.sock and its MAC; then, from the host:
  curl --proxy "socks5h://$(cat /tmp/ns/socks.credentials)@$(jq -r .socks_address /tmp/ns/ready.json)" \
      http://node0:8080/
`

// node is one --node NAME[=MAC[=IP]].
type node struct {
	name string
	mac  net.HardwareAddr
	addr netip.Addr
}

// nodeFlags collects --node flags.
type nodeFlags []node

func (n *nodeFlags) String() string { return "" }

func (n *nodeFlags) Set(v string) error {
	name, rest, _ := strings.Cut(v, "=")
	macStr, addrStr, _ := strings.Cut(rest, "=")
	nd := node{name: name}
	var err error
	if macStr != "" {
		if nd.mac, err = net.ParseMAC(macStr); err != nil {
			return err
		}
	}
	if addrStr != "" {
		if nd.addr, err = netip.ParseAddr(addrStr); err != nil {
			return err
		}
	}
	*n = append(*n, nd)
	return nil
}

type options struct {
	dir, cluster, domain, readyFile, logLevel string
	subnet                                    string
	nodes                                     nodeFlags
	socks, allowOutbound, pcap                bool
}

// Main runs the nanoswitch command with args (without the program name) and
// returns its exit status.
func Main(args []string) int {
	// Stay on this thread: PR_SET_PDEATHSIG is a property of the thread
	// that sets it. Main returns only for the program to exit.
	runtime.LockOSThread()
	// Show as nanoswitch in ps and /proc, also when a launcher or a test
	// binary runs as the switch. Best effort.
	_ = os.WriteFile("/proc/self/comm", []byte("nanoswitch"), 0)
	var o options
	fl := flag.NewFlagSet("nanoswitch", flag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), usage)
		fl.PrintDefaults()
		fmt.Fprint(fl.Output(), example)
	}
	fl.StringVar(&o.dir, "dir", "", "state `directory` (created 0700): port sockets, control.sock, ready.json, socks.credentials; keep it short (socket paths are limited to 107 bytes)")
	fl.StringVar(&o.cluster, "cluster", "qcluster", "cluster `name`")
	fl.StringVar(&o.domain, "domain", "", "DNS `domain` of the nodes (default CLUSTER.qcluster.test)")
	fl.StringVar(&o.subnet, "subnet", "10.42.0.0/24", "IPv4 `prefix` of the cluster network; the gateway is its first host")
	fl.Var(&o.nodes, "node", "a node `NAME[=MAC[=IP]]`, repeatable; without a MAC one is derived from the cluster name and position, without an IP one from the position")
	fl.BoolVar(&o.socks, "socks", true, "serve SOCKS5 on 127.0.0.1 (ephemeral port) with generated credentials")
	fl.BoolVar(&o.allowOutbound, "allow-outbound", false, "let guests reach the host's networks and resolver (default: hermetic)")
	fl.BoolVar(&o.pcap, "pcap", false, "capture every port's traffic to DIR/pcap/PORT.pcap")
	fl.StringVar(&o.readyFile, "ready-file", "", "where to write the ready JSON (default DIR/ready.json)")
	fl.StringVar(&o.logLevel, "log-level", "info", "log `level` on stderr: debug, info, warn, error")
	fl.SetOutput(io.Discard) // errors are reported below, in one line
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fl.SetOutput(os.Stdout)
			fl.Usage()
			return 0
		}
		fmt.Fprintf(os.Stderr, "nanoswitch: %v (see --help)\n", err)
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "nanoswitch: unexpected arguments %q (see --help)\n", fl.Args())
		return 2
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "nanoswitch: %v\n", err)
		return 1
	}
	return 0
}

func run(o options) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", o.logLevel, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if o.dir == "" {
		return errors.New("--dir is required (see --help)")
	}
	subnet, err := netip.ParsePrefix(o.subnet)
	if err != nil {
		return fmt.Errorf("--subnet: %w", err)
	}
	leases, err := planLeases(o.cluster, subnet, o.nodes)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := followParent(cancel); err != nil {
		return err
	}

	cfg := nanoswitch.Config{
		Name:          o.cluster,
		Domain:        o.domain,
		Subnet:        subnet,
		Leases:        leases,
		Dir:           o.dir,
		ControlSocket: filepath.Join(o.dir, "control.sock"),
		AllowOutbound: o.allowOutbound,
		SOCKS:         o.socks,
		Logger:        log,
	}
	if o.pcap {
		cfg.PcapDir = filepath.Join(o.dir, "pcap")
	}
	if _, err := os.Stat(o.dir); errors.Is(err, fs.ErrNotExist) {
		defer os.Remove(o.dir) // only if empty: captures stay
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	sw, err := nanoswitch.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer sw.Close()

	ready := client.Ready{
		PID: os.Getpid(), Cluster: o.cluster, Domain: sw.Domain(), Subnet: sw.Subnet().String(),
		Gateway: sw.Gateway().String(), ControlSocket: cfg.ControlSocket,
	}
	for _, l := range leases {
		path, err := sw.AddPort(l.Hostname, l.MAC)
		if err != nil {
			return err
		}
		ready.Ports = append(ready.Ports, client.ReadyPort{
			Name: l.Hostname, MAC: l.MAC.String(), Address: l.Addr.String(), Hostname: l.Hostname, Socket: path})
		log.Info("node", "name", l.Hostname, "mac", l.MAC.String(), "addr", l.Addr, "socket", path)
	}
	var created []string
	defer func() {
		for _, p := range created {
			_ = os.Remove(p)
		}
	}()
	if info, ok := sw.SOCKS(); ok {
		ready.SOCKSAddress = info.Addr.String()
		ready.CredentialsFile = filepath.Join(o.dir, "socks.credentials")
		if err := client.WriteCredentials(ready.CredentialsFile, info.Username, info.Password); err != nil {
			return err
		}
		created = append(created, ready.CredentialsFile)
	}
	readyFile := o.readyFile
	if readyFile == "" {
		readyFile = filepath.Join(o.dir, "ready.json")
	}
	if err := client.WriteReady(readyFile, ready); err != nil {
		return err
	}
	created = append(created, readyFile)
	log.Info("ready", "file", readyFile, "socks", ready.SOCKSAddress, "control", ready.ControlSocket)

	<-ctx.Done()
	log.Info("stopping", "why", context.Cause(ctx))
	// A helper that outlives its launcher is worse than an unclean stop:
	// give the switch a bounded time to close, then exit regardless.
	done := make(chan error, 1)
	go func() { done <- sw.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(shutdownTimeout):
		return fmt.Errorf("switch did not stop within %s; exiting anyway", shutdownTimeout)
	}
}

// shutdownTimeout bounds Close once the switch is told to stop.
const shutdownTimeout = 3 * time.Second

// errParentGone ends the switch when the process that started it is gone.
var errParentGone = errors.New("parent process gone")

// followParent arranges for stop to be called when the parent dies: a
// death signal (SIGTERM, which the signal context turns into a stop), and,
// when stdin is a pipe or socket, its end of file.
func followParent(stop context.CancelCauseFunc) error {
	if ppid := os.Getppid(); ppid != 1 {
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
			return fmt.Errorf("set parent death signal: %w", err)
		}
		if os.Getppid() != ppid { // died before the signal was armed
			return errParentGone
		}
	}
	fi, err := os.Stdin.Stat()
	if err != nil {
		return nil // no stdin at all: nothing to watch
	}
	if t := fi.Mode().Type(); t&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return nil
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop(fmt.Errorf("stdin closed: %w", errParentGone))
	}()
	return nil
}

// firstNodeHost is the host number of the first node without an address:
// the i-th such node gets host firstNodeHost+i of the subnet (10.42.0.10,
// .11, …). A cluster launcher passes every address itself.
const firstNodeHost = 10

// NodeMAC is the MAC of the i-th node when --node gives none: QEMU's
// 52:54:00 prefix (locally administered, unicast) and three bytes of
// SHA-256("qcluster mac <cluster> <i>"), so it is stable across runs.
func NodeMAC(cluster string, i int) net.HardwareAddr {
	h := sha256.Sum256(fmt.Appendf(nil, "qcluster mac %s %d", cluster, i))
	return net.HardwareAddr{0x52, 0x54, 0x00, h[0], h[1], h[2]}
}

// planLeases makes the nodes' static leases, filling in what --node left
// out from the node's position.
func planLeases(cluster string, subnet netip.Prefix, nodes []node) ([]nanoswitch.Lease, error) {
	if !subnet.Addr().Is4() {
		return nil, fmt.Errorf("--subnet %s: want IPv4", subnet)
	}
	subnet = subnet.Masked()
	leases := make([]nanoswitch.Lease, 0, len(nodes))
	for i, n := range nodes {
		l := nanoswitch.Lease{MAC: n.mac, Addr: n.addr, Hostname: n.name}
		if l.MAC == nil {
			l.MAC = NodeMAC(cluster, i)
		}
		if !l.Addr.IsValid() {
			b := subnet.Addr().As4()
			base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			v, last := base+uint32(firstNodeHost+i), base|(1<<(32-subnet.Bits())-1)
			if v >= last {
				return nil, fmt.Errorf("--node %s: subnet %s has no room for %d nodes from host .%d", n.name, subnet, len(nodes), firstNodeHost)
			}
			l.Addr = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
		leases = append(leases, l)
	}
	return leases, nil
}
