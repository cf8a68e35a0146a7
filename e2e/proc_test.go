package e2e

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// proc is a process seen in /proc.
type proc struct {
	PID, PPID, SID int
	Comm           string // /proc/PID/comm (at most 15 bytes)
	Cmdline        string // arguments joined by spaces
}

func (p proc) String() string {
	return fmt.Sprintf("pid %d (%s): %s", p.PID, p.Comm, p.Cmdline)
}

// processes lists every process of the host. Processes that vanish while
// being read are skipped.
func processes() ([]proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// stat: pid (comm) state ppid pgrp session ...; comm may hold spaces
		// and parentheses, so parse after its last ')'.
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 4 || f[0] == "Z" {
			continue // zombies hold nothing and are their parent's to reap
		}
		ppid, _ := strconv.Atoi(f[1])
		sid, _ := strconv.Atoi(f[3])
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, proc{
			PID: pid, PPID: ppid, SID: sid, Comm: s[open+1 : end],
			Cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " ")),
		})
	}
	return out, nil
}

// matching returns the processes for which keep returns true.
func matching(keep func(proc) bool) []proc {
	all, err := processes()
	if err != nil {
		return nil
	}
	var out []proc
	for _, p := range all {
		if p.PID != os.Getpid() && keep(p) {
			out = append(out, p)
		}
	}
	return out
}

// descendants returns the processes below pid (children, grandchildren, ...).
func descendants(pid int) []proc {
	all, err := processes()
	if err != nil {
		return nil
	}
	children := map[int][]proc{}
	for _, p := range all {
		children[p.PPID] = append(children[p.PPID], p)
	}
	var out []proc
	queue := []int{pid}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
		queue = queue[1:]
	}
	return out
}

// role names a helper process of a cluster: "qemu", "swtpm" or
// "nanoswitch" (also under another file name, through $QCLUSTER_NANOSWITCH),
// else its comm.
func role(p proc) string {
	argv0, _, _ := strings.Cut(p.Cmdline, " ")
	switch {
	case p.Comm == "qemu-system-x86":
		return "qemu"
	case p.Comm == "swtpm":
		return "swtpm"
	case p.Comm == "nanoswitch", os.Getenv("QCLUSTER_NANOSWITCH") != "" && argv0 == os.Getenv("QCLUSTER_NANOSWITCH"):
		return "nanoswitch"
	}
	return p.Comm
}

// mentioning matches processes whose command line contains s.
func mentioning(s string) func(proc) bool {
	return func(p proc) bool { return strings.Contains(p.Cmdline, s) }
}

// inSession matches the processes of session sid.
func inSession(sid int) func(proc) bool {
	return func(p proc) bool { return p.SID == sid }
}

// waitGone polls until no process matches keep, failing t at the deadline
// with the ones left. It returns how long it took.
func waitGone(t testing.TB, what string, within time.Duration, keep func(proc) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left := matching(keep)
		if len(left) == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			var lines []string
			for _, p := range left {
				lines = append(lines, p.String())
			}
			t.Errorf("%s: %d process(es) left %s later:\n  %s", what, len(left), within, strings.Join(lines, "\n  "))
			return time.Since(start)
		}
		<-tick.C
	}
}

// listener is a listening TCP socket and the process holding it.
type listener struct {
	Addr netip.AddrPort
	Proc proc
}

// tcpListeners returns the TCP sockets in LISTEN state held by procs, read
// from /proc/net/tcp and tcp6 and mapped to processes through the socket
// inodes of /proc/PID/fd.
func tcpListeners(procs []proc) ([]listener, error) {
	listening := map[string]netip.AddrPort{} // inode → local address
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := readNetTCP(file, listening); err != nil {
			return nil, err
		}
	}
	var out []listener
	for _, p := range procs {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.PID))
		if err != nil {
			continue // exited meanwhile
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.PID, fd.Name()))
			if err != nil {
				continue
			}
			inode, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			if a, ok := listening[strings.TrimSuffix(inode, "]")]; ok {
				out = append(out, listener{Addr: a, Proc: p})
			}
		}
	}
	return out, nil
}

// readNetTCP adds the LISTEN sockets of a /proc/net/tcp{,6} file to m.
// Columns: sl local_address rem_address st ... uid timeout inode; addresses
// are hex in the kernel's byte order (32-bit words in host order, which is
// little-endian on x86-64), state 0A is LISTEN.
func readNetTCP(file string, m map[string]netip.AddrPort) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		a, err := parseProcAddr(fields[1])
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		m[fields[9]] = a
	}
	return sc.Err()
}

// parseProcAddr parses "0100007F:1F90" (or its 32-hex-digit IPv6 form).
func parseProcAddr(s string) (netip.AddrPort, error) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	b, err := hex.DecodeString(host)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	// Each 32-bit word is stored little-endian.
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port in %q", s)
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(p)), nil
}

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0016":                         "0.0.0.0:22",
		"00000000000000000000000001000000:0035": "[::1]:53",
		"0000000000000000FFFF00000100007F:01BB": "[::ffff:127.0.0.1]:443",
	} {
		got, err := parseProcAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}
