package nanoswitch

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/qcluster/qcluster/nanoswitch/hostproxy"
)

// TestSOCKSRefusals needs no VM: every request here is refused before a
// node would be dialled.
func TestSOCKSRefusals(t *testing.T) {
	sw := newTestSwitch(t, Config{Name: "socks", SOCKS: true, SOCKSPassword: "secret",
		Leases: []Lease{{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"}}})
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
