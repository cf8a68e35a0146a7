package nanoswitch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("nanoswitch: switch closed")

// ErrNoPort is returned for a port name the switch does not have.
var ErrNoPort = errors.New("no such port")

// gatewayMAC is the MAC of the gateway's stack: locally administered,
// unicast, the same in every cluster (clusters never share a segment).
var gatewayMAC = net.HardwareAddr{0x02, 0x71, 0x63, 0x00, 0x00, 0x01}

// Switch is one cluster's virtual network. Its methods are safe for
// concurrent use.
type Switch struct {
	cfg    Config
	tmpDir string // Dir, when New made it; removed by Close

	portMu sync.Mutex // serialises AddPort and AttachConn's port creation
	mu     sync.Mutex
	closed bool
	byName map[string]*port
	wg     sync.WaitGroup // every goroutine the switch started

	ports  atomic.Pointer[[]*port] // every port, for flooding; replaced whole
	macMu  sync.RWMutex
	macs   map[macKey]macEntry
	gw     *port
	gwLink *link // the gateway's only link, which never changes
	gwMAC  macKey

	faultMu sync.Mutex
	faults  atomic.Pointer[faultTable] // nil: no faults

	leaseMu   sync.Mutex
	leases    atomic.Pointer[leaseTable]
	strangers sync.Map // MACs without a lease that asked for one (logged once)

	stack    *stack.Stack
	services []func() error // closers of the servers on the stack

	socks     io.Closer // the host-access port: SOCKS5 and HTTP CONNECT
	socksInfo SOCKSInfo
	control   *grpc.Server
	controlLn net.Listener
}

// New starts a switch: the gateway's network stack with DHCP and DNS, and,
// as configured, SOCKS5 and the control socket. ctx bounds the start-up
// only; the switch runs until Close.
func New(ctx context.Context, cfg Config) (*Switch, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("nanoswitch: %w", err)
	}
	s := &Switch{
		cfg:    cfg,
		byName: map[string]*port{},
		macs:   map[macKey]macEntry{},
		gwMAC:  keyOf(gatewayMAC),
	}
	s.ports.Store(&[]*port{})
	s.leases.Store(&leaseTable{})
	steps := []struct {
		name string
		fn   func() error
	}{
		{"leases", s.initLeases},
		{"state directory", s.initDir},
		{"gateway stack", s.startStack},
		{"dhcp", s.startDHCP},
		{"dns", s.startDNS},
		{"socks5", s.startSOCKS},
		{"control socket", s.startControl},
	}
	for _, st := range steps {
		err := ctx.Err()
		if err == nil {
			err = st.fn()
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("nanoswitch %s: %s: %w", cfg.Name, st.name, err)
		}
	}
	cfg.Logger.Info("switch started", "cluster", cfg.Name, "subnet", cfg.Subnet, "gateway", cfg.Gateway,
		"domain", cfg.Domain, "hermetic", !cfg.AllowOutbound, "dir", s.cfg.Dir)
	return s, nil
}

func (s *Switch) initLeases() error {
	for _, l := range s.cfg.Leases {
		if err := s.AddLease(l); err != nil {
			return err
		}
	}
	return nil
}

func (s *Switch) initDir() error {
	if s.cfg.Dir == "" {
		d, err := os.MkdirTemp("", "nanoswitch-")
		if err != nil {
			return err
		}
		s.tmpDir, s.cfg.Dir = d, d
	} else if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return err
	}
	if s.cfg.PcapDir != "" {
		if err := os.MkdirAll(s.cfg.PcapDir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// goroutines registers n goroutines about to start, unless the switch is
// closed.
func (s *Switch) goroutines(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.wg.Add(n)
	return nil
}

// spawn runs fn on a goroutine that Close waits for, or returns ErrClosed
// once the switch is closed.
func (s *Switch) spawn(fn func()) error {
	if err := s.goroutines(1); err != nil {
		return err
	}
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return nil
}

// acceptAll hands each connection ln accepts to handle, until ln is closed
// or handle fails (then the connection is closed too).
func acceptAll(ln net.Listener, handle func(net.Conn) error) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed
		}
		if err := handle(c); err != nil {
			c.Close()
			return
		}
	}
}

