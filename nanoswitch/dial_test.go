package nanoswitch

import (
	"errors"
	"testing"
)

func TestDialContextRefusals(t *testing.T) {
	sw := node0Switch(t, Config{Name: "dial"})
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
