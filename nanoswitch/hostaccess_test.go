package nanoswitch

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// TestHTTPConnectRefusals needs no VM: the host-access port answers HTTP
// CONNECT on the same port as SOCKS5, with the same credentials, and
// refuses before a node would be dialled (or, for a name no lease has,
// after: 502).
func TestHTTPConnectRefusals(t *testing.T) {
	sw := newTestSwitch(t, Config{Name: "proxy", SOCKS: true, SOCKSPassword: "secret",
		Leases: []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"}}})
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
