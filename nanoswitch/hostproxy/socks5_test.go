package hostproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// FuzzHandshake: the server's parsers take any bytes without panicking, and
// what they accept re-encodes to the bytes they consumed.
func FuzzHandshake(f *testing.F) {
	f.Add(append(append(encodeGreeting(0, 2), encodeUserPass("qcluster", "secret")...),
		encodeRequest(request{cmd: 1, host: "node0", port: 7000})...))
	f.Add(append(append(encodeGreeting(2), encodeUserPass("", "")...),
		encodeRequest(request{cmd: 1, addr: netip.MustParseAddr("10.42.0.10"), port: 1})...))
	f.Add(append(append(encodeGreeting(2), encodeUserPass("u", "p")...),
		encodeRequest(request{cmd: 3, addr: netip.MustParseAddr("::1"), port: 80})...))
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
		req := encodeRequest(q)
		again := append(append(encodeGreeting(methods...), encodeUserPass(user, pass)...), req...)
		consumed := data[:len(data)-r.Len()]
		rsv := len(again) - len(req) + 2 // the reserved byte is not kept
		again[rsv] = consumed[rsv]
		if !bytes.Equal(again, consumed) {
			t.Fatalf("re-encoded %x, consumed %x", again, consumed)
		}
	})
}

// FuzzReply: the client's reply parser takes any bytes without panicking
// and reads IPv4 replies back as written.
func FuzzReply(f *testing.F) {
	f.Add(encodeReply(ReplySucceeded, netip.MustParseAddrPort("10.42.0.1:4242")))
	f.Add([]byte{5, 0, 0, 3, 4, 'h', 'o', 's', 't', 0, 80})
	f.Add([]byte{5, 1, 0, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		code, bound, err := readReply(bytes.NewReader(data))
		if err != nil || data[3] != atypIPv4 {
			return
		}
		again := encodeReply(code, bound)
		again[2] = data[2] // reserved
		if !bytes.Equal(again, data[:len(again)]) {
			t.Fatalf("reply %x read as %d %s", data, code, bound)
		}
	})
}

// startSOCKS serves a SOCKSServer with testConfig.
func startSOCKS(t *testing.T) (*SOCKSServer, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	echo := echoServer(t)
	s := &SOCKSServer{Config: testConfig(echo)}
	return s, serve(t, s), echo
}

func echoOnce(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	if _, err := fmt.Fprintln(c, "ping"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
}

func TestConnect(t *testing.T) {
	_, addr, echo := startSOCKS(t)
	d := &SOCKSDialer{Server: addr.String(), Username: "user", Password: "secret"}
	for _, target := range []string{echo.String(), net.JoinHostPort("backend", fmt.Sprint(echo.Port()))} {
		c, err := d.DialContext(t.Context(), "tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c)
	}
	// An independent client: golang.org/x/net/proxy.
	xd, err := proxy.SOCKS5("tcp", addr.String(), &proxy.Auth{User: "user", Password: "secret"}, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := xd.(proxy.ContextDialer).DialContext(t.Context(), "tcp", net.JoinHostPort("backend", fmt.Sprint(echo.Port())))
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c)
}

func TestRefusals(t *testing.T) {
	_, addr, _ := startSOCKS(t)
	for _, c := range []struct {
		user, pass, target string
		want               ReplyError
	}{
		{"user", "guess", "backend:1", ReplyError{Code: 0xff, Auth: true}},
		{"root", "secret", "backend:1", ReplyError{Code: 0xff, Auth: true}},
		{"user", "secret", "127.0.0.1:22", ReplyError{Code: ReplyNotAllowed}},
		{"user", "secret", "[::1]:22", ReplyError{Code: ReplyNotAllowed}},
		{"user", "secret", "refused:22", ReplyError{Code: ReplyConnRefused}},
		{"user", "secret", "slow:22", ReplyError{Code: ReplyHostUnreachable}},
	} {
		d := &SOCKSDialer{Server: addr.String(), Username: c.user, Password: c.pass}
		_, err := d.DialContext(t.Context(), "tcp", c.target)
		var re *ReplyError
		if !errors.As(err, &re) || *re != c.want {
			t.Errorf("%s:%s to %s: %v, want %v", c.user, c.pass, c.target, err, &c.want)
		}
	}
	// A client that offers no authentication, and one that asks for BIND.
	for _, msg := range [][]byte{
		encodeGreeting(MethodNoAuth),
		append(append(encodeGreeting(MethodUserPass), encodeUserPass("user", "secret")...),
			encodeRequest(request{cmd: CmdBind, host: "backend", port: 1})...),
	} {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		want := []byte{SOCKSVersion, MethodNone}
		if msg[2] == MethodUserPass {
			want = append([]byte{SOCKSVersion, MethodUserPass, authVersion, 0}, encodeReply(ReplyCmdNotSupported, netip.AddrPort{})...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("sent %x: got %x, want %x", msg, got, want)
		}
	}
}

func TestCloseEndsSessions(t *testing.T) {
	s, addr, echo := startSOCKS(t)
	d := &SOCKSDialer{Server: addr.String(), Username: "user", Password: "secret"}
	c, err := d.DialContext(t.Context(), "tcp", echo.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.Close() // waits for the session's goroutines
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("session still open after Close")
	}
	if _, err := d.DialContext(t.Context(), "tcp", echo.String()); err == nil {
		t.Error("dial after Close succeeded")
	}
}