func (s *Switch) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// port returns the port named name, or nil.
func (s *Switch) port(name string) *port {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byName[name]
}

// addPort registers a new port.
func (s *Switch) addPort(p *port) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.byName[p.name]; ok {
		return fmt.Errorf("port %q exists", p.name)
	}
	if p.mac != nil {
		s.macMu.Lock()
		defer s.macMu.Unlock()
		if e, ok := s.macs[keyOf(p.mac)]; ok && e.static {
			return fmt.Errorf("MAC %s belongs to port %s", p.mac, e.p.name)
		}
		s.macs[keyOf(p.mac)] = macEntry{p: p, static: true}
	}
	s.byName[p.name] = p
	all := append(slices.Clone(*s.ports.Load()), p)
	s.ports.Store(&all)
	return nil
}

// newPort makes a port and its capture file.
func (s *Switch) newPort(name string, mac net.HardwareAddr) (*port, error) {
	p := &port{sw: s, name: name, mac: slices.Clone(mac)}
	if s.cfg.PcapDir != "" {
		w, err := newPcap(filepath.Join(s.cfg.PcapDir, name+".pcap"))
		if err != nil {
			return nil, err
		}
		p.pcap = w
	}
	return p, nil
}

// AddPort adds a port named name and returns the path of its UNIX socket
// ("<Dir>/<name>.sock"), for QEMU's
// "-netdev stream,id=n0,server=off,addr.type=unix,addr.path=PATH". The port
// takes every connection to that socket, one at a time: a new connection
// (QEMU restarted) replaces the previous one. mac, if not nil, is the MAC
// the VM uses: the switch knows where it is before the VM sends anything,
// and no other port can claim it.
func (s *Switch) AddPort(name string, mac net.HardwareAddr) (string, error) {
	what := fmt.Sprintf("add port %s", name)
	if s.isClosed() {
		return "", fmt.Errorf("%s: %w", what, ErrClosed)
	}
	if err := s.checkPortName(name, mac); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	path := filepath.Join(s.cfg.Dir, name+".sock")
	if len(path) > 107 {
		return "", fmt.Errorf("%s: socket path %s is %d bytes, UNIX sockets allow 107: use a shorter Dir", what, path, len(path))
	}
	s.portMu.Lock() // one port creation at a time: no races on names and paths
	defer s.portMu.Unlock()
	if s.port(name) != nil {
		return "", fmt.Errorf("%s: port exists", what)
	}
	if fi, err := os.Lstat(path); err == nil { // left over from an earlier switch
		if fi.Mode().Type() != fs.ModeSocket {
			return "", fmt.Errorf("%s: %s exists and is not a socket", what, path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	p, err := s.newPort(name, mac)
	if err == nil {
		p.path, p.ln = path, ln
		if err = s.addPort(p); err != nil && p.pcap != nil {
			_ = p.pcap.close()
		}
	}
	if err != nil {
		ln.Close()
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if err := s.spawn(func() { acceptAll(ln, p.attach) }); err != nil {
		return "", fmt.Errorf("%s: %w", what, err) // Close closes ln
	}
	s.cfg.Logger.Info("port added", "port", name, "mac", macString(mac), "socket", path)
	return path, nil
}

func (s *Switch) checkPortName(name string, mac net.HardwareAddr) error {
	if err := checkLabel(name); err != nil {
		return err
	}
	if name == GatewayPort {
		return fmt.Errorf("name %q is the gateway's", name)
	}
	if mac != nil && (len(mac) != 6 || mac[0]&1 != 0) {
		return fmt.Errorf("MAC %s: want a unicast Ethernet address", mac)
	}
	return nil
}

// AttachConn attaches conn as the peer of the port named name, for a VM
// given one end of a socketpair (QEMU "-netdev stream,addr.type=fd" or
// "-netdev socket,fd=N"). The port is created if it does not exist, else
// its current peer is replaced. Once attached, conn belongs to the switch,
// which closes it; after an error it is still the caller's.
func (s *Switch) AttachConn(name string, conn net.Conn) error {
	what := fmt.Sprintf("attach connection to port %s", name)
	if err := s.checkPortName(name, nil); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	s.portMu.Lock()
	p := s.port(name)
	if p == nil {
		var err error
		if p, err = s.newPort(name, nil); err == nil {
			if err = s.addPort(p); err != nil && p.pcap != nil {
				_ = p.pcap.close()
			}
		}
		if err != nil {
			s.portMu.Unlock()
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	s.portMu.Unlock()
	if err := p.attach(conn); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Ports returns the status of every port, the gateway's included, sorted
// by name.
func (s *Switch) Ports() []PortStatus {
	var out []PortStatus
	for _, p := range *s.ports.Load() {
		out = append(out, p.status())
	}
	slices.SortFunc(out, func(a, b PortStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Counters returns the counters of the port named name.
func (s *Switch) Counters(name string) (Counters, error) {
	p := s.port(name)
	if p == nil {
		return Counters{}, fmt.Errorf("counters: %w %q", ErrNoPort, name)
	}
	return p.c.snapshot(), nil
}

// Gateway returns the switch's own address (DHCP, DNS, default route).
func (s *Switch) Gateway() netip.Addr { return s.cfg.Gateway }

// Subnet returns the cluster's subnet.
func (s *Switch) Subnet() netip.Prefix { return s.cfg.Subnet }

// Domain returns the DNS domain node names live under.
func (s *Switch) Domain() string { return s.cfg.Domain }

// Dir returns the directory of the ports' sockets.
func (s *Switch) Dir() string { return s.cfg.Dir }

// Close stops the switch: it closes every listener and connection, waits
// for all of its goroutines, closes the capture files and removes the
// sockets (and Dir if New made it). It returns the first capture error.
// Calling it again does nothing.
func (s *Switch) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ports := slices.Clone(*s.ports.Load())
	s.mu.Unlock()

	if s.control != nil {
		s.control.Stop()
	}
	if s.controlLn != nil {
		s.controlLn.Close()
	}
	if s.socks != nil {
		s.socks.Close()
	}
	for _, p := range ports {
		if p.ln != nil {
			p.ln.Close() // removes the socket file
		}
		if l := p.cur.Load(); l != nil {
			l.close()
		}
	}
	if s.gwLink != nil {
		<-s.gwLink.stopped // the stack's NIC is about to go: stop feeding it
	}
	for i := len(s.services) - 1; i >= 0; i-- {
		_ = s.services[i]()
	}
	if s.stack != nil {
		// Close aborts open endpoints only; connections already closed but
		// still finishing (FIN_WAIT, TIME_WAIT, towards a VM that is gone)
		// would hold Wait for their whole timeouts.
		for _, e := range s.stack.CleanupEndpoints() {
			e.Abort()
		}
		s.stack.Close()
		s.stack.Wait()
	}
	s.wg.Wait()
	var errs []error
	for _, p := range ports {
		if p.pcap != nil {
			errs = append(errs, p.pcap.close())
		}
	}
	if s.tmpDir != "" {
		errs = append(errs, os.RemoveAll(s.tmpDir))
	}
	s.cfg.Logger.Info("switch stopped", "cluster", s.cfg.Name)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nanoswitch %s: close: %w", s.cfg.Name, err)
	}
	return nil
}

// macString formats a MAC for logs ("" for none).
func macString(mac net.HardwareAddr) string {
	if mac == nil {
		return ""
	}
	return mac.String()
}
