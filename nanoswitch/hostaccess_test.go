package nanoswitch

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/qcluster/qcluster/nanoswitch/hostproxy"
)

// node0Switch is a test switch with cfg and one lease: node0 at
// 10.42.0.10.
func node0Switch(t *testing.T, cfg Config) *Switch {
	t.Helper()
	cfg.Leases = []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"}}
	return newTestSwitch(t, cfg)
}

// TestSOCKSRefusals needs no VM: every request here is refused before a
// node would be dialled.
func TestSOCKSRefusals(t *testing.T) {
	sw := node0Switch(t, Config{Name: "socks", SOCKS: true, SOCKSPassword: "secret"})
	info, ok := sw.SOCKS()
	if !ok || !info.Addr.Addr().IsLoopback() || info.Username != "socks" || info.Password != "secret" {
		t.Fatalf("socks info %+v %v", info, ok)
	}
	for _, c := range []struct {
		user, pass, target string
		want               hostproxy.ReplyError
	}{
		{"socks", "guess", "node0:22", hostproxy.ReplyError{Code: 0xff, Auth: true}},
		{"root", "secret", "node0:22", hostproxy.ReplyError{Code: 0xff, Auth: true}},
		{"socks", "secret", "127.0.0.1:22", hostproxy.ReplyError{Code: hostproxy.ReplyNotAllowed}},
		{"socks", "secret", "8.8.8.8:53", hostproxy.ReplyError{Code: hostproxy.ReplyNotAllowed}},
		{"socks", "secret", "10.42.0.1:53", hostproxy.ReplyError{Code: hostproxy.ReplyNotAllowed}},
		{"socks", "secret", "10.42.0.255:1", hostproxy.ReplyError{Code: hostproxy.ReplyNotAllowed}},
		{"socks", "secret", "[::1]:22", hostproxy.ReplyError{Code: hostproxy.ReplyNotAllowed}},
		{"socks", "secret", "example.com:80", hostproxy.ReplyError{Code: hostproxy.ReplyNotAllowed}},
		{"socks", "secret", "node9.socks.qcluster.test:22", hostproxy.ReplyError{Code: hostproxy.ReplyHostUnreachable}},
	} {
		d := &hostproxy.SOCKSDialer{Server: info.Addr.String(), Username: c.user, Password: c.pass}
		_, err := d.DialContext(t.Context(), "tcp", c.target)
		var re *hostproxy.ReplyError
		if !errors.As(err, &re) || *re != c.want {
			t.Errorf("%s:%s to %s: %v, want %v", c.user, c.pass, c.target, err, &c.want)
		}
	}
}

// TestHTTPConnectRefusals needs no VM: the host-access port answers HTTP
// CONNECT on the same port as SOCKS5, with the same credentials, and
// refuses before a node would be dialled (or, for a name no lease has,
// after: 502).
func TestHTTPConnectRefusals(t *testing.T) {
	sw := node0Switch(t, Config{Name: "proxy", SOCKS: true, SOCKSPassword: "secret"})
	info, _ := sw.SOCKS()
	basic := func(user, pass string) string {
		return "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + "\r\n"
	}
	for _, c := range []struct {
		auth, target string
		want         int
	}{
		{"", "node0:7443", http.StatusProxyAuthRequired},
		{basic("proxy", "guess"), "node0:7443", http.StatusProxyAuthRequired},
		{basic("proxy", "secret"), "127.0.0.1:22", http.StatusForbidden},
		{basic("proxy", "secret"), "10.42.0.1:53", http.StatusForbidden},
		{basic("proxy", "secret"), "example.com:443", http.StatusForbidden},
		{basic("proxy", "secret"), "node9.proxy.qcluster.test:22", http.StatusBadGateway},
	} {
		conn, err := net.Dial("tcp", info.Addr.String())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", c.target, c.target, c.auth)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("CONNECT %s: %v", c.target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != c.want {
			t.Errorf("CONNECT %s with %q: %s %q, want %d", c.target, c.auth, resp.Status, body, c.want)
		}
	}
}
