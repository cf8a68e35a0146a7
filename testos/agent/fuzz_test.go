package main

import (
	"strings"
	"testing"
)

// FuzzParams feeds arbitrary fw_cfg contents to the parameter parser and
// validation: an error is one line, a config is complete.
func FuzzParams(f *testing.F) {
	f.Add([]byte(`{"nodeName":"node1","clusterName":"c","role":"ROLE_MEMBER","leaderAddress":"10.0.0.2:7443","tls":{"caCertPem":"a","certPem":"b","keyPem":"c"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"listenPort":65536,"hostname":"-x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseParams(b)
		if err != nil {
			return
		}
		c, err := newConfig(p, nil)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if c.nodeName == "" || c.hostname == "" || c.listenPort == 0 || !validHostname(c.hostname) {
			t.Fatalf("incomplete config from %q: %+v", b, c)
		}
	})
}
