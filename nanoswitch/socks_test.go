package nanoswitch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// Client side of the SOCKS5 handshake, for the tests.

func encodeGreeting(methods ...byte) []byte {
	return append([]byte{socksVersion, byte(len(methods))}, methods...)
}

func encodeUserPass(user, pass string) []byte {
	b := append([]byte{socksAuthVersion, byte(len(user))}, user...)
	return append(append(b, byte(len(pass))), pass...)
}

func encodeRequest(q socksRequest) []byte {
	b := []byte{socksVersion, q.cmd, 0}
	switch {
	case q.host != "":
		b = append(append(b, socksAtypDomain, byte(len(q.host))), q.host...)
	case q.addr.Is4():
		b = append(append(b, socksAtypIPv4), q.addr.AsSlice()...)
	default:
		b = append(append(b, socksAtypIPv6), q.addr.AsSlice()...)
	}
	return binary.BigEndian.AppendUint16(b, q.port)
}

// FuzzSOCKSHandshake: the server's parsers take any bytes without panicking,
// and what they accept re-encodes to the bytes they consumed.
func FuzzSOCKSHandshake(f *testing.F) {
	valid := append(append(encodeGreeting(0, 2), encodeUserPass("qcluster", "secret")...),
		encodeRequest(socksRequest{cmd: 1, host: "node0", port: 7000})...)
	f.Add(valid)
	f.Add(append(append(encodeGreeting(2), encodeUserPass("", "")...),
		encodeRequest(socksRequest{cmd: 1, addr: netip.MustParseAddr("10.42.0.10"), port: 1})...))
	f.Add(append(append(encodeGreeting(2), encodeUserPass("u", "p")...),
		encodeRequest(socksRequest{cmd: 3, addr: netip.MustParseAddr("::1"), port: 80})...))
	f.Add([]byte{5, 0})
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		methods, err := readGreeting(r)
		if err != nil {
			return
		}
		user, pass, err := readUserPass(r)
		if err != nil {
			return
		}
		q, err := readRequest(r)
		if err != nil {
			return
		}
		again := append(append(encodeGreeting(methods...), encodeUserPass(user, pass)...), encodeRequest(q)...)
		consumed := data[:len(data)-r.Len()]
		// The reserved byte of the request is not kept.
		rsv := len(again) - len(encodeRequest(q)) + 2
		again[rsv] = consumed[rsv]
		if !bytes.Equal(again, consumed) {
			t.Fatalf("re-encoded %x, consumed %x", again, consumed)
		}
	})
}

// socksExchange runs a raw SOCKS5 client through the greeting and, if the
// method is accepted, authentication and a request, and returns the
// server's answers.
func socksExchange(t *testing.T, addr netip.AddrPort, methods []byte, user, pass string, q socksRequest) (method, auth, reply byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	read := func(n int) []byte {
		b := make([]byte, n)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("socks5: %v", err)
		}
		return b
	}
	if _, err := c.Write(encodeGreeting(methods...)); err != nil {
		t.Fatal(err)
	}
	if method = read(2)[1]; method != socksMethodUserPass {
		return method, 0, 0
	}
	if _, err := c.Write(encodeUserPass(user, pass)); err != nil {
		t.Fatal(err)
	}
	if auth = read(2)[1]; auth != 0 {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("connection still open after failed authentication")
		}
		return method, auth, 0
	}
	if _, err := c.Write(encodeRequest(q)); err != nil {
		t.Fatal(err)
	}
	r := read(10)
	return method, auth, r[1]
}

// TestSOCKSRefusals needs no VM: every request here is refused before a
// node would be dialled.
func TestSOCKSRefusals(t *testing.T) {
	sw := newTestSwitch(t, Config{Name: "socks", SOCKS: true, SOCKSPassword: "secret",
		Leases: []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"}}})
	info, ok := sw.SOCKS()
	if !ok || !info.Addr.Addr().IsLoopback() || info.Username != "socks" || info.Password != "secret" {
		t.Fatalf("socks info %+v %v", info, ok)
	}
	connect := func(host string, a string) socksRequest {
		q := socksRequest{cmd: socksCmdConnect, host: host, port: 80}
		if a != "" {
			q.addr = netip.MustParseAddr(a)
		}
		return q
	}
	for _, c := range []struct {
		name              string
		methods           []byte
		user, pass        string
		q                 socksRequest
		method, auth, rep byte
	}{
		{"no authentication offered", []byte{0}, "", "", socksRequest{}, socksNoMethod, 0, 0},
		{"wrong password", []byte{0, 2}, "socks", "guess", socksRequest{}, 2, 1, 0},
		{"wrong user", []byte{2}, "root", "secret", socksRequest{}, 2, 1, 0},
		{"host loopback", []byte{2}, "socks", "secret", connect("", "127.0.0.1"), 2, 0, socksNotAllowed},
		{"outside address", []byte{2}, "socks", "secret", connect("", "8.8.8.8"), 2, 0, socksNotAllowed},
		{"gateway", []byte{2}, "socks", "secret", connect("", "10.42.0.1"), 2, 0, socksNotAllowed},
		{"broadcast", []byte{2}, "socks", "secret", connect("", "10.42.0.255"), 2, 0, socksNotAllowed},
		{"ipv6", []byte{2}, "socks", "secret", connect("", "::1"), 2, 0, socksNotAllowed},
		{"outside name", []byte{2}, "socks", "secret", connect("example.com", ""), 2, 0, socksNotAllowed},
		{"unknown node", []byte{2}, "socks", "secret", connect("node9.socks.qcluster.test", ""), 2, 0, socksHostUnreachable},
		{"bind", []byte{2}, "socks", "secret", socksRequest{cmd: 2, host: "node0", port: 80}, 2, 0, socksCmdNotSupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, a, r := socksExchange(t, info.Addr, c.methods, c.user, c.pass, c.q)
			if m != c.method || a != c.auth || r != c.rep {
				t.Errorf("got method %#x auth %d reply %#x, want %#x %d %#x", m, a, r, c.method, c.auth, c.rep)
			}
		})
	}
}

func TestDialContextRefusals(t *testing.T) {
	sw := newTestSwitch(t, Config{Name: "dial",
		Leases: []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"}}})
	for addr, want := range map[string]error{
		"127.0.0.1:22":                ErrNotCluster,
		"10.42.0.1:53":                ErrNotCluster,
		"10.42.1.10:22":               ErrNotCluster,
		"example.com:80":              ErrNotCluster,
		"node1:22":                    ErrUnknownHost,
		"node1.dial.qcluster.test:22": ErrUnknownHost,
	} {
		if _, err := sw.DialContext(t.Context(), "tcp", addr); !errors.Is(err, want) {
			t.Errorf("dial %s: %v, want %v", addr, err, want)
		}
	}
	for _, bad := range []struct{ network, addr string }{
		{"tcp", "node0"}, {"tcp", "node0:0"}, {"tcp", "node0:http"}, {"unix", "node0:22"}, {"tcp6", "node0:22"},
	} {
		if _, err := sw.DialContext(t.Context(), bad.network, bad.addr); err == nil {
			t.Errorf("dial %s %s: no error", bad.network, bad.addr)
		}
	}
}
