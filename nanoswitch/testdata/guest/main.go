// Command guest is nanoswitch's test guest, PID 1 of a tiny VM: it brings
// its NIC up, takes a DHCP lease (nclient4), configures the address, the
// default route, the resolver and its host name from it, prints
//
//	nsguest: lease ip=10.42.0.10/24 gw=10.42.0.1 dns=10.42.0.1 domain=D search=D hostname=node0 dhcp_ms=N
//	nsguest: ready
//
// and then serves two TCP ports for the test, which reaches them through
// the switch:
//
//   - 7000, commands, one per line, each answered with one line starting
//     "ok" or "err":
//     echo WORDS                      → ok WORDS
//     dial HOST:PORT TIMEOUT_MS       → ok LOCAL_ADDR (TCP connect, then close)
//     resolve NAME                    → ok ADDR[,ADDR…] (the system resolver)
//     send HOST:PORT BYTES            → ok BYTES NANOSECONDS (to a sink, counted by it)
//     flood HOST:PORT COUNT SIZE      → ok COUNT (UDP datagrams, broadcast allowed)
//   - 7001, a sink: it reads until end of file, then writes the byte count
//     as 8 bytes big-endian and closes.
//
// The same commands are read from the console, one per line, and answered
// there as "nsguest: reply ok …" or "nsguest: reply err …", for guests the
// test cannot reach over the network. With "nsguest.addr=10.42.0.10/24" on
// the kernel command line the guest skips DHCP and takes that address
// (printing "nsguest: static ip=…").
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/testvm/guest"
)

const (
	cmdPort  = 7000
	sinkPort = 7001
)

func main() {
	guest.Setup()
	if err := run(); err != nil {
		guest.Fatal(err)
	}
	select {}
}

func run() error {
	start := time.Now()
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var nic netlink.Link
	for _, l := range links {
		if l.Type() == "device" && l.Attrs().Name != "lo" {
			nic = l
			break
		}
	}
	if nic == nil {
		return errors.New("no network device")
	}
	if err := netlink.LinkSetUp(nic); err != nil {
		return fmt.Errorf("link %s up: %w", nic.Attrs().Name, err)
	}
	if addr := cmdlineParam("nsguest.addr"); addr != "" {
		ipn, err := netlink.ParseIPNet(addr)
		if err != nil {
			return fmt.Errorf("nsguest.addr=%s: %w", addr, err)
		}
		if err := netlink.AddrAdd(nic, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add address %s: %w", addr, err)
		}
		fmt.Printf("nsguest: static ip=%s\n", addr)
		return serve()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := nclient4.New(nic.Attrs().Name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(30))
	if err != nil {
		return fmt.Errorf("dhcp client: %w", err)
	}
	lease, err := client.Request(ctx)
	client.Close()
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	ack := lease.ACK
	mask := ack.SubnetMask()
	ones, _ := mask.Size()
	if err := netlink.AddrAdd(nic, &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: mask}}); err != nil {
		return fmt.Errorf("add address %s: %w", ack.YourIPAddr, err)
	}
	var gw net.IP
	if r := ack.Router(); len(r) > 0 {
		gw = r[0]
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: nic.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	var search []string
	if s := ack.DomainSearch(); s != nil {
		search = s.Labels
	}
	var resolv strings.Builder
	for _, d := range ack.DNS() {
		fmt.Fprintf(&resolv, "nameserver %s\n", d)
	}
	if len(search) > 0 {
		fmt.Fprintf(&resolv, "search %s\n", strings.Join(search, " "))
	}
	_ = os.MkdirAll("/etc", 0o755)
	if err := os.WriteFile("/etc/resolv.conf", []byte(resolv.String()), 0o644); err != nil {
		return err
	}
	if h := ack.HostName(); h != "" {
		_ = unix.Sethostname([]byte(h))
	}
	fmt.Printf("nsguest: lease ip=%s/%d gw=%s dns=%s domain=%s search=%s hostname=%s dhcp_ms=%d\n",
		ack.YourIPAddr, ones, gw, ack.DNS(), ack.DomainName(), strings.Join(search, ","), ack.HostName(),
		time.Since(start).Milliseconds())
	return serve()
}

// serve starts the command and sink servers and the console reader.
func serve() error {
	cmdLn, err := net.Listen("tcp", fmt.Sprintf(":%d", cmdPort))
	if err != nil {
		return err
	}
	sinkLn, err := net.Listen("tcp", fmt.Sprintf(":%d", sinkPort))
	if err != nil {
		return err
	}
	go acceptLoop(sinkLn, sink)
	go acceptLoop(cmdLn, commands)
	go console()
	fmt.Println("nsguest: ready")
	return nil
}

// cmdlineParam returns the value of key=value on the kernel command line.
func cmdlineParam(key string) string {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// console runs commands read from the console.
func console() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			fmt.Println("nsguest: reply " + run1(f))
		}
	}
}

func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Printf("nsguest: accept: %v\n", err)
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

func sink(c net.Conn) {
	n, _ := io.Copy(io.Discard, c)
	_, _ = c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
}

func commands(c net.Conn) {
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if _, err := fmt.Fprintln(c, run1(strings.Fields(sc.Text()))); err != nil {
			return
		}
	}
}

// run1 runs a command and returns its answer line.
func run1(f []string) string {
	reply, err := command(f)
	if err != nil {
		return "err " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	return "ok " + reply
}

func command(f []string) (string, error) {
	if len(f) == 0 {
		return "", errors.New("empty command")
	}
	args := f[1:]
	want := func(n int) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %d arguments", f[0], n)
		}
		return nil
	}
	num := func(s string) int {
		n, _ := strconv.Atoi(s)
		return n
	}
	switch f[0] {
	case "echo":
		return strings.Join(args, " "), nil
	case "dial":
		if err := want(2); err != nil {
			return "", err
		}
		c, err := net.DialTimeout("tcp", args[0], time.Duration(num(args[1]))*time.Millisecond)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	case "resolve":
		if err := want(1); err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
		if err != nil {
			return "", err
		}
		return strings.Join(addrs, ","), nil
	case "send":
		if err := want(2); err != nil {
			return "", err
		}
		return send(args[0], int64(num(args[1])))
	case "flood":
		if err := want(3); err != nil {
			return "", err
		}
		return flood(args[0], num(args[1]), num(args[2]))
	}
	return "", fmt.Errorf("unknown command %q", f[0])
}

// send writes n bytes to a sink and returns the count the sink saw and the
// time from connect to its answer.
func send(addr string, n int64) (string, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		chunk := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:chunk]); err != nil {
			return "", err
		}
		left -= chunk
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return "", fmt.Errorf("read sink count: %w", err)
	}
	return fmt.Sprintf("%d %d", binary.BigEndian.Uint64(got[:]), time.Since(start).Nanoseconds()), nil
}

// flood sends count UDP datagrams of size bytes to addr (which may be a
// broadcast address).
func flood(addr string, count, size int) (string, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", ":0")
	if err != nil {
		return "", err
	}
	defer pc.Close()
	to, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return "", err
	}
	buf := make([]byte, size)
	for i := 0; i < count; i++ {
		if _, err := pc.WriteTo(buf, to); err != nil {
			return "", fmt.Errorf("datagram %d: %w", i, err)
		}
	}
	return strconv.Itoa(count), nil
}
