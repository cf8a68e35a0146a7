package hostproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestMux: connections go to the half their first byte picks, the byte is
// read again there, and a client that says nothing holds up no one.
func TestMux(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, func(b byte) bool { return b == 5 }, 0)
	done := make(chan error)
	go func() { done <- m.Serve() }()

	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, c := range []struct {
		msg string
		ln  net.Listener
	}{{"\x05hello", m.Matched()}, {"CONNECT", m.Other()}} {
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(cl, c.msg); err != nil {
			t.Fatal(err)
		}
		cl.(*net.TCPConn).CloseWrite()
		got, err := c.ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_ = got.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(got)
		if err != nil || string(b) != c.msg {
			t.Errorf("read %q %v, want %q", b, err, c.msg)
		}
		if err := got.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Error(err)
		}
		got.Close()
		cl.Close()
	}
	// Close ends the silent client's wait, the halves and Serve.
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	if _, err := m.Matched().Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
	_ = silent.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Error("silent client still connected after Close")
	}
}

func TestCredentials(t *testing.T) {
	c := Credentials{Username: "u", Password: "p"}
	for _, x := range []struct {
		user, pass string
		want       bool
	}{{"u", "p", true}, {"u", "", false}, {"", "p", false}, {"u", "pp", false}, {"U", "p", false}} {
		if c.Match(x.user, x.pass) != x.want {
			t.Errorf("Match(%q, %q) = %v", x.user, x.pass, !x.want)
		}
	}
}

// echoServer answers each line with the same line, on the loopback.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// testConfig is a server's Config for user:secret whose Dial reaches only
// backend, by its address or by the name "backend", refuses "refused" and
// "slow" like a node that is down or silent, and everything else as
// outside the cluster.
func testConfig(backend netip.AddrPort) Config {
	return Config{
		Username: "user", Password: "secret",
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(address)
			switch {
			case host == "backend" && port == fmt.Sprint(backend.Port()), address == backend.String():
				var d net.Dialer
				return d.DialContext(ctx, network, backend.String())
			case host == "refused":
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			case host == "slow":
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%s: %w", address, ErrNotAllowed)
		},
		HandshakeTimeout: 2 * time.Second,
	}
}

// serve serves s on a loopback listener until the test ends, when it
// closes s and checks that Serve returned nil.
func serve(t *testing.T, s interface {
	Serve(net.Listener) error
	Close() error
}) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
